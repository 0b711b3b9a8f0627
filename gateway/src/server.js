// The gateway's HTTP server: /health, /metrics, /auth/login, /auth/refresh,
// the doorbell (/api/v1/webhooks/receive) and the REST routes on node:http, each a call of a bridgecore function through pg
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
import { HttpError, fromError, parseObject, readBody, sendError, sendJson, sqlstateOf } from "./http.js";
import { NotificationHub } from "./notifications.js";
import { AuthorizedCall, parameter } from "./pipeline.js";
import { ROUTES, functionCall, requestValues } from "./routes.js";
import { attachWebSocket } from "./websocket.js";
import { GatewayMetrics } from "./metrics.js";

// The doorbell's path (the auto_webhook addon's subscriber pushes to it).
export const RECEIVE_PATH = "/api/v1/webhooks/receive";
// Paths counted by name in the request metrics; anything else is "other".
const KNOWN_PATHS = new Set(["/health", "/metrics", "/auth/login", "/auth/refresh", "/graphql", RECEIVE_PATH,
  ...Object.keys(ROUTES)]);

// The schema PostGraphile exposes. PostGraphile hides the objects of
// extensions, so the gateway keeps its own (GraphQL types come later).
export const GATEWAY_SCHEMA = "bridgecore_gateway";

export class StartupError extends Error {}

// A value as an SQL literal, for the one-message forms of callAs (an array
// as an array literal; a NUL character is refused, as for a parameter).
function literal(client, v) {
  const text = parameter(v);
  return text === null ? "NULL" : client.escapeLiteral(text);
}

// A query with its values inlined as literals.
function inline(client, query) {
  const values = query.values ?? [];
  return query.text.replace(/\$(\d+)/g, (_, n) => literal(client, values[Number(n) - 1]));
}

// The claims the database gave for a token, by the token's text: a token
// seen before builds its request's query at once, so that the database's
// check of it (which still runs, in the same transaction, and alone sets
// the role and the claims) and the query go in one round trip. The same
// text always verifies to the same claims; an expired or refused token
// fails in the database as on its first use. Bounded: the oldest go first.
const CLAIMS_CACHE_SIZE = 10000;
const knownClaims = new Map();

function cachedClaims(token) {
  const claims = knownClaims.get(token);
  if (claims === undefined) return null;
  if (typeof claims.exp === "number" && claims.exp <= Date.now() / 1000) {
    knownClaims.delete(token);
    return null;
  }
  return claims;
}

function rememberClaims(token, claims) {
  if (knownClaims.size >= CLAIMS_CACHE_SIZE) knownClaims.delete(knownClaims.keys().next().value);
  knownClaims.set(token, claims);
}

// Runs a query in a transaction and returns the text of its one value:
// with a token, as the token's role with request.jwt.claims set as
// PostgREST sets them, after the database verified the token in the same
// transaction; without one, as role. build(claims) makes the query. A known
// token costs one round trip: the pipeline of pipeline.js (the check by
// bridgecore_gateway.authorize, then the query, both prepared statements,
// one implicit transaction, which an error rolls back in the same exchange),
// or where the gateway could not create that function, one simple-protocol
// message of verifyStatement and the query, its values inlined as literals;
// none, one simple-protocol message (SET LOCAL ROLE and the query, one
// implicit transaction too). A new token costs two (BEGIN and the check, then
// the query and COMMIT), an error there a ROLLBACK more.
// The pools whose database has the gateway's authorize (ensureSchema).
const poolsWithAuthorize = new WeakSet();

