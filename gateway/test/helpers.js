// What the gateway's test files share: tokens made by the database (the
// gateway has no signer of its own) and conditions waited on with deadlines.

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
