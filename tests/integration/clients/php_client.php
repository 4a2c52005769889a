<?php
// PHP clients (php-memcached over libmemcached, php-memcache's own protocol code),
// loaded by php-cli with dlopen, run under LD_PRELOAD.
//
//   php php_client.php HOST PORT SCENARIO
//
// Checks every reply (exit 1 with a message on mismatch) and prints one JSON line
// {"expect": {key: {"len", "sha1", "flags"?}}, "absent": [keys]}.

$host = $argv[1];
$port = (int)$argv[2];
$scenario = $argv[3];
$expect = [];
$absent = [];

$CLIENT = null;  // the Memcached object in use, for its last result message

function check($got, $want, $what) {
    global $CLIENT;
    if ($got !== $want) {
        $why = $CLIENT instanceof Memcached ? " (libmemcached: " . $CLIENT->getResultMessage() . ")" : "";
        fwrite(STDERR, "FAIL $what: got " . var_export($got, true) . ", want " . var_export($want, true) . "$why\n");
        exit(1);
    }
}

function spec($v, $flags = null) {
    $d = ["len" => strlen($v), "sha1" => sha1($v)];
    if ($flags !== null) $d["flags"] = $flags;
    return $d;
}

function memcached_client($host, $port, $opts) {
    $m = new Memcached();
    $m->setOption(Memcached::OPT_BINARY_PROTOCOL, false);
    $m->setOption(Memcached::OPT_COMPRESSION, false);
    $m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 5000);
    $m->setOption(Memcached::OPT_RECV_TIMEOUT, 10000000);
    $m->setOption(Memcached::OPT_SEND_TIMEOUT, 10000000);
    foreach ($opts as $k => $v) $m->setOption($k, $v);
    $m->addServer($host, $port);
    return $m;
}

