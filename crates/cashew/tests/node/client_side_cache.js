// node-redis's client-side cache (RESP3, CLIENT TRACKING) through cashew in front of
// a pool of servers: reads are served from the cache, and a change made by another
// client invalidates exactly what it changed.
"use strict";
const { createClient } = require("redis");
const { check, run, pause } = require("./check");

const [host, port] = [process.argv[2], Number(process.argv[3])];

run(async () => {
  const socket = { host, port, reconnectStrategy: false };
  const cached = createClient({ socket, RESP: 3, clientSideCache: { ttl: 0, maxEntries: 0 } });
  const writer = createClient({ socket });
  for (const c of [cached, writer]) {
    c.on("error", (e) => console.error("error event:", e.message));
    await c.connect();
  }
  const keys = Array.from({ length: 30 }, (_, i) => `csc:${i}`);
  for (const k of keys) await writer.set(k, "old");

  for (let round = 0; round < 3; round++) {
    for (const k of keys) check((await cached.get(k)) === "old", `read ${k}, round ${round}`);
  }
  const cache = cached.clientSideCache;
  const stats = cache.stats();
  check(stats.missCount === 30 && stats.hitCount === 60, `30 misses, then 60 hits: ${stats.missCount}, ${stats.hitCount}`);
  check(cache.size() === 30, `30 keys cached: ${cache.size()}`);

  for (const k of keys.slice(0, 10)) await writer.set(k, "new");
  for (let i = 0; i < 100 && cache.size() > 20; i++) await pause(20);
  check(cache.size() === 20, `the 10 changed keys invalidated, the 20 others kept: ${cache.size()}`);
  for (const [i, k] of keys.entries()) {
    const want = i < 10 ? "new" : "old";
    check((await cached.get(k)) === want, `${k} is ${want}`);
  }

  await cached.quit();
  await writer.quit();
});
