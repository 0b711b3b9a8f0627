// One side of bench/ws_fanout.sh, in a process of its own (forked by
// ws_fanout.mjs, so that both sides' clients start alike): S graphql-ws
// subscribers (latency.mjs's client), then N rounds; reports the times of
// each round to its parent.
//   side "gateway": the gateway at GATEWAY_URL; a round is an ingest.
//   side "floor": a bare ws server speaking graphql-ws (ws_broadcast.mjs,
//   forked here), told to send the payload the gateway sent.
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { require, subscriber } from "./latency.mjs";

const pg = require("pg");

const { TOKEN, GATEWAY_URL, GATEWAY_PID, DATABASE_URL } = process.env;
const S = Number(process.env.S);
const N = Number(process.env.N);
const DEADLINE_MS = 30_000;
const { side, query, listening, payload } = JSON.parse(process.argv[2]);

const rssMiB = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${GATEWAY_PID}/status`, "utf8"));
  return Number(m[1]) / 1024;
};
// CPU time of a process so far (user + system), ms.
const cpuMs = (pid) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;   // utime, stime: clock ticks of 10 ms (USER_HZ)
};
const ownCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

// The subscribers, connected 50 at a time, each resolved at its LISTENING;
// every NOTIFIED counts in state.received, the first sets state.first and
// the S-th wakes state.wake with its arrival time.
const state = { listening: 0, received: 0, first: null, wake: null, listeningPayload: null, payload: null };
async function subscribeAll(url) {
  const clients = [];
  for (let i = 0; i < S; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(S, i + 50); j++) {
      const client = subscriber(url, TOKEN);
      clients.push(client);
      batch.push(new Promise((resolve, reject) => {
        client.subscribe({ query }, {
          next: (m) => {
            const r = m.data?.syncAvailable?.reason;
            if (r === "LISTENING") {
              state.listening += 1;
              state.listeningPayload ??= JSON.stringify(m);
              resolve();
            } else if (r === "NOTIFIED") {
              state.received += 1;
              if (state.received === 1) state.first = performance.now();
              if (state.received === S) {
                state.payload = JSON.stringify(m);
                state.wake?.(performance.now());
              }
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
  return clients;
}

// One round: start() returns when its clock starts (and what it measured);
// resolves with the times of the first and the S-th NOTIFIED.
async function round(what, start) {
  state.received = 0;
  state.first = null;
  const done = new Promise((resolve) => {
    state.wake = resolve;
  });
  const began = performance.now();
  const t = await start();
  let timer;
  const last = await Promise.race([done, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: ${state.received} of ${S} subscribers in ${DEADLINE_MS} ms`)), DEADLINE_MS);
  })]);
  clearTimeout(timer);
  return { began, t, first: state.first, last };
}

const out = { side, rounds: [] };
let server = null;
let url = GATEWAY_URL;
let pid = Number(GATEWAY_PID);
if (side === "floor") {
  server = fork(new URL("./ws_broadcast.mjs", import.meta.url));
  const { port } = await new Promise((r) => server.once("message", r));
  server.send({ listening });
  url = `http://127.0.0.1:${port}`;
  pid = server.pid;
} else {
  out.rssBefore = rssMiB();
}
const t0 = performance.now();
const clients = await subscribeAll(url);
out.connectSeconds = (performance.now() - t0) / 1000;
out.listening = state.listening;
out.listeningPayload = state.listeningPayload;
// Idle a moment first (the gateway's memory is read once a collection has had the chance to run).
await new Promise((r) => setTimeout(r, 2000));
if (side === "gateway") out.rssAt = rssMiB();

const db = side === "gateway" ? new pg.Client({ connectionString: DATABASE_URL }) : null;
await db?.connect();
const cpu0 = cpuMs(pid);
const own0 = ownCpuMs();
for (let i = 1; i <= N; i++) {
  if (side === "gateway") {
    const event = [{ id: i, model: "sale.order", record_id: i, event: "write", timestamp: "2025-11-16 10:30:00" }];
    out.rounds.push(await round(`ingest ${i}`, async () => {
      await db.query("SELECT bridgecore.ingest('acme', $1)", [JSON.stringify(event)]);
      return performance.now();     // the commit: the ingest returned
    }));
  } else {
    out.rounds.push(await round(`round ${i}`, async () => {
      const t = performance.now();
      server.send({ payload });
      return t;
    }));
  }
}
out.serverCpu = (cpuMs(pid) - cpu0) / N;
out.clientsCpu = (ownCpuMs() - own0) / N;
out.payload = state.payload;
if (side === "gateway") out.rssAfter = rssMiB();
await db?.end();
for (const c of clients) await c.dispose();
server?.kill();
process.send(out);
