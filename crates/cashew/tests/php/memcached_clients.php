<?php
// php-memcached (libmemcached) and pecl memcache through cashew: each operation a
// PHP application does, with the clients' defaults unless named. Prints one line per
// check and "memcached clients: ok" when all hold; exits 1 at the first that fails.
// Usage: php memcached_clients.php HOST PORT
[$_, $host, $port] = $argv;
$port = (int)$port;

function check(string $what, bool $ok, $detail = null): void {
    if (!$ok) {
        fwrite(STDERR, "FAILED: $what: " . var_export($detail, true) . "\n");
        exit(1);
    }
    echo "$what: ok\n";
}

// --- php-memcached, defaults: text protocol, compression over 2000 bytes, PHP serializer.
$m = new Memcached();
$m->addServer($host, $port);
check('text protocol by default', !$m->getOption(Memcached::OPT_BINARY_PROTOCOL));

check('set', $m->set('php:str', 'hello'), $m->getResultMessage());
check('get', $m->get('php:str') === 'hello');
check('get miss', $m->get('php:none') === false && $m->getResultCode() === Memcached::RES_NOTFOUND);

$big = str_repeat('compressible ', 20000);
check('set compressed', $m->set('php:big', $big), $m->getResultMessage());
check('get compressed', $m->get('php:big') === $big);
$raw = new Memcached();
$raw->addServer($host, $port);
$raw->setOption(Memcached::OPT_COMPRESSION, false);
$raw->setOption(Memcached::OPT_SERIALIZER, Memcached::SERIALIZER_PHP);

$array = ['a' => 1, 'b' => [1, 2, 3], 'c' => 'text', 'd' => 1.5, 'e' => null];
check('set array', $m->set('php:arr', $array));
check('get array', $m->get('php:arr') === $array);
$obj = new ArrayObject([1, 2]);
check('set object', $m->set('php:obj', $obj));
check('get object', $m->get('php:obj') == $obj);

$items = [];
for ($i = 0; $i < 200; $i++) {
    $items["php:multi:$i"] = "value-$i";
}
check('setMulti 200', $m->setMulti($items), $m->getResultMessage());
$got = $m->getMulti(array_keys($items));
check('getMulti 200', $got === $items, is_array($got) ? count($got) : $got);
$some = $m->getMulti(['php:multi:1', 'php:none', 'php:multi:2']);
check('getMulti with a miss', $some === ['php:multi:1' => 'value-1', 'php:multi:2' => 'value-2'], $some);
check('deleteMulti', count(array_filter($m->deleteMulti(['php:multi:1', 'php:multi:2']), fn($r) => $r === true)) === 2);

$entry = $m->get('php:str', null, Memcached::GET_EXTENDED);
check('get extended has cas', is_array($entry) && $entry['cas'] > 0, $entry);
check('cas with the current token', $m->cas($entry['cas'], 'php:str', 'changed'), $m->getResultMessage());
check('cas with an old token', !$m->cas($entry['cas'], 'php:str', 'again') && $m->getResultCode() === Memcached::RES_DATA_EXISTS, $m->getResultCode());
check('value after cas', $m->get('php:str') === 'changed');

check('add existing fails', !$m->add('php:str', 'x') && $m->getResultCode() === Memcached::RES_NOTSTORED);
check('replace', $m->replace('php:str', 'replaced'));
// php-memcached appends only with compression off.
check('append', $raw->append('php:str', '+end') && $m->get('php:str') === 'replaced+end');

$m->set('php:ctr', 10);
check('increment', $m->increment('php:ctr', 5) === 15);
check('decrement', $m->decrement('php:ctr', 3) === 12);
$m->delete('php:ctr2');
check('increment missing', $m->increment('php:ctr2') === false && $m->getResultCode() === Memcached::RES_NOTFOUND);
// Text protocol: php-memcached itself refuses an initial value (as against memcached).
$with_initial = @$m->increment('php:ctr3', 1, 7);
check('increment with an initial value refused by the client', $with_initial === false, $with_initial);

check('touch', $m->touch('php:str', 100));
check('delete', $m->delete('php:str') && $m->get('php:str') === false);

