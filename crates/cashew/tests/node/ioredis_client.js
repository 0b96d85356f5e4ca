// ioredis through cashew in front of a pool of servers: its ready check (INFO),
// pipelines, a transaction, scripts by SHA, SCAN over every server, pub/sub, a
// blocking pop, errors that leave the connection in step.
"use strict";
const Redis = require("ioredis");
const { check, run, pause } = require("./check");

const [host, port] = [process.argv[2], Number(process.argv[3])];

run(async () => {
  const r = new Redis({ host, port, lazyConnect: true, maxRetriesPerRequest: 1 });
  r.on("error", (e) => console.error("error event:", e.message));
  await r.connect();
  check(r.status === "ready", "ready after its ready check (INFO)");
  check((await r.set("io:a", "1")) === "OK", "set");
  check((await r.get("io:a")) === "1", "get");

  const keys = Array.from({ length: 50 }, (_, i) => `io:k${i}`);
  await r.mset(...keys.flatMap((k, i) => [k, String(i)]));
  const values = await r.mget(...keys);
  check(values.every((v, i) => v === String(i)), "mset and mget over the servers");

  const pipeline = r.pipeline();
  for (let i = 0; i < 200; i++) pipeline.incr("io:counter");
  const counts = await pipeline.exec();
  check(counts.every(([e, n], i) => e === null && n === i + 1), "a pipeline of 200 INCR, in order");

  const tx = await r.multi().set("{io}x", "1").incr("{io}x").get("{io}x").exec();
  check(JSON.stringify(tx) === JSON.stringify([[null, "OK"], [null, 2], [null, "2"]]), "MULTI/EXEC: " + JSON.stringify(tx));

  await r.hset("io:h", { a: "1", b: "2" });
  const h = await r.hgetall("io:h");
  check(h.a === "1" && h.b === "2", "hset and hgetall");

  const seen = new Set();
  await new Promise((done, fail) => {
    const stream = r.scanStream({ match: "io:k*", count: 10 });
    stream.on("data", (batch) => batch.forEach((k) => seen.add(k)));
    stream.on("end", done);
    stream.on("error", fail);
  });
  check(seen.size === keys.length, `scanStream finds every key on every server (${seen.size})`);

  // EVALSHA first (NOSCRIPT on a server that lacks it), then EVAL.
  r.defineCommand("swap", {
    numberOfKeys: 1,
    lua: "local v = redis.call('get', KEYS[1]); redis.call('set', KEYS[1], ARGV[1]); return v",
  });
  check((await r.swap("io:a", "2")) === "1", "a defined command");
  check((await r.get("io:a")) === "2", "which wrote");

  const sub = r.duplicate();
  await sub.subscribe("io:channel");
  const message = new Promise((got) => sub.on("message", (channel, text) => got([channel, text])));
  check((await r.publish("io:channel", "hello")) === 1, "publish reaches one subscriber");
  const [channel, text] = await message;
  check(channel === "io:channel" && text === "hello", "the subscriber gets the message");
  await sub.unsubscribe("io:channel");
  check((await sub.ping()) === "PONG", "PING after unsubscribing");
  sub.disconnect();

  const blocked = r.duplicate();
  const popped = blocked.blpop("io:list", 5);
  await pause(100);
  await r.rpush("io:list", "job");
  check(JSON.stringify(await popped) === JSON.stringify(["io:list", "job"]), "BLPOP woken by RPUSH");
  blocked.disconnect();

  await r.call("FOO").then(
    () => check(false, "an unknown command fails"),
    (e) => check(/unknown command/.test(e.message), "an unknown command fails: " + e.message),
  );
  await r.incr("io:h").then(
    () => check(false, "INCR of a hash fails"),
    (e) => check(/WRONGTYPE/.test(e.message), "INCR of a hash fails with WRONGTYPE"),
  );
  check((await r.get("io:counter")) === "200", "the connection is in step after errors");
  check(/redis_version:/.test(await r.info("server")), "INFO server");

  await r.del(...keys, "io:a", "io:counter", "{io}x", "io:h", "io:list");
  await r.quit();
});
