// The clients of bench/gateway_auth.sh: sequential requests (one client, so
// that the time per request is the latency) and 8 concurrent clients
// (throughput), alternating between the two gateways; then the database
// side alone. Prints medians over the rounds.
import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";

const require = createRequire(new URL("../../gateway/package.json", import.meta.url));
const pg = require("pg");

const { TOKEN, OLD, NEW, DATABASE_URL } = process.env;
const N = Number(process.env.N);
const ROUNDS = Number(process.env.ROUNDS);
const headers = { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" };

const ROUTES = {
  "REST GET /api/v2/sync/state": (base) => fetch(`${base}/api/v2/sync/state?device_id=bench-phone`, { headers }),
  "POST /graphql { __typename }": (base) => fetch(`${base}/graphql`, { method: "POST", headers, body: '{"query": "{ __typename }"}' }),
};

async function run(send, base, n, clients) {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: clients }, async () => {
    while (next < n) {
      next += 1;
      const res = await send(base);
      if (res.status !== 200) throw new Error(`${base}: HTTP ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    }
  }));
  return (performance.now() - t0) / n;   // ms per request
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

for (const [name, send] of Object.entries(ROUTES)) {
  for (const clients of [1, 8]) {
    const times = { old: [], new: [] };
    await run(send, OLD, 200, clients);   // warm up
    await run(send, NEW, 200, clients);
    for (let r = 0; r < ROUNDS; r++) {
      times.old.push(await run(send, OLD, N, clients));
      times.new.push(await run(send, NEW, N, clients));
    }
    const o = median(times.old);
    const n = median(times.new);
    console.log(`${name}, ${clients} client(s), ${N} requests x ${ROUNDS} rounds: ` +
      `JS verifier ${(o * 1000).toFixed(0)} us per request (${(1000 / o).toFixed(0)} req/s), ` +
      `verify_token ${(n * 1000).toFixed(0)} us per request (${(1000 / n).toFixed(0)} req/s), ` +
      `difference ${((n - o) * 1000).toFixed(0)} us (${(n / o).toFixed(2)}x)`);
  }
}

// The database side: one round trip each, sequential, one connection.
const db = new pg.Client({ connectionString: DATABASE_URL });
await db.connect();
const verify = `SET LOCAL ROLE bridgecore_anon; SELECT bridgecore.verify_token(${db.escapeLiteral(TOKEN)})`;
const sql = { "SELECT 1": "SELECT 1", "SET LOCAL ROLE bridgecore_anon; SELECT bridgecore.verify_token(token)": verify };
const perCall = {};
for (const [k, q] of Object.entries(sql)) perCall[k] = [];
for (let r = 0; r < ROUNDS; r++) {
  for (const [k, q] of Object.entries(sql)) {
    const t0 = performance.now();
    for (let i = 0; i < N; i++) await db.query(q);
    perCall[k].push((performance.now() - t0) / N);
  }
}
for (const [k, xs] of Object.entries(perCall)) console.log(`round trip, ${k}: ${(median(xs) * 1000).toFixed(0)} us`);
const { rows } = await db.query(
  "SELECT funcname, calls, self_time / calls AS self_ms, total_time / calls AS total_ms FROM pg_stat_user_functions" +
  " WHERE schemaname = 'bridgecore' AND funcname IN ('verify_token', '_jwt_verify') ORDER BY funcname DESC");
for (const r of rows) {
  console.log(`server time per call of ${r.funcname} (pg_stat_user_functions, ${r.calls} calls): ` +
    `${(r.total_ms * 1000).toFixed(1)} us in all, ${(r.self_ms * 1000).toFixed(1)} us in its own body`);
}
await db.end();