$stats = $m->getStats();
$server = "$host:$port";
check('getStats', isset($stats[$server]['pid'], $stats[$server]['cmd_get']), $stats);
$version = $m->getVersion();
check('getVersion', isset($version[$server]) && preg_match('/^\d+\.\d+/', $version[$server]) === 1, $version);

$k250 = str_repeat('k', 250);
check('key of 250 bytes', $m->set($k250, 'v') && $m->get($k250) === 'v', $m->getResultMessage());
$k251 = str_repeat('k', 251);
check('key of 251 bytes refused', !$m->set($k251, 'v'), $m->getResultMessage());
check('usable after a refused key', $m->set('php:after', 'ok') && $m->get('php:after') === 'ok');

// Buffered writes without waiting for replies.
$nb = new Memcached();
$nb->addServer($host, $port);
$nb->setOption(Memcached::OPT_NO_BLOCK, true);
$nb->setOption(Memcached::OPT_BUFFER_WRITES, true);
for ($i = 0; $i < 100; $i++) {
    $nb->set("php:nb:$i", "nb-$i");
}
$nb->flushBuffers();
$keys = array_map(fn($i) => "php:nb:$i", range(0, 99));
$deadline = microtime(true) + 5;
do {
    $got = $m->getMulti($keys);
} while (count($got) < 100 && microtime(true) < $deadline && usleep(20000) === null);
check('OPT_NO_BLOCK + buffered writes', count($got) === 100, count($got));

$nr = new Memcached();
$nr->addServer($host, $port);
$nr->setOption(Memcached::OPT_NOREPLY, true);
check('OPT_NOREPLY set', $nr->set('php:noreply', 'quiet'));
$deadline = microtime(true) + 5;
while ($m->get('php:noreply') !== 'quiet' && microtime(true) < $deadline) {
    usleep(20000);
}
check('OPT_NOREPLY stored', $m->get('php:noreply') === 'quiet');
check('usable after noreply', $nr->get('php:noreply') === 'quiet', $nr->getResultMessage());

// The binary protocol is not spoken: a clear error, never a hang.
$bin = new Memcached();
$bin->addServer($host, $port);
$bin->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
$start = microtime(true);
$ok = $bin->set('php:bin', 'x');
check('binary protocol refused', !$ok && microtime(true) - $start < 5, $bin->getResultMessage());
echo 'binary protocol: ' . $bin->getResultMessage() . "\n";

// --- pecl memcache.
$c = new Memcache();
check('memcache connect', $c->connect($host, $port));
check('memcache set', $c->set('pecl:str', 'hello'));
check('memcache get', $c->get('pecl:str') === 'hello');
check('memcache get miss', $c->get('pecl:none') === false);
check('memcache array', $c->set('pecl:arr', $array) && $c->get('pecl:arr') === $array);
check('memcache compressed', $c->set('pecl:big', $big, MEMCACHE_COMPRESSED) && $c->get('pecl:big') === $big);
$c->set('pecl:a', 'A');
$c->set('pecl:b', 'B');
$multi = $c->get(['pecl:a', 'pecl:b', 'pecl:none']);
ksort($multi);
check('memcache multi-get', $multi === ['pecl:a' => 'A', 'pecl:b' => 'B'], $multi);
check('memcache add existing', $c->add('pecl:a', 'x') === false);
check('memcache replace', $c->replace('pecl:a', 'AA') && $c->get('pecl:a') === 'AA');
$c->set('pecl:ctr', 1);
check('memcache increment', $c->increment('pecl:ctr', 4) === 5);
check('memcache decrement', $c->decrement('pecl:ctr', 2) === 3);
check('memcache delete', $c->delete('pecl:a') && $c->get('pecl:a') === false);
check('memcache getVersion', preg_match('/^\d+\.\d+/', (string)$c->getVersion()) === 1, $c->getVersion());
$s = $c->getStats();
check('memcache getStats', is_array($s) && isset($s['pid']), $s);
check('memcache flush', $c->flush() && $c->get('pecl:b') === false);
$c->close();

echo "memcached clients: ok\n";
