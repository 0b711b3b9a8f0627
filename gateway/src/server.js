// The gateway's HTTP server: /health, /auth/login, /auth/refresh and the
// REST routes on node:http, each a call of a bridgecore function through pg
// with the token's role and claims set for its transaction (as PostgREST
// sets them); PostGraphile v5 (grafserv) serves /graphql on the same
// server, over HTTP and WebSocket (graphql-ws), with the BridgeCore fields
// of graphql.js. Every token is verified by the database
// (bridgecore.verify_token): the gateway holds no second verifier.
import { createHmac } from "node:crypto";
import { createServer } from "node:http";
import pg from "pg";
import { postgraphile } from "postgraphile";
import { grafserv } from "postgraphile/grafserv/node";
import { makePgService } from "postgraphile/adaptors/pg";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { bearerToken, claimsOf, missingToken, tokenError, verifyStatement, verifyToken } from "./auth.js";
import { bridgecorePlugin, maskError } from "./graphql.js";
import { HttpError, fromError, parseObject, readBody, sendError, sendJson } from "./http.js";
import { NotificationHub } from "./notifications.js";
import { ROUTES, functionCall, requestValues } from "./routes.js";
import { attachWebSocket } from "./websocket.js";

// The schema PostGraphile exposes. PostGraphile hides the objects of
// extensions, so the gateway keeps its own (GraphQL types come later).
export const GATEWAY_SCHEMA = "bridgecore_gateway";

export class StartupError extends Error {}

// Runs a query in a transaction as the role of token (verified by the
// database in the transaction's first round trip, which also sets the role
// and request.jwt.claims as PostgREST sets them), or as bridgecore_anon
// without one; build(claims) makes the query. Returns the text of its one
// value.
async function callAs(pool, token, build) {
  let client;
  try {
    client = await pool.connect();
  } catch (e) {
    throw new HttpError(503, "the database is unavailable", { hint: "Retry later." });
  }
  let broken = false;
  let claims = null;
  try {
    if (token === null) {
      await client.query("BEGIN; SET LOCAL ROLE bridgecore_anon");
    } else {
      await client.query("BEGIN");
      try {
        claims = claimsOf(await client.query(verifyStatement(client, token)));
      } catch (e) {
        throw tokenError(e);
      }
    }
    const result = await client.query(build(claims));
    await client.query("COMMIT");
    return result.rows[0].r;
  } catch (e) {
    try {
      await client.query("ROLLBACK");
    } catch {
      broken = true;
    }
    throw e;
  } finally {
    client.release(broken);
  }
}

// The bearer token of a request (401 without one).
function requireToken(req) {
  const token = bearerToken(req.headers.authorization);
  if (token === null) throw missingToken();
  return token;
}

// An HS256 token signed with the gateway's secret, only to ask the
// database at start whether it has the same one (it verifies every
// request's token itself).
function probeToken(secret) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const input = `${part({ alg: "HS256", typ: "JWT" })}.${part({ role: "bridgecore_app", exp: Math.floor(Date.now() / 1000) + 60 })}`;
  return `${input}.${createHmac("sha256", secret).update(input).digest("base64url")}`;
}

async function checkDatabase(pool, secret) {
  let rows;
  try {
    ({ rows } = await pool.query(
      "SELECT current_database() AS db, (SELECT extversion FROM pg_extension WHERE extname = 'bridgecore') AS version," +
      " to_regprocedure('bridgecore.login(text, text, text)') IS NOT NULL AS has_login"));
  } catch (e) {
    throw new StartupError(`cannot connect to the database: ${e.message}`);
  }
  const { db, version, has_login: hasLogin } = rows[0];
  if (version === null) throw new StartupError(`the extension bridgecore is not installed in database "${db}" (CREATE EXTENSION bridgecore)`);
  if (!hasLogin) throw new StartupError(`bridgecore ${version} in database "${db}" has no bridgecore.login(): update it (ALTER EXTENSION bridgecore UPDATE)`);
  // The database must accept the gateway's tokens: the same secret.
  try {
    await verifyToken(pool, probeToken(secret));
  } catch (e) {
    if (e.code === "55000") throw new StartupError(`bridgecore.jwt_secret is not set in database "${db}": a superuser sets it to BRIDGECORE_JWT_SECRET`);
    if (e.status === 401) throw new StartupError(`BRIDGECORE_JWT_SECRET is not the bridgecore.jwt_secret of database "${db}"`);
    throw new StartupError(`cannot check the token secret: ${e.message}`);
  }
  return db;
}

