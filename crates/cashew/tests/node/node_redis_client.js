// node-redis (the `redis` package) through cashew in front of a pool of servers,
// in RESP2 or RESP3 (argument 3): auto-pipelined commands, a transaction, SCAN over
// every server, pub/sub on a duplicate connection, a blocking pop, a script, errors.
"use strict";
const { createClient } = require("redis");
const { check, run, pause } = require("./check");

const [host, port, protocol] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];

run(async () => {
  const c = createClient({ socket: { host, port, reconnectStrategy: false }, RESP: protocol });
  c.on("error", (e) => console.error("error event:", e.message));
  await c.connect();
  check((await c.set("nr:a", "1")) === "OK", "set");
  check((await c.get("nr:a")) === "1", "get");

  const keys = Array.from({ length: 50 }, (_, i) => `nr:k${i}`);
  await c.mSet(keys.map((k, i) => [k, String(i)]));
  const values = await c.mGet(keys);
  check(values.every((v, i) => v === String(i)), "mSet and mGet over the servers");

  const counts = await Promise.all(Array.from({ length: 200 }, () => c.incr("nr:counter")));
  check(counts.every((n, i) => n === i + 1), "200 INCR sent at once, answered in order");

  const tx = await c.multi().set("{nr}x", "1").incr("{nr}x").get("{nr}x").exec();
  check(JSON.stringify(tx) === JSON.stringify(["OK", 2, "2"]), "MULTI/EXEC: " + JSON.stringify(tx));

  await c.hSet("nr:h", { a: "1", b: "2" });
  const h = await c.hGetAll("nr:h");
  check(h.a === "1" && h.b === "2", "hSet and hGetAll: " + JSON.stringify(h));

  const seen = new Set();
  for await (const batch of c.scanIterator({ MATCH: "nr:k*", COUNT: 10 })) {
    for (const k of Array.isArray(batch) ? batch : [batch]) seen.add(k);
  }
  check(seen.size === keys.length, `scanIterator finds every key on every server (${seen.size})`);

  const sub = c.duplicate();
  await sub.connect();
  const message = new Promise((got) => sub.subscribe("nr:channel", (text, channel) => got([channel, text])));
  await pause(100);
  check((await c.publish("nr:channel", "hello")) === 1, "publish reaches one subscriber");
  const [channel, text] = await message;
  check(channel === "nr:channel" && text === "hello", "the subscriber gets the message");
  await sub.unsubscribe("nr:channel");
  check((await sub.ping()) === "PONG", "PING after unsubscribing");
  await sub.quit();

  const blocked = c.duplicate();
  await blocked.connect();
  const popped = blocked.blPop("nr:list", 5);
  await pause(100);
  await c.rPush("nr:list", "job");
  const got = await popped;
  check(got !== null && got.key === "nr:list" && got.element === "job", "BLPOP woken by RPUSH: " + JSON.stringify(got));
  await blocked.quit();

  check((await c.eval("return redis.call('get', KEYS[1])", { keys: ["nr:a"] })) === "1", "EVAL with a key");
  await c.sendCommand(["FOO"]).then(
    () => check(false, "an unknown command fails"),
    (e) => check(/unknown command/.test(e.message), "an unknown command fails"),
  );
  await c.incr("nr:h").then(
    () => check(false, "INCR of a hash fails"),
    (e) => check(/WRONGTYPE/.test(e.message), "INCR of a hash fails with WRONGTYPE"),
  );
  check((await c.get("nr:counter")) === "200", "the connection is in step after errors");
  check(/redis_version:/.test(await c.info("server")), "INFO server");

  await c.del([...keys, "nr:a", "nr:counter", "{nr}x", "nr:h", "nr:list"]);
  await c.quit();
});
