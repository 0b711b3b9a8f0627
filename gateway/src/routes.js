// The REST routes of the mobile apps (the middleware's paths, parameters and
// bodies), each a call of one bridgecore function: the rules (validation,
// user and instance binding, rate limits, privileges) are the extension's.
import { HttpError } from "./http.js";

// [name, PostgreSQL type, required] of the arguments a route passes, by
// name; an argument that is absent (or null, or an empty query parameter)
// gets the function's default, or is passed as NULL when it has none (so
// that the function says which is missing).
const PULL = [["user_id", "bigint", true], ["device_id", "text", true], ["app_type", "text", true], ["limit", "integer"],
  ["models_filter", "text[]"], ["instance", "text"], ["sync_token", "text"], ["device_info", "jsonb"],
  ["app_version", "text"]];
const DEVICE = [["user_id", "bigint", true], ["device_id", "text", true], ["instance", "text"]];
const EVENTS = [["model_name", "text"], ["record_id", "bigint"], ["event", "text"], ["since", "timestamptz"],
  ["limit", "integer"], ["offset", "integer"], ["priority", "text"], ["category", "text"], ["instance", "text"]];
const CHECK_UPDATES = [["since", "timestamptz"], ["limit", "integer"], ["instance", "text"]];
const CLEANUP = [["before", "timestamptz"], ["instance", "text"]];
const SCOPE = [["app_type", "text", true], ["instance", "text"]];

// The arguments of each function, for the REST routes and GraphQL alike.
export const ARGS = { sync_pull: PULL, sync_state: DEVICE, sync_reset: DEVICE, events: EVENTS, check_updates: CHECK_UPDATES,
  cleanup: CLEANUP, sync_scope: SCOPE };

// from: where the arguments come from; bindUser: an omitted user_id is the
// token's.
export const ROUTES = {
  "/api/v2/sync/pull": { method: "POST", fn: "sync_pull", args: PULL, from: "body", bindUser: true },
  "/api/v2/sync/state": { method: "GET", fn: "sync_state", args: DEVICE, from: "query", bindUser: true },
  "/api/v2/sync/reset": { method: "POST", fn: "sync_reset", args: DEVICE, from: "query+body", bindUser: true },
  "/api/v1/webhooks/events": { method: "GET", fn: "events", args: EVENTS, from: "query" },
  "/api/v1/webhooks/check-updates": { method: "GET", fn: "check_updates", args: CHECK_UPDATES, from: "query" },
  "/api/v1/webhooks/cleanup": { method: "DELETE", fn: "cleanup", args: CLEANUP, from: "query" },
};

function convert(name, type, value) {
  if (type === "jsonb") return JSON.stringify(value);
  if (type === "text[]") {
    if (!Array.isArray(value)) throw new HttpError(400, `${name} must be a list of strings`, { code: "22023" });
    return value.map((v) => (typeof v === "string" ? v : JSON.stringify(v)));
  }
  if (typeof value === "object") throw new HttpError(400, `${name} must be a ${type === "text" ? "string" : "number"}`, { code: "22023" });
  return String(value);
}

// The SELECT of a function with the given arguments, named, as text (sent
// to the client as it is).
export function functionCall(fn, args, values) {
  const sqlArgs = [];
  const params = [];
  for (const [name, type, required] of args) {
    const v = values[name];
    if (v === undefined || v === null) {
      if (required) sqlArgs.push(`"${name}" => NULL::${type}`);
      continue;
    }
    params.push(convert(name, type, v));
    sqlArgs.push(`"${name}" => $${params.length}::${type}`);
  }
  return { text: `SELECT bridgecore.${fn}(${sqlArgs.join(", ")})::text AS r`, values: params };
}

// The arguments of a request: query parameters (empty ones left out), the
// JSON body, or both (the query wins).
export function requestValues(route, url, body, claims) {
  const values = {};
  if (route.from.includes("body")) Object.assign(values, body);
  if (route.from.includes("query")) {
    for (const [k, v] of url.searchParams) if (v !== "") values[k] = v;
  }
  return route.bindUser ? bindUser(values, claims) : values;
}

// An omitted user_id is the token's (the function checks a given one).
export function bindUser(values, claims) {
  if ((values.user_id === undefined || values.user_id === null) && claims?.user_id != null) values.user_id = claims.user_id;
  return values;
}