async function callAs(pool, token, build, role = "bridgecore_anon") {
  let client;
  try {
    client = await pool.connect();
  } catch (e) {
    throw new HttpError(503, "the database is unavailable", { hint: "Retry later." });
  }
  let broken = false;
  let sent = false;     // an explicit transaction is open: an error rolls it back
  let queried = false;  // a statement was sent
  try {
    let results;
    if (token === null) {
      const text = inline(client, build(null));
      queried = true;
      results = await client.query(`SET LOCAL ROLE ${client.escapeIdentifier(role)}; ${text}`);
      return results[1].rows[0].r;
    }
    const known = cachedClaims(token);
    if (known !== null) {
      const query = build(known);
      // Both forms refuse a bad value (a NUL) here, before anything is sent.
      const call = poolsWithAuthorize.has(pool) ? new AuthorizedCall(token, query) : null;
      const text = call === null ? inline(client, query) : null;
      queried = true;
      try {
        if (call !== null) return await client.query(call).promise;
        results = await client.query(`${verifyStatement(client, token)}; ${text}`);
      } catch (e) {
        const refused = tokenError(e);
        if (refused !== e) knownClaims.delete(token);
        throw refused;
      }
      return results[2].rows[0].r;
    }
    sent = true;
    let claims;
    try {
      claims = claimsOf(await client.query(`BEGIN; ${verifyStatement(client, token)}`));
    } catch (e) {
      throw tokenError(e);
    }
    rememberClaims(token, claims);
    results = await client.query(`${inline(client, build(claims))}; COMMIT`);
    return results[0].rows[0].r;
  } catch (e) {
    if (sent) {
      try {
        await client.query("ROLLBACK");
      } catch {
        broken = true;
      }
    } else if (queried && sqlstateOf(e) === null) {
      broken = true;    // not an error of the database's: the connection is in doubt
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
      // A router (extension bridgecore_router) serves the same API.
      "SELECT current_database() AS db, (SELECT extversion FROM pg_extension WHERE extname IN ('bridgecore', 'bridgecore_router')" +
      "  ORDER BY extname LIMIT 1) AS version," +
      " EXISTS (SELECT FROM pg_extension WHERE extname = 'bridgecore_router') AS router," +
      // From the catalog, not to_regprocedure(): the documented login role
      // (NOINHERIT) has no USAGE on schema bridgecore, which that requires.
      " EXISTS (SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace" +
      "          WHERE n.nspname = 'bridgecore' AND p.proname = 'login'" +
      "            AND p.proargtypes = '25 25 25'::pg_catalog.oidvector) AS has_login"));
  } catch (e) {
    throw new StartupError(`cannot connect to the database: ${e.message}`);
  }
  const { db, version, has_login: hasLogin, router } = rows[0];
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
  return { db, router };
}

