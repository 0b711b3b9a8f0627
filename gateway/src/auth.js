// Bearer tokens. The gateway verifies none itself: every token goes to
// bridgecore.verify_token (as bridgecore_anon, the role of requests without
// a token), which checks the signature, the expiry and the role with the
// database's bridgecore.jwt_secret. A token the database refuses is 401.
import { HttpError, sqlstateOf } from "./http.js";

export const REALM = 'Bearer realm="bridgecore"';

// The token of an Authorization header value, or null without one.
export function bearerToken(header) {
  if (header === undefined || header === null || header === "") return null;
  const m = /^Bearer +(\S+) *$/i.exec(String(header));
  if (!m) throw new HttpError(401, "the Authorization header must be Bearer <token>", { headers: { "WWW-Authenticate": REALM } });
  return m[1];
}

export function missingToken() {
  return new HttpError(401, "a bearer token is required", { headers: { "WWW-Authenticate": REALM } });
}

// The statement that verifies a token in the current transaction: as
// bridgecore_anon, then as the token's role with its claims in
// request.jwt.claims (as PostgREST sets them). Sent with the simple
// protocol after SET LOCAL ROLE: one round trip.
export function verifyStatement(client, token) {
  return "SET LOCAL ROLE bridgecore_anon; " +
    "SELECT c::text AS claims, set_config('role', c ->> 'role', true), set_config('request.jwt.claims', c::text, true)" +
    ` FROM bridgecore.verify_token(${client.escapeLiteral(token)}) AS c`;
}

// The result of verifyStatement as the claims object.
export function claimsOf(results) {
  const last = Array.isArray(results) ? results[results.length - 1] : results;
  return JSON.parse(last.rows[0].claims);
}

// An error of verify_token as the 401 of every route: the database's
// reason (the error's detail) is in the body.
export function tokenError(err) {
  if (typeof err?.code === "string" && (err.code.startsWith("28") || err.code === "PT401")) {
    return new HttpError(401, err.detail ? `${err.message}: ${err.detail}` : err.message,
      { code: err.code, hint: err.hint ?? null, headers: { "WWW-Authenticate": `${REALM}, error="invalid_token"` } });
  }
  return err;
}

// The claims of a token, verified by the database in a transaction of its
// own (one round trip: the simple protocol runs the statements as one
// implicit transaction, so SET LOCAL ends with it).
export async function verifyToken(pool, token) {
  let client;
  try {
    client = await pool.connect();
  } catch {
    throw new HttpError(503, "the database is unavailable", { hint: "Retry later." });
  }
  let broken = false;
  try {
    return claimsOf(await client.query(verifyStatement(client, token)));
  } catch (e) {
    broken = sqlstateOf(e) === null;
    throw tokenError(e);
  } finally {
    client.release(broken);
  }
}
