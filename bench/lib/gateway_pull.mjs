// Load generator of bench/gateway_pull.sh: one side of one round.
//
//   node gateway_pull.mjs <side> <clients> <pulls per client> <devices> <seed>
//
// side "rest": POST /api/v2/sync/pull through the gateway (GATEWAY_URL,
// Bearer TOKEN), one keep-alive connection per client; side "sql": the same
// pulls as direct SQL calls (DATABASE_URL), one connection per client
// acting as bridgecore_app, a prepared SELECT bridgecore.sync_pull(...).
// Each client pulls its own fixed sequence of devices (a PRNG seeded with
// seed and the client's number), so both sides make the same calls.
// CLIENT=minimal (the default; CLIENT=node for node:http's client and
// node-postgres): on both sides the least a client can do: one socket per client, one write per
// pull, the answer's bytes framed by hand (HTTP/1.1 with Content-Length; the
// PostgreSQL protocol), its JSON parsed as before. Prints one JSON line: {"side", "seconds", "pulls", "events", "pps", "client_cpu_ms"
// (this process's CPU time during the pulls)}; exits
// non-zero when a pull fails.
import http from "node:http";
import net from "node:net";
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

// CLIENT=minimal, REST side: one socket, one write per request, the answer
// framed by its Content-Length (the gateway and the floor always send one).
function minimalRestClient() {
  const url = new URL("/api/v2/sync/pull", process.env.GATEWAY_URL);
  const head = `POST ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${process.env.TOKEN}\r\n` +
    "Content-Type: application/json\r\nContent-Length: ";
  const socket = net.connect(Number(url.port), url.hostname);
  socket.setNoDelay(true);
  let pending = null;   // { resolve, reject } of the request in flight
  let buffer = Buffer.alloc(0);
  socket.on("data", (data) => {
    buffer = buffer.length ? Buffer.concat([buffer, data]) : data;
    const end = buffer.indexOf("\r\n\r\n");
    if (end < 0 || pending === null) return;
    const header = buffer.toString("latin1", 0, end);
    const length = /\r\ncontent-length: *(\d+)/i.exec(header);
    if (!length) return pending.reject(new Error(`no Content-Length: ${header}`));
    const size = end + 4 + Number(length[1]);
    if (buffer.length < size) return;
    const text = buffer.toString("utf8", end + 4, size);
    buffer = buffer.subarray(size);
    const { resolve, reject } = pending;
    pending = null;
    if (!header.startsWith("HTTP/1.1 200 ")) return reject(new Error(`${header.split("\r\n")[0]}: ${text.slice(0, 300)}`));
    resolve(JSON.parse(text).events.length);
  });
  const failed = (e) => pending?.reject(e ?? new Error("the connection closed"));
  socket.on("error", failed);
  socket.on("close", () => failed());
  const call = (device) => new Promise((resolve, reject) => {
    const body = JSON.stringify({ device_id: device, app_type: "sales_app", limit: LIMIT });
    pending = { resolve, reject };
    socket.write(`${head}${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
  call.end = () => new Promise((resolve) => socket.end(resolve));
  return call;
}

// CLIENT=minimal, SQL side: the frontend/backend protocol by hand on the
// server's Unix socket (the benchmark's cluster trusts local connections):
// the start-up, SET ROLE, one Parse of the pull, then per pull one write of
// Bind, Execute and Sync, and the DataRow's text out of the answer.
function pgMessage(type, ...parts) {
  const body = Buffer.concat(parts);
  const head = Buffer.alloc(5);
  head.write(type, 0, "latin1");
  head.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
}
const cstring = (s) => Buffer.from(`${s}\0`, "utf8");
const int16 = (n) => { const b = Buffer.alloc(2); b.writeInt16BE(n); return b; };
const int32 = (n) => { const b = Buffer.alloc(4); b.writeInt32BE(n); return b; };

async function minimalSqlClient() {
  const url = new URL(process.env.DATABASE_URL);
  const dir = url.searchParams.get("host"), port = url.searchParams.get("port");
  const socket = net.connect(`${dir}/.s.PGSQL.${port}`);
  let buffer = Buffer.alloc(0);
  let waiter = null;    // { resolve, reject, rows, error } until ReadyForQuery
  socket.on("data", (data) => {
    buffer = buffer.length ? Buffer.concat([buffer, data]) : data;
    while (buffer.length >= 5) {
      const length = buffer.readInt32BE(1);
      if (buffer.length < 1 + length) break;
      const type = String.fromCharCode(buffer[0]);
      const body = buffer.subarray(5, 1 + length);
      buffer = buffer.subarray(1 + length);
      if (type === "D") {
        const size = body.readInt32BE(2);
        waiter.rows.push(size < 0 ? null : body.toString("utf8", 6, 6 + size));
      } else if (type === "E") {
        const fields = body.toString("utf8").split("\0");
        waiter.error = new Error(fields.filter((f) => f[0] === "M").map((f) => f.slice(1)).join("; "));
      } else if (type === "R" && body.readInt32BE(0) !== 0) {
        waiter.error = new Error("the server asks for a password: CLIENT=minimal needs trust");
      } else if (type === "Z") {
        const w = waiter;
        waiter = null;
        if (w.error) w.reject(w.error); else w.resolve(w.rows);
      }
    }
  });
  socket.on("error", (e) => waiter?.reject(e));
  const exchange = (bytes) => new Promise((resolve, reject) => {
    waiter = { resolve, reject, rows: [], error: null };
    socket.write(bytes);
  });
  const startup = Buffer.concat([int32(196608), cstring("user"), cstring(url.searchParams.get("user") ?? "postgres"),
    cstring("database"), cstring(decodeURIComponent(url.pathname.slice(1))), Buffer.from([0])]);
  await exchange(Buffer.concat([int32(startup.length + 4), startup]));
  await exchange(pgMessage("Q", cstring("SET ROLE bridgecore_app")));
  await exchange(Buffer.concat([pgMessage("P", cstring("pull"),
    cstring("SELECT bridgecore.sync_pull($1::bigint, $2::text, $3::text, $4::integer)::text AS r"), int16(0)), pgMessage("S")]));
  const executeSync = Buffer.concat([pgMessage("E", cstring(""), int32(0)), pgMessage("S")]);
  const call = async (device) => {
    const params = ["1", device, "sales_app", String(LIMIT)].map((v) => Buffer.from(v, "utf8"));
    const bind = pgMessage("B", cstring(""), cstring("pull"), int16(0), int16(params.length),
      ...params.flatMap((p) => [int32(p.length), p]), int16(1), int16(0));
    const rows = await exchange(Buffer.concat([bind, executeSync]));
    return JSON.parse(rows[0]).events.length;
  };
  call.end = () => new Promise((resolve) => socket.end(pgMessage("X"), resolve));
  return call;
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
  const minimal = (process.env.CLIENT ?? "minimal") !== "node";
  for (let c = 0; c < CLIENTS; c++) {
    if (side === "rest") calls.push(minimal ? minimalRestClient() : restClient(agent));
    else calls.push(minimal ? await minimalSqlClient() : await sqlClient());
  }
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
