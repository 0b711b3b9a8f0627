// The clients of bench/herd.sh: S graphql-ws subscribers, each a device
// that pulls by REST on every message; R changes rung in by the stand-in.
import http from "node:http";
import { readFileSync, readdirSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { SYNC_AVAILABLE, fmt, require, subscriber } from "./latency.mjs";

const pg = require("pg");

const { TOKEN, GATEWAY_URL, STANDIN_URL } = process.env;
const S = Number(process.env.S);
const R = Number(process.env.R);
const POSTMASTER_PID = Number(process.env.POSTMASTER_PID);
const DEADLINE_MS = 30_000;
const TICK = 100; // USER_HZ

// CPU seconds (user + system) of the postmaster's children and itself.
function serverCpu() {
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ppid = Number(f[1]);
    if (Number(pid) === POSTMASTER_PID || ppid === POSTMASTER_PID) ticks += Number(f[11]) + Number(f[12]);
  }
  return ticks / TICK;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
const pullUrl = new URL("/api/v2/sync/pull", GATEWAY_URL);
const pull = (device) => new Promise((resolve, reject) => {
  const body = JSON.stringify({ device_id: device, app_type: "sales_app", limit: 100 });
  const req = http.request(pullUrl, { method: "POST", agent, headers: { Authorization: `Bearer ${TOKEN}`,
    "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) } }, (res) => {
    const chunks = [];
    res.on("data", (c) => chunks.push(c));
    res.on("end", () => {
      const text = Buffer.concat(chunks).toString();
      if (res.statusCode !== 200) return reject(new Error(`pull: HTTP ${res.statusCode} ${text.slice(0, 300)}`));
      resolve(JSON.parse(text));
    });
  });
  req.on("error", reject);
  req.end(body);
});
async function post(url, body) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status}`);
  return res.json();
}

let pulled = 0;                // devices whose pull answered the current change
let wake = null;
let failure = null;
const fail = (e) => { failure = failure ?? e; if (wake) wake(null); };
const clients = [];
let listening = 0;
for (let i = 0; i < S; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(S, i + 50); j++) {
    const device = `herd-${j}`;
    const client = subscriber(GATEWAY_URL, TOKEN);
    clients.push(client);
    batch.push(new Promise((resolve, reject) => {
      client.subscribe({ query: SYNC_AVAILABLE }, {
        next: (m) => {
          const r = m.data?.syncAvailable?.reason;
          if (r === "LISTENING") {
            listening += 1;
            resolve();
          } else if (r === "NOTIFIED") {
            pull(device).then((page) => {
              if (page.events.length !== 1) return fail(new Error(`${device}: ${page.events.length} events for one change`));
              if (++pulled === S && wake) wake(performance.now());
            }, fail);
          }
        },
        error: (e) => reject(new Error(`subscriber ${j}: ${e.message ?? e.code ?? e}`)),
        complete: () => {},
      });
    }));
  }
  await Promise.all(batch);
}
// Every device's first pull: its state exists and is at the newest event.
for (let j = 0; j < S; j += 64) {
  await Promise.all(Array.from({ length: Math.min(64, S - j) }, (_, k) => pull(`herd-${j + k}`)));
}

// What the pulling backends wait on while the rings run: pg_stat_activity
// sampled every 5 ms by a connection of its own (not counted).
const sampler = new pg.Client({ connectionString: process.env.DATABASE_URL });
await sampler.connect();
const waits = new Map();
let samples = 0;
let sampling = true;
const sampling_done = (async () => {
  while (sampling) {
    const { rows } = await sampler.query(`SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w
      FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`);
    for (const { w } of rows) {
      waits.set(w, (waits.get(w) ?? 0) + 1);
      samples += 1;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
})();

const latency = [];
const cpu = [];
for (let i = 0; i < R; i++) {
  await new Promise((r) => setTimeout(r, 100));
  pulled = 0;
  const done = new Promise((r) => (wake = r));
  const cpuBefore = serverCpu();
  const { committed_at: committedAt } = await post(`${STANDIN_URL}/control`, { op: "add_events", model: "sale.order" });
  const committed = committedAt * 1000 - performance.timeOrigin;
  let timer;
  const last = await Promise.race([done, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`ring ${i}: ${pulled} of ${S} devices pulled in ${DEADLINE_MS} ms`)), DEADLINE_MS);
  })]);
  clearTimeout(timer);
  if (failure) throw failure;
  cpu.push(serverCpu() - cpuBefore);
  latency.push(last - committed);
}
sampling = false;
await sampling_done;
await sampler.end();
for (const c of clients) await c.dispose();
agent.destroy();

const sum = cpu.reduce((a, b) => a + b, 0);
console.log(`${S} subscribers (${listening} LISTENING), each a device pulling by REST on its message; ${R} rings:`);
console.log(`  commit to the last device's pull answer: ${fmt(latency)}`);
console.log(`  database server CPU per ring: ${(sum / R * 1000).toFixed(1)} ms ` +
  `(${(sum / R / S * 1e6).toFixed(0)} us per device pull; /proc, 10 ms ticks, over ${R} rings)`);
console.log(`  active client backends, ${samples} samples: ` +
  [...waits].sort((a, b) => b[1] - a[1]).map(([w, n]) => `${w} ${(100 * n / samples).toFixed(1)} %`).join(", "));
