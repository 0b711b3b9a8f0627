// HS256 JSON Web Tokens, as the extension signs them (src/jwt.c): the
// gateway verifies every request's token itself, with the same secret.
import { createHmac, timingSafeEqual } from "node:crypto";

// The roles a token may carry; anything else is refused (401).
export const ROLES = new Set(["bridgecore_app", "bridgecore_admin"]);

const b64url = (buf) => Buffer.from(buf).toString("base64url");

export function sign(claims, secret) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify(claims));
  const mac = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(mac)}`;
}

export class TokenError extends Error {}

function decodePart(part, what) {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) throw new TokenError(`the token's ${what} is not base64url`);
  try {
    return JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
  } catch {
    throw new TokenError(`the token's ${what} is not JSON`);
  }
}

// The claims of a valid token, or a TokenError saying why not.
export function verify(token, secret, now = Date.now() / 1000) {
  if (typeof token !== "string" || token.length > 8192) throw new TokenError("no usable token");
  const parts = token.split(".");
  if (parts.length !== 3) throw new TokenError("the token is not a JWT");
  const [head, body, sig] = parts;
  const want = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  const got = /^[A-Za-z0-9_-]+$/.test(sig) ? Buffer.from(sig, "base64url") : Buffer.alloc(0);
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new TokenError("the token's signature does not match");
  const header = decodePart(head, "header");
  if (header?.alg !== "HS256") throw new TokenError("the token's algorithm is not HS256");
  const claims = decodePart(body, "claims");
  if (claims === null || typeof claims !== "object" || Array.isArray(claims)) throw new TokenError("the token's claims are not an object");
  if (typeof claims.exp !== "number") throw new TokenError("the token has no exp claim");
  if (now >= claims.exp) throw new TokenError("the token has expired");
  if (typeof claims.nbf === "number" && now < claims.nbf) throw new TokenError("the token is not valid yet");
  if (!ROLES.has(claims.role)) throw new TokenError("the token's role is not bridgecore_app or bridgecore_admin");
  return claims;
}