if ($scenario === "memcached" || $scenario === "memcached_noblock") {
    $opts = $scenario === "memcached_noblock"
        ? [Memcached::OPT_NO_BLOCK => true, Memcached::OPT_TCP_NODELAY => true] : [];
    $m = memcached_client($host, $port, $opts);
    $CLIENT = $m;
    $p = "php:$scenario:";
    check($m->set($p . "s", "hello"), true, "set");
    check($m->get($p . "s"), "hello", "get");
    check($m->get($p . "missing"), false, "get miss");
    check($m->getResultCode(), Memcached::RES_NOTFOUND, "miss result code");
    check($m->add($p . "s", "x"), false, "add existing");
    check($m->replace($p . "s", "hello2"), true, "replace");
    check($m->append($p . "s", "+"), true, "append");
    check($m->prepend($p . "s", "-"), true, "prepend");
    check($m->get($p . "s"), "-hello2+", "append/prepend");
    check($m->set($p . "n", "10"), true, "set numeric");
    check($m->increment($p . "n", 5), 15, "increment");
    check($m->decrement($p . "n", 3), 12, "decrement");
    check($m->increment($p . "nope", 1), false, "increment missing");
    // cas through get with GET_EXTENDED
    $r = $m->get($p . "s", null, Memcached::GET_EXTENDED);
    check($r["value"], "-hello2+", "get extended value");
    check(is_int($r["cas"]) && $r["cas"] > 0, true, "cas token");
    check($m->cas($r["cas"], $p . "s", "cas1"), true, "cas fresh");
    check($m->cas($r["cas"], $p . "s", "cas2"), false, "cas stale");
    check($m->getResultCode(), Memcached::RES_DATA_EXISTS, "cas stale result code");
    // setMulti / getMulti across servers, with misses, and with extended flags
    $data = [];
    for ($i = 0; $i < 150; $i++) $data[$p . "m$i"] = str_repeat("v$i-", $i % 9 + 1);
    check($m->setMulti($data), true, "setMulti");
    $keys = array_keys($data);
    $ask = array_merge($keys, [$p . "miss1", $p . "miss2"]);
    $got = $m->getMulti($ask);
    check(count($got), 150, "getMulti count");
    foreach ($data as $k => $v) check($got[$k], $v, "getMulti $k");
    check(array_keys($got), $keys, "getMulti keeps request order");
    $ext = $m->getMulti(array_slice($keys, 0, 20), Memcached::GET_EXTENDED);
    check(count($ext), 20, "getMulti extended count");
    foreach (array_slice($keys, 0, 20) as $k) {
        check($ext[$k]["value"], $data[$k], "getMulti extended $k");
        check($ext[$k]["cas"] > 0, true, "getMulti extended cas $k");
    }
    // cas on a getMulti token
    $k0 = $keys[0];
    check($m->cas($ext[$k0]["cas"], $k0, "via-multi"), true, "cas from getMulti");
    // PHP values: arrays are serialized (flags carry the type)
    check($m->set($p . "arr", [1, "two", 3.5]), true, "set array");
    check($m->get($p . "arr"), [1, "two", 3.5], "get array");
    // big value
    $big = str_repeat(implode("", array_map("chr", range(0, 255))), 3900);
    check($m->set($p . "big", $big), true, "set ~1MB");
    check($m->get($p . "big"), $big, "get ~1MB");
    check($m->delete($p . "m1"), true, "delete");
    check($m->delete($p . "m1"), false, "delete missing");
    check($m->getResultCode(), Memcached::RES_NOTFOUND, "delete missing result code");
    check($m->deleteMulti([$p . "m2", $p . "m3"]), [$p . "m2" => true, $p . "m3" => true], "deleteMulti");
    check($m->touch($p . "s", 1000), true, "touch");
    $expect[$p . "s"] = spec("cas1");
    $expect[$p . "n"] = spec("12");
    $expect[$p . "big"] = spec($big, 0);
    $expect[$k0] = spec("via-multi");
    foreach ($data as $k => $v) {
        if ($k === $k0) continue;
        if (in_array($k, [$p . "m1", $p . "m2", $p . "m3"], true)) { $absent[] = $k; continue; }
        $expect[$k] = spec($v, 0);
    }
    $absent = array_merge($absent, [$p . "missing", $p . "nope", $p . "miss1"]);
    $m->quit();
} elseif ($scenario === "memcache") {
    $mc = new Memcache();
    check($mc->connect($host, $port, 5), true, "connect");
    $p = "phpmc:";
    check($mc->set($p . "a", "alpha", 0, 0), true, "set");
    check($mc->get($p . "a"), "alpha", "get");
    check($mc->get($p . "missing"), false, "get miss");
    check($mc->add($p . "a", "x", 0, 0), false, "add existing");
    check($mc->replace($p . "a", "alpha2", 0, 0), true, "replace");
    check($mc->set($p . "n", "5", 0, 0), true, "set number");
    check($mc->increment($p . "n", 10), 15, "increment");
    check($mc->decrement($p . "n", 1), 14, "decrement");
    $keys = [];
    for ($i = 0; $i < 100; $i++) {
        $k = $p . "k$i";
        $keys[] = $k;
        check($mc->set($k, "val-$i", 0, 0), true, "set $k");
        $expect[$k] = spec("val-$i");
    }
    $got = $mc->get(array_merge($keys, [$p . "zz"]));
    check(count($got), 100, "multi get count");
    foreach ($keys as $i => $k) check($got[$k], "val-$i", "multi get $k");
    check($mc->delete($p . "k5"), true, "delete");
    check($mc->get($p . "k5"), false, "deleted");
    unset($expect[$p . "k5"]);
    $absent[] = $p . "k5";
    $bin = str_repeat("\r\nEND\r\n\0\xff", 5000);
    check($mc->set($p . "bin", $bin, 0, 0), true, "set binary");
    check($mc->get($p . "bin"), $bin, "get binary");
    check(is_string($mc->getVersion()), true, "version");
    $expect[$p . "a"] = spec("alpha2");
    $expect[$p . "n"] = spec("14");
    $expect[$p . "bin"] = (object)[];  // php-memcache compresses big values: presence only
    $absent[] = $p . "missing";
    $mc->close();
} else {
    fwrite(STDERR, "unknown scenario $scenario\n");
    exit(2);
}

echo json_encode(["expect" => (object)$expect, "absent" => $absent]), "\n";