// The check of a known token's request, the first statement of its
// pipeline (pipeline.js): as bridgecore_anon it has the extension check the
// token and set the token's role and request.jwt.claims (as PostgREST does):
// bridgecore.authorize, or before 0.4.0 bridgecore.verify_token and two
// set_config. Both settings (set_config(..., true)) last until the end of
// the transaction, not of the function: the pipeline's one implicit
// transaction, whose next statement is the call. Only its owner (the
// gateway's login role) may run it. The comment hides it from PostGraphile
// and says which body it has. The current body names the schema of
// everything it calls, so it needs no SET search_path (whose save and
// restore each call would pay).
const AUTHORIZE = `${GATEWAY_SCHEMA}.authorize(text)`;
const AUTHORIZE_BODIES = {
  current: {
    comment: "@behavior -*\nbridgecore gateway: the check of a request's token, then its role and claims (2)",
    body: `RETURNS void LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM pg_catalog.set_config('role', 'bridgecore_anon', true);
    PERFORM bridgecore.authorize(token);
END
$$`,
  },
  // An extension before 0.4.0 has no bridgecore.authorize.
  verifyToken: {
    comment: "@behavior -*\nbridgecore gateway: the check of a request's token, then its role and claims (1)",
    body: `RETURNS void LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c jsonb;
BEGIN
    PERFORM set_config('role', 'bridgecore_anon', true);
    c := bridgecore.verify_token(token);
    PERFORM set_config('role', c ->> 'role', true), set_config('request.jwt.claims', c::text, true);
END
$$`,
  },
};
const authorizeSql = ({ comment, body }) => `CREATE OR REPLACE FUNCTION ${GATEWAY_SCHEMA}.authorize(token text)
${body};
REVOKE ALL ON FUNCTION ${AUTHORIZE} FROM PUBLIC;
COMMENT ON FUNCTION ${AUTHORIZE} IS '${comment.replace(/'/g, "''")}'`;
async function ensureSchema(pool) {
  const { rows } = await pool.query("SELECT to_regnamespace($1) IS NOT NULL AS present", [GATEWAY_SCHEMA]);
  if (!rows[0].present) {
    try {
      await pool.query(`CREATE SCHEMA IF NOT EXISTS ${GATEWAY_SCHEMA};` +
        ` GRANT USAGE ON SCHEMA ${GATEWAY_SCHEMA} TO bridgecore_app, bridgecore_admin`);
    } catch (e) {
      throw new StartupError(`cannot create the schema ${GATEWAY_SCHEMA} (${e.message}): create it once as a role that may`);
    }
  }
  try {
    // The catalog, not to_regprocedure: the login role need have no USAGE on bridgecore.
    const fn = await pool.query("SELECT obj_description(to_regprocedure($1), 'pg_proc') AS comment," +
      " has_function_privilege(to_regprocedure($1), 'EXECUTE') AS runs," +
      " EXISTS (SELECT FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace" +
      "   WHERE n.nspname = 'bridgecore' AND p.proname = 'authorize' AND p.proargtypes = '25'" +
      "     AND has_function_privilege('bridgecore_anon', p.oid, 'EXECUTE')) AS extension_authorizes", [AUTHORIZE]);
    const wanted = AUTHORIZE_BODIES[fn.rows[0].extension_authorizes ? "current" : "verifyToken"];
    if (fn.rows[0].comment === wanted.comment && fn.rows[0].runs) return true;
    await pool.query(authorizeSql(wanted));    // one message: one implicit transaction
    return true;
  } catch (e) {
    // Without it a known token's call is the message of verifyStatement
    // and the call (the same checks, one simple-protocol exchange).
    console.error(`bridgecore gateway: cannot create the function ${AUTHORIZE} (${e.message}); calls go without it.` +
      ` Let the gateway's login role own the schema ${GATEWAY_SCHEMA}.`);
    return false;
  }
}

// What a ring's outcome says, for the answer's message.
const RING_MESSAGES = {
  woken: (i) => `the poller of instance "${i}" fetches now`,
  coalesced: (i) => `a fetch of instance "${i}" is already due; this ring joins it`,
  no_poller: (i) => `no poller runs for instance "${i}" (disabled or starting); it fetches when it starts`,
};

// The pushed body's event id: event_id (the cron envelope) or
// _webhook_metadata.event_id (the instant push), when a string or a number.
export function pushedEventId(body) {
  for (const v of [body.event_id, body._webhook_metadata?.event_id]) {
    if (typeof v === "string" || (typeof v === "number" && Number.isFinite(v))) return v;
  }
  return null;
}

// The outcome label of a refused ring, by HTTP status.
const refusedOutcome = (status) => (status === 401 ? "refused" : status === 429 ? "rate_limited" : "error");

// A shard's conninfo (libpq's key=value form, values single-quoted with
// backslash escapes where they hold spaces, or a postgresql:// URI) as pg
// client settings: host, port, database and the TLS mode. Anything else it
// cannot read is an error, not a silent default.
export function parseConninfo(text) {
  const c = {};
  if (/^postgres(ql)?:\/\//.test(text)) {
    const url = new URL(text);
    if (url.hostname) c.host = decodeURIComponent(url.hostname);
    if (url.port) c.port = url.port;
    if (url.pathname.length > 1) c.dbname = decodeURIComponent(url.pathname.slice(1));
    for (const [k, v] of url.searchParams) c[k] = v;
  } else {
    const re = /\s*([A-Za-z_]+)\s*=\s*(?:'((?:[^'\\]|\\.)*)'|([^\s']+))/y;
    let m;
    let end = 0;
    while ((m = re.exec(text)) !== null) {
      c[m[1]] = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3];
      end = re.lastIndex;
    }
    if (text.slice(end).trim() !== "") throw new StartupError(`cannot read the shard conninfo "${text}" after "${text.slice(0, end)}"`);
  }
  const known = new Set(["host", "hostaddr", "port", "dbname", "sslmode", "connect_timeout", "application_name"]);
  const unknown = Object.keys(c).filter((k) => !known.has(k));
  if (unknown.length) throw new StartupError(`the shard conninfo "${text}" has settings the gateway cannot apply: ${unknown.join(", ")}`);
  const sslmode = c.sslmode ?? "prefer";
  return {
    // libpq's default is the local socket directory; node-postgres' would be TCP to localhost.
    host: c.host ?? c.hostaddr ?? process.env.PGHOST ?? "/var/run/postgresql",
    port: c.port ? Number(c.port) : undefined,
    database: c.dbname,
    ssl: ["require", "verify-ca", "verify-full"].includes(sslmode) ? { rejectUnauthorized: sslmode !== "require" } : undefined,
  };
}

