package ShimMemcached;
# Runs memcached's own test files (t/*.t from Debian's source package, driven by
# tests/integration/test_memcached_suite.py) either against one memcached, as upstream
# does, or through mcshim in front of a pool of real servers.
#
# Loaded before the test file, from the unpacked source tree as working directory:
#     perl -I<this dir> -It/lib -MShimMemcached t/getset.t
# It loads t/lib/MemcachedTest.pm first and adjusts it before the test file imports it:
#
# - Both modes: supports_unix_socket() is false, so the stock new_memcached() starts its
#   memcached on a free TCP port of 127.0.0.1 (the shim run is over TCP too) and polls
#   for it every 0.25 s instead of sleeping a second per server.
# - Direct mode: the port was free a moment before memcached binds it, and other servers
#   start on the host at the same time (files run in parallel, shim runs start pools).
#   new_memcached() accepts a server only when its own process holds the listener (from
#   /proc); otherwise the test would talk to another test's server. It starts again on
#   another port, up to 5 times.
# - Shim mode (MCSHIM_TEST_SUITE_INTERCEPT=host:port set; the process runs with
#   LD_PRELOAD=libmcshim.so, MCSHIM_INTERCEPT=that address, MCSHIM_SERVERS=the pool):
#   new_memcached() starts nothing. It returns a handle whose sock/new_sock connect to
#   the intercept address, where nothing listens: the shim takes those connections over.
#   The pool was started by the Python test with the file's arguments
#   (MCSHIM_TEST_SUITE_ARGS); a call with other arguments is noted on stderr and served by
#   the same pool. A second or later call stands for a fresh server: the pool's servers
#   are flushed directly (connections to them are not intercepted), leaving the shim's
#   own state alone. stop() and the handle's destruction stop nothing.
#   mem_stats() also ends at an ERROR line: the shim answers ERROR to the stats
#   sub-commands it does not serve, where the stock loop would wait for END forever.
use strict;
use warnings;
use IO::Socket::INET;
use MemcachedTest ();

my $intercept = $ENV{MCSHIM_TEST_SUITE_INTERCEPT};
my $pool_args = defined $ENV{MCSHIM_TEST_SUITE_ARGS} ? $ENV{MCSHIM_TEST_SUITE_ARGS} : "";
my $calls = 0;

sub _norm {
    my $s = defined $_[0] ? $_[0] : "";
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\s+/ /g;
    return $s;
}

# Sends flush_all to every server of MCSHIM_SERVERS directly.
sub _flush_pool {
    for my $entry (split /,/, $ENV{MCSHIM_SERVERS} || "") {
        my ($host, $port) = $entry =~ /^\[?([^\]]+?)\]?:(\d+)/ or next;
        my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Timeout => 5)
            or die "mcshim-suite: cannot reach pool server $entry: $!\n";
        print $s "flush_all\r\n";
        my $reply = <$s>;
        die "mcshim-suite: flush_all on $entry: " . (defined $reply ? $reply : "EOF") . "\n"
            unless defined $reply && $reply eq "OK\r\n";
        close $s;
    }
}

{
    no warnings 'redefine';

    *MemcachedTest::supports_unix_socket = sub { 0 };

    if ($intercept) {
        my ($host, $port) = $intercept =~ /^(.+):(\d+)$/
            or die "mcshim-suite: MCSHIM_TEST_SUITE_INTERCEPT='$intercept' is not host:port\n";

        *MemcachedTest::new_memcached = sub {
            my ($args, $passed_port) = @_;
            $calls++;
            if (_norm($args) ne _norm($pool_args)) {
                print STDERR "# mcshim-suite: new_memcached('" . (defined $args ? $args : "")
                    . "') served by the pool started with '$pool_args'\n";
            }
            _flush_pool() if $calls > 1;
            my $conn = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port)
                or Carp::croak("mcshim-suite: connect to the intercept address $intercept: $!");
            return ShimMemcached::Handle->new(conn => $conn, host => $host, port => $port);
        };

        my $stock_stats = \&MemcachedTest::mem_stats;
        *MemcachedTest::mem_stats = sub {
            my ($sock, $type) = @_;
            $type = $type ? " $type" : "";
            print $sock "stats$type\r\n";
            my $stats = {};
            while (<$sock>) {
                last if /^(\.|END|ERROR|CLIENT_ERROR|SERVER_ERROR)/;
                $stats->{$2} = $3 if /^(STAT|ITEM) (\S+)\s+([^\r\n]+)/;
            }
            return $stats;
        };
    } else {
        my $stock_new = \&MemcachedTest::new_memcached;
        *MemcachedTest::new_memcached = sub {
            my ($args, $passed_port) = @_;
            return $stock_new->(@_) if $passed_port;
            my $why = "";
            for my $attempt (1 .. 5) {
                my $h = eval { $stock_new->(@_) };
                if (!$h) {
                    $why = $@;
                } elsif (_owns_listener($h->{pid}, $h->port)) {
                    return $h;
                } else {
                    $why = "port " . $h->port . " is another process's listener";
                    $h->stop;
                }
                print STDERR "# mcshim-suite: new_memcached: $why; starting again\n";
            }
            Carp::croak("mcshim-suite: new_memcached: $why");
        };
    }
}

# True when process $pid holds a socket listening on TCP $port (from /proc).
sub _owns_listener {
    my ($pid, $port) = @_;
    my %inodes;
    for my $table ("/proc/net/tcp", "/proc/net/tcp6") {
        open(my $f, "<", $table) or next;
        <$f>;
        while (my $line = <$f>) {
            my @x = split " ", $line;
            # local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 the inode
            my ($lport) = $x[1] =~ /:([0-9A-Fa-f]+)$/;
            $inodes{$x[9]} = 1 if $x[3] eq "0A" && defined $lport && hex($lport) == $port;
        }
        close $f;
    }
    return 0 unless %inodes;
    opendir(my $d, "/proc/$pid/fd") or return 0;
    for my $fd (readdir $d) {
        my $link = readlink("/proc/$pid/fd/$fd");
        return 1 if defined $link && $link =~ /^socket:\[(\d+)\]$/ && $inodes{$1};
    }
    return 0;
}

# A handle on the intercept address: the stock Memcached::Handle without a process.
package ShimMemcached::Handle;
our @ISA = ("Memcached::Handle");

sub DESTROY { }
sub stop { }
sub graceful_stop { }
sub is_running { 1 }

1;
