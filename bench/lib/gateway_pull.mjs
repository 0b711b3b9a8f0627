// Load generator of bench/gateway_pull.sh: one side of one round.
//
//   node gateway_pull.mjs <side> <clients> <pulls per client> <devices> <seed>
//
// side "rest": POST /api/v2/sync/pull through the gateway (GATEWAY_URL,
// Bearer TOKEN), one keep-alive connection per client; side "sql": the same
// pulls as direct SQL calls (DATABASE_URL), one connection per client
// acting as bridgecore_app, a prepared SELECT bridgecore.sync_pull(...).
// Each client pulls its own fixed sequence of devices (a PRNG seeded with
// seed and the client's number), so both sides make the same calls. Prints
// one JSON line: {"side", "seconds", "pulls", "events", "pps", "client_cpu_ms"
// (this process's CPU time during the pulls)}; exits
// non-zero when a pull fails.
import http from "node:http";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(fileURLToPath(new URL("../../gateway/package.json", import.meta.url)));
const pg = require("pg");

const [side, clientsArg, pullsArg, devicesArg, seedArg] = process.argv.slice(2);
const CLIENTS = Number(clientsArg);
const PULLS = Number(pullsArg);
const DEVICES = Number(devicesArg);
const SEED = Number(seedArg);
const LIMIT = 100;

// xorshift32: the same device sequence on both sides.
function prng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    return x;
  };
}

function restClient(agent) {
  const url = new URL("/api/v2/sync/pull", process.env.GATEWAY_URL);
  const auth = `Bearer ${process.env.TOKEN}`;
  return (device) => new Promise((resolve, reject) => {
    const body = JSON.stringify({ device_id: device, app_type: "sales_app", limit: LIMIT });
    const req = http.request(url, { method: "POST", agent, headers: { Authorization: auth,
      "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}: ${text.slice(0, 300)}`));
        resolve(JSON.parse(text).events.length);
      });
    });
    req.on("error", reject);
    req.end(body);
  });
}

async function sqlClient() {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  await client.query("SET ROLE bridgecore_app");
  const call = async (device) => {
    const r = await client.query({ name: "pull", text: "SELECT bridgecore.sync_pull($1::bigint, $2::text, $3::text, $4::integer)::text AS r",
      values: [1, device, "sales_app", LIMIT] });
    return JSON.parse(r.rows[0].r).events.length;
  };
  call.end = () => client.end();
  return call;
}

async function main() {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
  const calls = [];
  for (let c = 0; c < CLIENTS; c++) calls.push(side === "rest" ? restClient(agent) : await sqlClient());
  let events = 0;
  const cpu0 = process.cpuUsage();
  const started = process.hrtime.bigint();
  await Promise.all(calls.map(async (call, c) => {
    const next = prng(SEED * 1000 + c + 1);
    for (let i = 0; i < PULLS; i++) {
      const n = await call(`dev-${(next() % DEVICES) + 1}`);    // not events += await: that reads events first
      events += n;
    }
  }));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  for (const call of calls) await call.end?.();
  agent.destroy();
  const pulls = CLIENTS * PULLS;
  console.log(JSON.stringify({ side, seconds, pulls, events, pps: pulls / seconds, client_cpu_ms: (cpu.user + cpu.system) / 1000 }));
}

main().catch((e) => {
  console.error(`gateway_pull ${side}: ${e.stack ?? e}`);
  process.exit(1);
});
