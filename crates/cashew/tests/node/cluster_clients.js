// The cluster clients of ioredis and node-redis through a cashew Redis Cluster pool:
// they read the slot map cashew shows (one node, cashew itself) and send every key
// there.
"use strict";
const Redis = require("ioredis");
const { createCluster } = require("redis");
const { check, run } = require("./check");

const [host, port] = [process.argv[2], Number(process.argv[3])];

run(async () => {
  const io = new Redis.Cluster([{ host, port }], { redisOptions: { maxRetriesPerRequest: 1 } });
  io.on("error", (e) => console.error("error event:", e.message));
  const keys = Array.from({ length: 100 }, (_, i) => `cl:k${i}`);
  for (const [i, k] of keys.entries()) await io.set(k, String(i));
  const values = await Promise.all(keys.map((k) => io.get(k)));
  check(values.every((v, i) => v === String(i)), "ioredis Cluster: 100 keys over every slot range");
  const masters = io.nodes("master").map((n) => n.options.port);
  check(masters.length === 1 && masters[0] === port, `ioredis Cluster sees one node, cashew (${masters})`);
  const tx = await io.multi().set("{cl}x", "1").incr("{cl}x").exec();
  check(tx[1][1] === 2, "ioredis Cluster: MULTI/EXEC");
  check((await io.del(...keys.slice(0, 50))) === 50, "ioredis Cluster: DEL of keys in many slots");
  io.disconnect();

  const nr = createCluster({ rootNodes: [{ socket: { host, port } }] });
  nr.on("error", (e) => console.error("error event:", e.message));
  await nr.connect();
  const rest = await Promise.all(keys.slice(50).map((k) => nr.get(k)));
  check(rest.every((v, i) => v === String(i + 50)), "node-redis cluster: keys over every slot range");
  await Promise.all(keys.slice(50).map((k) => nr.del(k)));
  check((await nr.get("cl:k60")) === null, "node-redis cluster: DEL");
  await nr.quit();
});
