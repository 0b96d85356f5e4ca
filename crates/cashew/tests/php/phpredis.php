<?php
// phpredis through cashew: the data types, expiry, pipelines, EVAL and scripts, and the
// commands over the whole keyspace (SCAN iteration, DBSIZE, FLUSHDB) on a pool of
// several servers. Prints one line per check and "phpredis: ok" when all hold.
// Usage: php phpredis.php HOST PORT [REFUSING_PORT]
$host = $argv[1];
$port = (int)$argv[2];
$refusing = isset($argv[3]) ? (int)$argv[3] : null;

function check(string $what, bool $ok, $detail = null): void {
    if (!$ok) {
        fwrite(STDERR, "FAILED: $what: " . var_export($detail, true) . "\n");
        exit(1);
    }
    echo "$what: ok\n";
}

$r = new Redis();
check('connect', $r->connect($host, $port, 5.0));
check('ping', $r->ping() === true || $r->ping() === '+PONG');

check('flushdb at start', $r->flushDB() === true);
check('set/get', $r->set('s:1', 'one') && $r->get('s:1') === 'one');
check('get miss', $r->get('s:none') === false);
check('setex + ttl', $r->setex('s:ex', 100, 'x') && $r->ttl('s:ex') > 90);
check('expire + persist', $r->expire('s:1', 50) && $r->persist('s:1') && $r->ttl('s:1') === -1);
check('incr/incrBy', $r->incr('s:ctr') === 1 && $r->incrBy('s:ctr', 9) === 10);
check('mset/mget', $r->mset(['s:a' => 'A', 's:b' => 'B', 's:c' => 'C']) && $r->mget(['s:a', 's:none', 's:c']) === ['A', false, 'C']);
check('del of several', $r->del('s:a', 's:b', 's:none') === 2);
check('exists', $r->exists('s:c') === 1);

check('hash', $r->hMSet('h:1', ['f1' => 'v1', 'f2' => 'v2']) && $r->hGet('h:1', 'f1') === 'v1');
$all = $r->hGetAll('h:1');
ksort($all);
check('hGetAll', $all === ['f1' => 'v1', 'f2' => 'v2'], $all);
check('hIncrBy', $r->hIncrBy('h:1', 'n', 3) === 3);

check('list', $r->rPush('l:1', 'a', 'b', 'c') === 3 && $r->lRange('l:1', 0, -1) === ['a', 'b', 'c']);
check('lPop', $r->lPop('l:1') === 'a' && $r->lLen('l:1') === 2);

check('set type', $r->sAdd('set:1', 'x', 'y', 'z') === 3 && $r->sIsMember('set:1', 'y'));
$members = $r->sMembers('set:1');
sort($members);
check('sMembers', $members === ['x', 'y', 'z'], $members);

check('sorted set', $r->zAdd('z:1', 1, 'one', 2, 'two', 3, 'three') === 3);
check('zRange', $r->zRange('z:1', 0, -1) === ['one', 'two', 'three']);
check('zScore', $r->zScore('z:1', 'two') == 2.0);

$p = $r->multi(Redis::PIPELINE);
$p->set('p:1', 'a');
$p->incr('p:n');
$p->get('p:1');
$p->get('p:none');
$out = $p->exec();
check('pipeline', $out === [true, 1, 'a', false], $out);

check('eval with a key', $r->eval("return redis.call('SET', KEYS[1], ARGV[1])", ['e:1', 'ev'], 1) === true && $r->get('e:1') === 'ev');
check('eval reply', $r->eval("return {KEYS[1], ARGV[1]}", ['e:k', 'e:v'], 1) === ['e:k', 'e:v']);
// A script loaded once (on every server) runs by its SHA1 wherever its key is.
$sha = $r->script('load', "return redis.call('INCRBY', KEYS[1], ARGV[1])");
check('script load', is_string($sha) && strlen($sha) === 40, $sha);
$ran = true;
for ($i = 0; $i < 20; $i++) {
    $ran = $ran && $r->evalSha($sha, ["sha:$i", 5], 1) === 5;
}
check('evalsha on every server', $ran, $r->getLastError());
check('script exists', $r->script('exists', $sha) === [1], $r->script('exists', $sha));
check('script flush', $r->script('flush') === true);
check('evalsha after flush', $r->evalSha($sha, ['sha:0', 5], 1) === false && str_contains((string)$r->getLastError(), 'NOSCRIPT'), $r->getLastError());
$r->clearLastError();

// The whole keyspace over several servers.
$r->flushDB();
$written = [];
for ($i = 0; $i < 3000; $i++) {
    $written["scan:$i"] = true;
}
foreach (array_chunk(array_keys($written), 500) as $chunk) {
    $r->mset(array_combine($chunk, $chunk));
}
check('dbsize', $r->dbSize() === 3000, $r->dbSize());
$r->setOption(Redis::OPT_SCAN, Redis::SCAN_RETRY);
$seen = [];
$it = null;
$calls = 0;
while (($keys = $r->scan($it, 'scan:*', 200)) !== false) {
    foreach ($keys as $k) {
        $seen[$k] = true;
    }
    if (++$calls > 10000) {
        break;
    }
}
check('scan collects every key', count($seen) === 3000 && array_diff_key($written, $seen) === [], count($seen));
$listed = $r->keys('scan:29*');
check('keys', count($listed) === 111, count($listed));
check('randomKey', isset($written[$r->randomKey()]));
check('flushdb', $r->flushDB() === true && $r->dbSize() === 0);
check('usable after', $r->set('after', '1') && $r->get('after') === '1');

if ($refusing !== null) {
    // A pool with keyspace_commands: false refuses them with an error reply, and
    // phpredis stays in step after each, but for SCAN: phpredis cannot read an
    // error reply to SCAN (from Redis itself neither) and its next command fails
    // once, after which it has reconnected.
    $q = new Redis();
    $q->connect($host, $refusing, 5.0);
    $q->set('q:1', 'v');
    foreach (['keys', 'dbSize', 'randomKey', 'flushDB', 'flushAll'] as $command) {
        $res = $command === 'keys' ? $q->keys('*') : $q->$command();
        check("refused $command", $res === false && str_contains((string)$q->getLastError(), 'not supported by the proxy'), $q->getLastError());
        $q->clearLastError();
        check("in step after a refused $command", $q->get('q:1') === 'v');
    }
    $it = null;
    check('refused scan', $q->scan($it) === false);
    $failures = 0;
    for ($i = 0; $i < 3; $i++) {
        try {
            $next = $q->get('q:1');
        } catch (RedisException $e) {
            $failures++;
            continue;
        }
        check('phpredis recovers after a refused scan', $next === 'v' && $failures <= 1, [$next, $failures]);
        break;
    }
}

echo "phpredis: ok\n";
