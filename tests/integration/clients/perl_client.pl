#!/usr/bin/perl
# Perl clients under LD_PRELOAD: Cache::Memcached::Fast (XS, its own non-blocking
# client code) and Cache::Memcached (pure Perl, select() on non-blocking sockets).
#
#   perl perl_client.pl HOST:PORT fast|classic
#
# Checks every reply (dies on mismatch) and prints one JSON line
# {"expect": {key: {"len", "sha1"}}, "absent": [keys]}.
use strict;
use warnings;
use Digest::SHA qw(sha1_hex);

my ($addr, $which) = @ARGV;
my (%expect, @absent);

sub check {
    my ($got, $want, $what) = @_;
    my $g = defined $got ? $got : "(undef)";
    my $w = defined $want ? $want : "(undef)";
    die "FAIL $what: got '" . substr($g, 0, 100) . "', want '" . substr($w, 0, 100) . "'\n" if $g ne $w;
}

sub spec {
    my ($v) = @_;
    return sprintf('{"len": %d, "sha1": "%s"}', length($v), sha1_hex($v));
}

sub jstr { my ($s) = @_; $s =~ s/(["\\])/\\$1/g; return "\"$s\""; }

my $c;
my $p = "perl:$which:";
if ($which eq "fast") {
    require Cache::Memcached::Fast;
    $c = Cache::Memcached::Fast->new({servers => [$addr], connect_timeout => 5, io_timeout => 10,
                                      compress_threshold => -1, utf8 => 0});
} else {
    require Cache::Memcached;
    $c = Cache::Memcached->new({servers => [$addr], connect_timeout => 5, select_timeout => 10,
                                compress_threshold => 100_000_000});
}

check($c->set("${p}a", "alpha") ? 1 : 0, 1, "set");
check(scalar($c->get("${p}a")), "alpha", "get");
check(scalar($c->get("${p}missing")), undef, "get miss");
check($c->add("${p}a", "x") ? 1 : 0, 0, "add existing");
check($c->add("${p}b", "bravo") ? 1 : 0, 1, "add new");
check($c->replace("${p}b", "bravo2") ? 1 : 0, 1, "replace");
check($c->set("${p}n", 10) ? 1 : 0, 1, "set number");
check(scalar($c->incr("${p}n", 5)), 15, "incr");
check(scalar($c->decr("${p}n", 3)), 12, "decr");
check($c->incr("${p}nope", 1) ? 1 : 0, 0, "incr missing");
my %data = map { ("${p}m$_" => ("val$_-" x ($_ % 7 + 1))) } 0 .. 149;
for my $k (sort keys %data) {
    check($c->set($k, $data{$k}) ? 1 : 0, 1, "set $k");
}
my $h = $c->get_multi(keys %data, "${p}zz1", "${p}zz2");
check(scalar(keys %$h), 150, "get_multi count");
for my $k (keys %data) { check($h->{$k}, $data{$k}, "get_multi $k"); }
my $big = join("", map { chr($_ % 256) } 0 .. 65535) x 15;  # 983040 bytes, every byte value
check($c->set("${p}big", $big) ? 1 : 0, 1, "set big");
check(scalar($c->get("${p}big")), $big, "get big");
check($c->delete("${p}m0") ? 1 : 0, 1, "delete");
check(scalar($c->get("${p}m0")), undef, "deleted");
if ($which eq "fast") {
    # gets/cas, append/prepend, touch, set_multi, and noreply (Cache::Memcached::Fast only)
    my $g = $c->gets("${p}a");
    check($g->[1], "alpha", "gets");
    check($c->cas("${p}a", $g->[0], "cas1") ? 1 : 0, 1, "cas fresh");
    check($c->cas("${p}a", $g->[0], "cas2") ? 1 : 0, 0, "cas stale");
    check($c->append("${p}b", "+") ? 1 : 0, 1, "append");
    check($c->prepend("${p}b", "-") ? 1 : 0, 1, "prepend");
    check($c->touch("${p}b", 1000) ? 1 : 0, 1, "touch");
    my @r = $c->set_multi(map { ["${p}sm$_", "sm$_"] } 0 .. 49);
    check(scalar(grep { $_ } @r), 50, "set_multi");
    $c->set("${p}nr", "noreply-value");   # void context: sent with noreply
    $c->delete("${p}m1");                 # void context: noreply
    check(scalar($c->get("${p}nr")), "noreply-value", "noreply set then get");
    check(scalar($c->get("${p}m1")), undef, "noreply delete then get");
    my $v = $c->server_versions;
    check(scalar(keys %$v), 1, "server_versions");
    $expect{"${p}a"} = spec("cas1");
    $expect{"${p}b"} = spec("-bravo2+");
    $expect{"${p}sm$_"} = spec("sm$_") for 0 .. 49;
    $expect{"${p}nr"} = spec("noreply-value");
    push @absent, "${p}m1";
} else {
    $expect{"${p}a"} = spec("alpha");
    $expect{"${p}b"} = spec("bravo2");
}
for my $k (keys %data) {
    next if $k eq "${p}m0" || ($which eq "fast" && $k eq "${p}m1");
    $expect{$k} = spec($data{$k});
}
$expect{"${p}n"} = spec("12");
$expect{"${p}big"} = spec($big);
push @absent, "${p}m0", "${p}missing", "${p}nope";
$c->disconnect_all;

print "{\"expect\": {", join(", ", map { jstr($_) . ": " . $expect{$_} } sort keys %expect), "}, ",
      "\"absent\": [", join(", ", map { jstr($_) } @absent), "]}\n";