// The LISTEN connections for a router: one per shard (bridgecore.shard,
// which an administrator reads), at the shard's host, port and database,
// as the gateway's own login (add_shard refuses a user or a password).
async function shardListenTargets(pool, databaseUrl) {
  let shards;
  try {
    shards = JSON.parse(await callAs(pool, null, () => ({
      text: "SELECT coalesce(json_agg(json_build_object('name', s.name, 'conninfo', s.conninfo) ORDER BY s.id), '[]')::text AS r" +
        " FROM bridgecore.shard s",
    }), "bridgecore_admin"));
  } catch (e) {
    throw new StartupError(`cannot read the router's shards (${e.message}): the gateway's login role must be able to SET ROLE bridgecore_admin`);
  }
  if (shards.length === 0) throw new StartupError("the router has no shard (bridgecore.add_shard())");
  let url;
  try {
    url = new URL(databaseUrl);
  } catch {
    throw new StartupError("DATABASE_URL must be a postgresql:// URI for the gateway to LISTEN on a router's shards");
  }
  const user = decodeURIComponent(url.username) || url.searchParams.get("user") || undefined;
  const password = decodeURIComponent(url.password) || url.searchParams.get("password") || undefined;
  return shards.map(({ conninfo }) => ({ ...parseConninfo(conninfo), user, password }));
}

