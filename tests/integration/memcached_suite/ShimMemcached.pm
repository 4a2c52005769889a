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
    }
}

# A handle on the intercept address: the stock Memcached::Handle without a process.
package ShimMemcached::Handle;
our @ISA = ("Memcached::Handle");

sub DESTROY { }
sub stop { }
sub graceful_stop { }
sub is_running { 1 }

1;