async function ensureSchema(pool) {
  const { rows } = await pool.query("SELECT to_regnamespace($1) IS NOT NULL AS present", [GATEWAY_SCHEMA]);
  if (rows[0].present) return;
  try {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${GATEWAY_SCHEMA};` +
      ` GRANT USAGE ON SCHEMA ${GATEWAY_SCHEMA} TO bridgecore_app, bridgecore_admin`);
  } catch (e) {
    throw new StartupError(`cannot create the schema ${GATEWAY_SCHEMA} (${e.message}): create it once as a role that may`);
  }
}

export async function startGateway(config) {
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10, connectionTimeoutMillis: 5000 });
  pool.on("error", () => {});   // an idle connection that dies is replaced on next use
  try {
    await checkDatabase(pool, config.secret);
    await ensureSchema(pool);
  } catch (e) {
    await pool.end();
    throw e;
  }

  const hub = new NotificationHub(config.databaseUrl);
  try {
    await hub.start();
  } catch (e) {
    await hub.close();
    await pool.end();
    throw new StartupError(`cannot LISTEN for notifications: ${e.message}`);
  }

  const pgl = postgraphile({
    extends: [PostGraphileAmberPreset],
    plugins: [bridgecorePlugin(hub)],
    pgServices: [makePgService({ pool, schemas: [GATEWAY_SCHEMA] })],
    grafserv: { graphqlPath: "/graphql", graphiql: false, watch: false, websockets: true, maskError },
    grafast: {
      // The token's role and claims (verified by the database), as for the
      // REST routes: over HTTP the request's, over WebSocket the
      // connection's.
      context(requestContext) {
        const claims = requestContext.ws ? requestContext.ws.socket?.bridgecoreClaims : requestContext.node?.req?.bridgecoreClaims;
        return claims ? { pgSettings: { role: claims.role, "request.jwt.claims": JSON.stringify(claims) } } : {};
      },
    },
  });
  try {
    await pgl.getSchema();
  } catch (e) {
    // PostGraphile holds timers and the pool's clients: release both, or
    // the process stays alive after a failed start.
    await Promise.resolve(pgl.release()).catch(() => {});
    await hub.close();
    await pool.end().catch(() => {});
    throw new StartupError(`PostGraphile could not build the GraphQL schema: ${e.message}`);
  }
  const serv = pgl.createServ(grafserv);
  const graphql = serv.createHandler();

  async function handle(req, res) {
    const url = new URL(req.url, "http://gateway");
    const path = url.pathname.replace(/\/+$/, "") || "/";
    if (path === "/health") {
      if (req.method !== "GET") throw methodNotAllowed("GET");
      try {
        await pool.query("SELECT 1");
      } catch {
        throw new HttpError(503, "the database is unavailable", { hint: "Retry later." });
      }
      return sendJson(res, 200, '{"status": "ok"}');
    }
    if (path === "/auth/login") {
      if (req.method !== "POST") throw methodNotAllowed("POST");
      const body = parseObject(await readBody(req, config.maxBodySize));
      const { username = null, password = null, instance = null } = body;
      for (const [k, v] of Object.entries({ username, password, instance })) {
        if (v !== null && typeof v !== "string") throw new HttpError(400, `${k} must be a string`, { code: "22023" });
      }
      return sendJson(res, 200, await callAs(pool, null, () => ({
        text: "SELECT bridgecore.login(username => $1, password => $2, instance => $3)::text AS r",
        values: [username, password, instance],
      })));
    }
    if (path === "/auth/refresh") {
      if (req.method !== "POST") throw methodNotAllowed("POST");
      const token = requireToken(req);
      await readBody(req, config.maxBodySize);
      return sendJson(res, 200, await callAs(pool, token, () => ({
        text: "SELECT bridgecore.refresh_token($1)::text AS r", values: [token],
      })));
    }
    if (path === "/graphql") {
      req.bridgecoreClaims = await verifyToken(pool, requireToken(req));
      return graphql(req, res, (err) => sendError(res, err ?? new HttpError(404, "Not Found")));
    }
    const route = ROUTES[path];
    if (!route) throw new HttpError(404, "Not Found");
    if (req.method !== route.method) throw methodNotAllowed(route.method);
    const token = requireToken(req);
    const body = route.from.includes("body") ? parseObject(await readBody(req, config.maxBodySize)) : {};
    return sendJson(res, 200, await callAs(pool, token, (claims) => functionCall(route.fn, route.args, requestValues(route, url, body, claims))));
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err) => {
      const e = fromError(err);
      if (e.status === 500) console.error(`bridgecore gateway: ${req.method} ${req.url}: ${err.stack ?? err}`);
      sendError(res, e);  // 413 answers Connection: close, so the rest of the body is not read
    });
  });
  const websocket = attachWebSocket({ server, serv, pool, hub, maxPayload: config.maxBodySize });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(config.port, config.host, resolve);
  });
  const address = server.address();
  return {
    server,
    url: `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`,
    hub,
    websocket,
    async close() {
      const closed = new Promise((resolve) => server.close(resolve));
      await websocket.close();
      server.closeAllConnections?.();
      await closed;
      await hub.close();
      await pgl.release();
      await pool.end();
    },
  };
}

function methodNotAllowed(allowed) {
  return new HttpError(405, "Method Not Allowed", { headers: { Allow: allowed } });
}