export async function startGateway(config) {
  const metrics = new GatewayMetrics();
  const pool = new pg.Pool({ connectionString: config.databaseUrl, max: 10, connectionTimeoutMillis: 5000 });
  pool.on("error", () => {});   // an idle connection that dies is replaced on next use
  let listenTargets = config.databaseUrl;
  try {
    const { router } = await checkDatabase(pool, config.secret);
    if (await ensureSchema(pool)) poolsWithAuthorize.add(pool);
    // A router sends no NOTIFY: the gateway LISTENs on its shards.
    if (router) listenTargets = await shardListenTargets(pool, config.databaseUrl);
  } catch (e) {
    await pool.end();
    throw e;
  }

  // Standbys answer sync pulls that carry a token; one that is down or
  // behind at start is used once it answers (its pool connects lazily).
  const standbys = [];
  for (const url of config.standbyUrls ?? []) {
    const standby = new pg.Pool({ connectionString: url, max: 10, connectionTimeoutMillis: 2000 });
    standby.on("error", () => {});
    standbys.push(standby);
    try {
      const { rows } = await standby.query(
        "SELECT pg_is_in_recovery() AS recovering, EXISTS (SELECT FROM pg_catalog.pg_proc p" +
        " JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 AND p.proname = 'authorize') AS authorize",
        [GATEWAY_SCHEMA]);
      if (!rows[0].recovering) console.error("bridgecore gateway: a DATABASE_STANDBY_URLS server is not a standby; pulls go there all the same");
      if (rows[0].authorize && poolsWithAuthorize.has(pool)) poolsWithAuthorize.add(standby);
    } catch (e) {
      console.error(`bridgecore gateway: a standby does not answer yet (${e.message}); its pulls go to the primary until it does`);
    }
  }
  let nextStandby = 0;

  // A sync pull with a sync_token on a standby, or on the primary when the
  // standby is down, behind (40001) or refuses (25006): the answer is the
  // same either way (docs/sql-api.md, "Hot standbys").
  async function pullOnStandby(token, build) {
    const standby = standbys[nextStandby++ % standbys.length];
    try {
      const answer = await callAs(standby, token, build);
      metrics.countStandbyPull("answered");
      return answer;
    } catch (e) {
      const code = sqlstateOf(e);
      if (fromError(e).status !== 503 && code !== "40001" && code !== "25006") throw e;
      metrics.countStandbyPull("fell_back");
      return callAs(pool, token, build);
    }
  }

  const hub = new NotificationHub(listenTargets);
  try {
    await hub.start();
  } catch (e) {
    await hub.close();
    await pool.end();
    await Promise.all(standbys.map((p) => p.end().catch(() => {})));
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
    if (path === "/metrics") {
      if (req.method !== "GET") throw methodNotAllowed("GET");
      // The extension's families, then the gateway's; without the database,
      // the gateway's alone (bridgecore_gateway_database_up 0).
      let extension = "";
      try {
        extension = await callAs(pool, null, () => ({ text: "SELECT bridgecore.metrics() AS r" }), "bridgecore_monitor");
        if (extension && !extension.endsWith("\n")) extension += "\n";
        metrics.databaseUp = 1;
      } catch {
        metrics.databaseUp = 0;
      }
      metrics.setWebsocketConnections(websocket.connections);
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Cache-Control": "no-store" });
      return void res.end(extension + metrics.render());
    }
    if (path === RECEIVE_PATH) {
      if (req.method !== "POST") throw methodNotAllowed("POST");
      return receive(req, res);
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
    const build = (claims) => functionCall(route.fn, route.args, requestValues(route, url, body, claims));
    if (route.fn === "sync_pull" && standbys.length > 0 && typeof body.sync_token === "string" && body.sync_token !== "") {
      return sendJson(res, 200, await pullOnStandby(token, build));
    }
    return sendJson(res, 200, await callAs(pool, token, build));
  }

  // The doorbell: an X-API-Key (the instance's push key, which names it) or
  // an admin token (whose instance claim names it). Stores nothing: it
  // wakes the instance's poller (bridgecore.ring / bridgecore.wake).
  async function receive(req, res) {
    const key = req.headers["x-api-key"];
    let token = null;
    if (key === undefined) {
      try {
        token = requireToken(req);
      } catch (e) {
        metrics.countRing("", "refused");
        throw e;
      }
    }
    const body = parseObject(await readBody(req, config.maxBodySize));
    let instance = "";
    let result;
    try {
      const text = key !== undefined
        ? await callAs(pool, null, () => ({
          text: "SELECT bridgecore.ring($1, $2)::text AS r", values: [key, req.socket.remoteAddress ?? null] }))
        : await callAs(pool, token, (claims) => {
          instance = claims.instance ?? "";
          if (claims.role !== "bridgecore_admin") {
            throw new HttpError(401, "the doorbell takes the instance's push key (X-API-Key) or an admin token",
              { headers: { "WWW-Authenticate": 'Bearer realm="bridgecore", error="insufficient_scope"' } });
          }
          return { text: "SELECT bridgecore.wake($1)::text AS r", values: [claims.instance ?? null] };
        });
      result = JSON.parse(text);
    } catch (e) {
      metrics.countRing(instance, refusedOutcome(fromError(e).status));
      throw e;
    }
    metrics.countRing(result.instance, result.outcome);
    return sendJson(res, 200, JSON.stringify({
      success: true,
      message: (RING_MESSAGES[result.outcome] ?? ((i) => `instance "${i}" rung`))(result.instance),
      event_id: pushedEventId(body),
      processed_at: new Date().toISOString(),
    }));
  }

  const server = createServer((req, res) => {
    const started = process.hrtime.bigint();
    res.once("finish", () => {
      const path = (req.url ?? "/").split("?")[0].replace(/\/+$/, "") || "/";
      metrics.observeRequest(KNOWN_PATHS.has(path) ? path : "other", res.statusCode,
        Number(process.hrtime.bigint() - started) / 1e9);
    });
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
    metrics,
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
      await Promise.all(standbys.map((p) => p.end().catch(() => {})));
    },
  };
}

function methodNotAllowed(allowed) {
  return new HttpError(405, "Method Not Allowed", { headers: { Allow: allowed } });
}
