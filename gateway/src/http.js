// Answers and errors. Every error body, on every route, is
// {"detail": message, "code": SQLSTATE or null, "hint": hint or null}.

export class HttpError extends Error {
  constructor(status, detail, { code = null, hint = null, headers = {} } = {}) {
    super(detail);
    this.status = status;
    this.code = code;
    this.hint = hint;
    this.headers = headers;
  }
}

// Errors of a database that cannot be reached or went away (no SQLSTATE).
const DOWN_ERRORS = new Set(["ECONNREFUSED", "ECONNRESET", "ENOENT", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH"]);
const DOWN_SQLSTATES = new Set(["57P01", "57P02", "57P03", "53300"]);

// The SQLSTATE of an error the database sent, or null (a client or network
// error, or one of the gateway's own).
export function sqlstateOf(err) {
  return typeof err?.code === "string" && /^[0-9A-Z]{5}$/.test(err.code) ? err.code : null;
}

// The HTTP status of an SQLSTATE (docs/gateway.md, Errors).
export function statusOf(code) {
  if (/^PT[1-5][0-9][0-9]$/.test(code)) return Number(code.slice(2));
  if (code === "P0002") return 404;
  if (code === "42501") return 403;
  if (code === "23505") return 409;
  if (code === "38000") return 502;
  if (code === "57014") return 504;
  if (DOWN_SQLSTATES.has(code)) return 503;
  switch (code.slice(0, 2)) {
    case "22": return 400;
    case "28": return 401;
    case "08": return 503;
    default: return 500;
  }
}

// An error of pg (or of the gateway) as an HttpError.
export function fromError(err) {
  if (err instanceof HttpError) return err;
  const code = sqlstateOf(err);
  if (code === null) {
    if (DOWN_ERRORS.has(err?.code) || /Connection terminated|connect|timeout/i.test(err?.message ?? "")) {
      return new HttpError(503, "the database is unavailable", { hint: "Retry later." });
    }
    return new HttpError(500, "internal error");
  }
  if (DOWN_SQLSTATES.has(code)) return new HttpError(503, "the database is unavailable", { code, hint: "Retry later." });
  const status = statusOf(code);
  const headers = {};
  if (status === 429) {
    const m = /Retry in (\d+) seconds?/.exec(err.hint ?? "");
    headers["Retry-After"] = m ? m[1] : "60";
  }
  if (status === 401) headers["WWW-Authenticate"] = 'Bearer realm="bridgecore"';
  return new HttpError(status, err.message, { code, hint: err.hint ?? null, headers });
}

// One write with Content-Length: without it node:http sends the answer
// chunked after writeHead.
export function sendJson(res, status, text, headers = {}) {
  if (res.headersSent) return void res.end();
  const body = Buffer.from(text, "utf8");
  res.writeHead(status, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store",
    "Content-Length": body.length, ...headers });
  res.end(body);
}

export function sendError(res, err) {
  const e = fromError(err);
  sendJson(res, e.status, JSON.stringify({ detail: e.message, code: e.code, hint: e.hint }), e.headers);
}

// The body as text, at most limit bytes (413 beyond, without reading on).
export function readBody(req, limit) {
  const declared = Number(req.headers["content-length"]);
  if (declared > limit) return Promise.reject(tooLarge(limit));
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners("data");
        req.pause();
        reject(tooLarge(limit));
      } else chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function tooLarge(limit) {
  return new HttpError(413, `request body larger than ${limit} bytes`, { headers: { Connection: "close" } });
}

// A JSON object from a body; an empty body is {}.
export function parseObject(text) {
  if (text.trim() === "") return {};
  let value;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new HttpError(400, `malformed JSON body: ${e.message}`, { hint: "Send a JSON object." });
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new HttpError(400, "the body must be a JSON object", { hint: "Send a JSON object." });
  }
  return value;
}
