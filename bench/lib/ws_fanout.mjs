// The clients of bench/ws_fanout.sh: S graphql-ws subscribers, N ingests.
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { SYNC_AVAILABLE, fmt, pct, require, subscriber } from "./latency.mjs";

const pg = require("pg");
const WebSocket = require("ws");

const { TOKEN, GATEWAY_URL, GATEWAY_PID, DATABASE_URL } = process.env;
const S = Number(process.env.S);
const N = Number(process.env.N);
const DEADLINE_MS = 30_000;

const rssMiB = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${GATEWAY_PID}/status`, "utf8"));
  return Number(m[1]) / 1024;
};

const rssBefore = rssMiB();
let received = 0;          // NOTIFIED messages of the current ingest
let listening = 0;
let wake = null;
const clients = [];
// plain: the document apps send (the gateway's short way); executor: the
// same fields through a fragment, which PostGraphile's executor runs.
const query = process.env.FORM === "executor"
  ? 'subscription { syncAvailable(appType: "sales_app") { ...F } } fragment F on SyncAvailable { reason model maxId }'
  : SYNC_AVAILABLE;
const t0 = performance.now();
for (let i = 0; i < S; i += 50) {
  const batch = [];
  for (let j = i; j < Math.min(S, i + 50); j++) {
    const client = subscriber(GATEWAY_URL, TOKEN);
    clients.push(client);
    batch.push(new Promise((resolve, reject) => {
      client.subscribe({ query }, {
        next: (m) => {
          const r = m.data?.syncAvailable?.reason;
          if (r === "LISTENING") {
            listening += 1;
            resolve();
          } else if (r === "NOTIFIED") {
            received += 1;
            if (received === S && wake) wake(performance.now());
          } else {
            reject(new Error(`unexpected message ${JSON.stringify(m)}`));
          }
        },
        error: (e) => reject(new Error(`subscriber ${j}: ${e.message ?? e.code ?? e}`)),
        complete: () => {},
      });
    }));
  }
  await Promise.all(batch);
}
const connectSeconds = (performance.now() - t0) / 1000;
// The gateway's memory once the subscribers are idle (a collection has had the chance to run).
await new Promise((r) => setTimeout(r, 2000));
const rssAt = rssMiB();

const db = new pg.Client({ connectionString: DATABASE_URL });
await db.connect();
const fromCommit = [];
const fromSend = [];
const commit = [];
for (let i = 1; i <= N; i++) {
  received = 0;
  const done = new Promise((resolve) => {
    wake = resolve;
  });
  const event = [{ id: i, model: "sale.order", record_id: i, event: "write", timestamp: "2025-11-16 10:30:00" }];
  const sent = performance.now();
  await db.query("SELECT bridgecore.ingest('acme', $1)", [JSON.stringify(event)]);
  const committed = performance.now();
  let timer;
  const last = await Promise.race([done, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`ingest ${i}: ${received} of ${S} subscribers in ${DEADLINE_MS} ms`)), DEADLINE_MS);
  })]);
  clearTimeout(timer);
  fromCommit.push(last - committed);
  fromSend.push(last - sent);
  commit.push(committed - sent);
}
const rssAfter = rssMiB();
await db.end();
for (const c of clients) await c.dispose();

// The same fan-out by a bare ws server, same clients' machine, same run.
const server = fork(new URL("./ws_broadcast.mjs", import.meta.url));
const { port } = await new Promise((r) => server.once("message", r));
const sockets = [];
let got = 0;
let bareWake = null;
for (let i = 0; i < S; i++) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`);
  ws.on("message", (d) => {
    JSON.parse(d.toString());
    if (++got === S && bareWake) bareWake(performance.now());
  });
  sockets.push(ws);
  await new Promise((r) => ws.once("open", r));
}
const bare = [];
const text = JSON.stringify({ id: "00000000-0000-4000-8000-000000000000", type: "next",
  payload: { data: { syncAvailable: { reason: "NOTIFIED", model: "sale.order", maxId: 123456 } } } });
for (let i = 0; i < N; i++) {
  got = 0;
  const done = new Promise((r) => (bareWake = r));
  const sent = performance.now();
  server.send(text);
  bare.push((await done) - sent);
}
for (const ws of sockets) ws.terminate();
server.kill();

console.log(`subscription form: ${process.env.FORM}`);
console.log(`${S} subscribers connected and listening in ${connectSeconds.toFixed(1)} s (${listening} LISTENING)`);
console.log(`${N} ingests, time to the last subscriber's message:`);
console.log(`  from the commit (ingest returned): ${fmt(fromCommit)}`);
console.log(`  from sending the ingest:           ${fmt(fromSend)}`);
console.log(`  the ingest call itself:            ${fmt(commit)}`);
console.log(`  a bare ws server, same message size:  ${fmt(bare)}` +
  ` (gateway from the commit / bare: p50 ${(pct(fromCommit, 50) / pct(bare, 50)).toFixed(2)}x, p99 ${(pct(fromCommit, 99) / pct(bare, 99)).toFixed(2)}x)`);
console.log(`gateway RSS: ${rssBefore.toFixed(1)} MiB without subscribers, ${rssAt.toFixed(1)} MiB with ${S}, ` +
  `${rssAfter.toFixed(1)} MiB after the ingests (${((rssAt - rssBefore) * 1024 / S).toFixed(1)} KiB per subscriber)`);
