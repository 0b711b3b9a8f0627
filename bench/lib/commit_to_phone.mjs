// The clients of bench/commit_to_phone.sh: a LISTEN connection, one
// graphql-ws subscriber that pulls by REST after each message, and N
// single-row changes in the Odoo stand-in.
import { performance } from "node:perf_hooks";
import { SYNC_AVAILABLE, fmt, require, subscriber } from "./latency.mjs";

const pg = require("pg");

const { TOKEN, GATEWAY_URL, STANDIN_URL, DATABASE_URL } = process.env;
const N = Number(process.env.N);
const DEADLINE_MS = 5_000;   // far below the 10 s poll: a change that only a poll brings fails the run

const waiter = () => {
  let resolve;
  const p = new Promise((r) => (resolve = r));
  return { p, resolve };
};
const within = (promise, what) => {
  let timer;
  return Promise.race([promise, new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  })]).finally(() => clearTimeout(timer));
};

async function post(url, body, headers = {}) {
  const res = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body) });
  const text = await res.text();
  if (res.status !== 200) throw new Error(`${url}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}
const pull = () => post(`${GATEWAY_URL}/api/v2/sync/pull`, { device_id: "bench-phone", app_type: "sales_app", limit: 100 },
  { Authorization: `Bearer ${TOKEN}` });

const listener = new pg.Client({ connectionString: DATABASE_URL });
await listener.connect();
let notified = waiter();
listener.on("notification", () => notified.resolve(performance.now()));
await listener.query("LISTEN bridgecore_events");

let message = waiter();
const client = subscriber(GATEWAY_URL, TOKEN);
const listening = waiter();
client.subscribe({ query: SYNC_AVAILABLE }, {
  next: (m) => {
    const r = m.data?.syncAvailable?.reason;
    if (r === "LISTENING") listening.resolve();
    else if (r === "NOTIFIED") message.resolve(performance.now());
  },
  error: (e) => { console.error(`subscription: ${e.message ?? e.code ?? e}`); process.exit(1); },
  complete: () => {},
});
await within(listening.p, "the subscription's LISTENING");
// The device starts at the newest event (whatever the first poll brought).
while ((await pull()).has_more);

const rows = { notify: [[], []], message: [[], []], pulled: [[], []] };
for (let i = 0; i < N; i++) {
  await new Promise((r) => setTimeout(r, 50 + Math.random() * 100));
  notified = waiter();
  message = waiter();
  const sent = performance.now();
  const { ids, committed_at: committedAt } = await post(`${STANDIN_URL}/control`, { op: "add_events", model: "sale.order" });
  // The stand-in's clock reading at the commit, on this process's clock.
  const committed = committedAt * 1000 - performance.timeOrigin;
  const tNotify = await within(notified.p, `change ${i}'s NOTIFY`);
  const tMessage = await within(message.p, `change ${i}'s subscription message`);
  const page = await pull();
  const tPulled = performance.now();
  if (ids.length !== 1 || page.events.length !== 1)
    throw new Error(`change ${i}: the pull after the message did not answer the row (${JSON.stringify(page).slice(0, 300)})`);
  for (const [k, t] of [["notify", tNotify], ["message", tMessage], ["pulled", tPulled]]) {
    rows[k][0].push(t - sent);
    rows[k][1].push(t - committed);
  }
}
const stats = await post(`${STANDIN_URL}/control`, { op: "stats" });
const pushes = (await post(`${STANDIN_URL}/control`, { op: "pushes" })).pushes ?? [];
await client.dispose();
await listener.end();

console.log(`${N} changes in the Odoo stand-in, poll_interval 10 s, each rung to the gateway after its commit:`);
for (const [k, label] of [["notify", "NOTIFY at a listener"], ["message", "the subscriber's message"],
  ["pulled", "the subscriber's following pull answered"]]) {
  console.log(`  commit to ${label}: ${fmt(rows[k][1])} (from sending the change: ${fmt(rows[k][0])})`);
}
console.log(`stand-in: ${pushes.length} rings sent, ${stats.search_reads} search_reads answered`);
