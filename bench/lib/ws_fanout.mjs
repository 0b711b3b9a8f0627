// The driver of bench/ws_fanout.sh: the gateway's side, then the floor's,
// each by ws_fanout_clients.mjs in a fresh process (the same client code,
// the same frames: the floor sends the payload the gateway sent), then the
// report.
import { fork } from "node:child_process";
import { loadavg } from "node:os";
import { fmt, pct } from "./latency.mjs";

const S = Number(process.env.S);
const N = Number(process.env.N);
// Every field, as apps send it (docs/gateway.md, Subscription syncAvailable);
// executor: the same fields through a fragment, which PostGraphile's
// executor runs for each message.
const query = process.env.FORM === "executor"
  ? 'subscription { syncAvailable(appType: "sales_app") { ...F } } fragment F on SyncAvailable { reason instance model count maxId high }'
  : 'subscription { syncAvailable(appType: "sales_app") { reason instance model count maxId high } }';

const side = (args) => new Promise((resolve, reject) => {
  const child = fork(new URL("./ws_fanout_clients.mjs", import.meta.url), [JSON.stringify(args)]);
  let result = null;
  child.once("message", (m) => (result = m));
  child.once("exit", (code) => (result && code === 0 ? resolve(result) : reject(new Error(`the ${args.side} side's clients exited with ${code}`))));
});

const load = () => loadavg().map((x) => x.toFixed(2)).join(", ");
const loadBefore = load();
const gw = await side({ side: "gateway", query });
const floor = await side({ side: "floor", query, listening: gw.listeningPayload, payload: gw.payload });
if (floor.payload !== gw.payload) throw new Error(`the floor's subscribers got ${floor.payload}, the gateway's ${gw.payload}`);

const fromCommit = gw.rounds.map((r) => r.last - r.t);
const fromSend = gw.rounds.map((r) => r.last - r.began);
const firstFromSend = gw.rounds.map((r) => r.first - r.began);
const ingest = gw.rounds.map((r) => r.t - r.began);
const bare = floor.rounds.map((r) => r.last - r.t);
const bareFirst = floor.rounds.map((r) => r.first - r.t);
// The three slowest rounds, as "#round time".
const slowest = (xs) => xs.map((x, i) => [x, i + 1]).sort((a, b) => b[0] - a[0]).slice(0, 3).map(([x, i]) => `#${i} ${x.toFixed(1)} ms`).join(", ");
const ratio = (p) => (pct(fromCommit, p) / pct(bare, p)).toFixed(2);

console.log(`subscription form: ${process.env.FORM}; load average ${loadBefore} at the start, ${load()} at the end`);
console.log(`${S} subscribers connected and listening in ${gw.connectSeconds.toFixed(1)} s (${gw.listening} LISTENING)`);
console.log(`${N} ingests, time to the last subscriber's message:`);
console.log(`  from the commit (ingest returned): ${fmt(fromCommit)}`);
console.log(`  from sending the ingest:           ${fmt(fromSend)}`);
console.log(`  the ingest call itself:            ${fmt(ingest)}`);
console.log(`  (to the first subscriber's, from sending the ingest: ${fmt(firstFromSend)})`);
console.log(`  the slowest, from the commit: ${slowest(fromCommit)}`);
console.log(`the floor, a bare ws server speaking graphql-ws to the same clients, the same frames, ${N} rounds:`);
console.log(`  from its order to the last subscriber's: ${fmt(bare)}`);
console.log(`  (to the first subscriber's: ${fmt(bareFirst)})`);
console.log(`  the slowest: ${slowest(bare)}`);
console.log(`gateway from the commit / floor: p50 ${ratio(50)}x, p99 ${ratio(99)}x`);
console.log(`CPU per round: gateway ${gw.serverCpu.toFixed(1)} ms, its clients ${gw.clientsCpu.toFixed(1)} ms; ` +
  `floor server ${floor.serverCpu.toFixed(1)} ms, its clients ${floor.clientsCpu.toFixed(1)} ms`);
console.log(`gateway RSS: ${gw.rssBefore.toFixed(1)} MiB without subscribers, ${gw.rssAt.toFixed(1)} MiB with ${S}, ` +
  `${gw.rssAfter.toFixed(1)} MiB after the ingests (${((gw.rssAt - gw.rssBefore) * 1024 / S).toFixed(1)} KiB per subscriber)`);
console.log(`message: ${gw.payload}`);
