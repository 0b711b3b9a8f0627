// The floor of bench/gateway_pull.sh: the least a Node.js HTTP hop in front
// of sync_pull can cost. POST /api/v2/sync/pull on node:http, the body's
// device_id, app_type and limit passed to one prepared
// SELECT bridgecore.sync_pull(...) on a node-postgres pool whose connections
// act as bridgecore_app, the answer written as it came, with Content-Length.
// No token check, no claims, no routing, no metrics, no error bodies: not a
// gateway, only what any gateway in Node.js pays before its own work.
//
//   DATABASE_URL=... PORT=... node floor_gateway.mjs
import http from "node:http";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const require = createRequire(fileURLToPath(new URL("../../gateway/package.json", import.meta.url)));
const pg = require("pg");

const USER_ID = 1;    // the benchmark's one user
const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
pool.on("error", () => {});

async function connection() {
  const client = await pool.connect();
  if (!client.bridgecoreApp) {
    await client.query("SET ROLE bridgecore_app");
    client.bridgecoreApp = true;
  }
  return client;
}

async function pull(body) {
  const { device_id: device, app_type: app, limit } = JSON.parse(body);
  const client = await connection();
  try {
    const r = await client.query({ name: "pull", text: "SELECT bridgecore.sync_pull($1::bigint, $2::text, $3::text, $4::integer)::text AS r",
      values: [USER_ID, device, app, limit] });
    return r.rows[0].r;
  } finally {
    client.release();
  }
}

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    pull(Buffer.concat(chunks).toString("utf8")).then((text) => {
      const body = Buffer.from(text, "utf8");
      res.writeHead(200, { "Content-Type": "application/json; charset=utf-8", "Content-Length": body.length });
      res.end(body);
    }, (e) => {
      res.writeHead(500, { "Content-Type": "text/plain" });
      res.end(String(e.message));
    });
  });
});
server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
process.once("SIGTERM", () => { server.close(); pool.end().then(() => process.exit(0)); });
