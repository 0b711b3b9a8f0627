// What the gateway's test files share: tokens made by the database (the
// gateway has no signer of its own), HTTP calls, the error body's check and
// conditions waited on with deadlines.
import assert from "node:assert/strict";

// One HTTP call of the gateway at GATEWAY_URL: status, headers, the body
// as text and as JSON (null when it is not JSON).
export async function call(method, path, { bearer, body, raw, headers = {} } = {}) {
  const h = { ...headers };
  if (bearer) h.Authorization = `Bearer ${bearer}`;
  let payload = raw;
  if (body !== undefined) {
    payload = JSON.stringify(body);
    h["Content-Type"] = "application/json";
  }
  const res = await fetch(process.env.GATEWAY_URL + path, { method, headers: h, body: payload });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* not JSON: the test says so */
  }
  return { status: res.status, headers: res.headers, json, text };
}

// The error body of every route.
export function assertError(r, status, code = null) {
  assert.equal(r.status, status, r.text);
  assert.deepEqual(Object.keys(r.json).sort(), ["code", "detail", "hint"], r.text);
  assert.equal(typeof r.json.detail, "string");
  assert.equal(r.json.code, code, r.text);
}

// A token of claims signed by the database: with its bridgecore.jwt_secret,
// or with another secret for this one transaction (db is a superuser's).
export async function signToken(db, claims, secret = null) {
  if (secret === null) {
    const { rows } = await db.query("SELECT bridgecore._jwt_sign($1::jsonb) AS t", [JSON.stringify(claims)]);
    return rows[0].t;
  }
  await db.query("BEGIN");
  try {
    await db.query("SELECT set_config('bridgecore.jwt_secret', $1, true)", [secret]);
    const { rows } = await db.query("SELECT bridgecore._jwt_sign($1::jsonb) AS t", [JSON.stringify(claims)]);
    return rows[0].t;
  } finally {
    await db.query("COMMIT");
  }
}

// Resolves with the value of the promise, or rejects after ms saying what
// did not happen.
export function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Polls check() until it returns a truthy value (returned), at most ms.
export async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
