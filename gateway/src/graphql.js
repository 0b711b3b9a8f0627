// The GraphQL API of the apps: the queries and mutations of the middleware
// (webhookEvents, syncState, checkUpdates, syncPull, syncReset) and the
// syncAvailable subscription, added to PostGraphile's schema by hand so that
// the names and types are the contract's (Int ids, ISO timestamps), not the
// ones PostGraphile would derive. Each field is one call of a bridgecore
// function, with the same arguments as the REST route, in PostGraphile's
// transaction that carries the token's role and claims: the rules stay in
// the extension.
import { extendSchema } from "postgraphile/utils";
import { GraphQLError, Kind } from "postgraphile/graphql";
import { fromError } from "./http.js";
import { ARGS, functionCall, bindUser } from "./routes.js";

const typeDefs = /* GraphQL */ `
  "An event of the log, as bridgecore.sync_pull and bridgecore.events return it."
  type WebhookEvent {
    "The event's id in BridgeCore (the position a sync token counts)."
    id: Int!
    model: String!
    recordId: Int
    "create, write or unlink"
    event: String!
    "When it happened in Odoo, ISO 8601 in UTC with Z."
    timestamp: String!
    "The same as timestamp (the name of the REST events route)."
    occurredAt: String!
    priority: String
    category: String
    changedFields: [String!]
    payload: JSON
    "The Odoo user who made the change."
    userId: Int
    userName: String
  }

  "Filters of webhookEvents, as the query parameters of GET /api/v1/webhooks/events."
  input WebhookEventFilter {
    model: String
    recordId: Int
    "create, write or unlink"
    event: String
    "ISO 8601: events at or after it"
    since: String
    priority: String
    category: String
  }

  type ModelCount {
    model: String!
    count: Int!
  }

  "The answer of bridgecore.check_updates."
  type UpdateCheck {
    hasUpdate: Boolean!
    lastUpdateAt: String
    summary: [ModelCount!]!
    "The function's answer as it is."
    raw: JSON!
  }

  "The answer of bridgecore.sync_state."
  type SyncState {
    userId: Int!
    deviceId: String!
    appType: String
    lastEventId: Int!
    lastSyncTime: String
    syncCount: Int!
    isActive: Boolean!
    lastEventCount: Int
    totalEventsSynced: Int
    nextSyncToken: String!
    createdAt: String
    raw: JSON!
  }

  "The answer of bridgecore.sync_pull."
  type SyncPullResult {
    status: String!
    hasUpdates: Boolean!
    newEventsCount: Int!
    events: [WebhookEvent!]!
    "Pass it as syncToken in the next pull."
    nextSyncToken: String!
    lastSyncTime: String
    "More events wait: pull again."
    hasMore: Boolean!
    "The device's position is gone from the log: fetch everything again."
    resyncRequired: Boolean!
    raw: JSON!
  }

  type SyncResetResult {
    status: String!
    message: String!
  }

  "Why a syncAvailable message was sent."
  enum SyncAvailableReason {
    "The subscription is listening: pull now (anything committed from here on is announced)."
    LISTENING
    "New events of model were stored."
    NOTIFIED
    "Announcements may have been lost (the gateway's database listener reconnected, or this subscriber fell far behind): pull every model."
    MISSED
  }

  type SyncAvailable {
    reason: SyncAvailableReason!
    instance: String!
    "The model of the new events (NOTIFIED only)."
    model: String
    "How many events of model one store added (NOTIFIED only)."
    count: Int
    "The highest id among them (NOTIFIED only)."
    maxId: Int
    "How many of them have priority high (NOTIFIED only)."
    high: Int
  }

  extend type Query {
    "Events of the log, newest first (bridgecore.events)."
    webhookEvents(filter: WebhookEventFilter, limit: Int, offset: Int, instance: String): [WebhookEvent!]!
    "A device's sync state (bridgecore.sync_state); userId defaults to the token's."
    syncState(userId: Int, deviceId: String!, instance: String): SyncState!
    "Which models changed since a time (bridgecore.check_updates)."
    checkUpdates(since: String, limit: Int, instance: String): UpdateCheck!
  }

  extend type Mutation {
    "The next page of a device's events (bridgecore.sync_pull); userId defaults to the token's."
    syncPull(userId: Int, deviceId: String!, appType: String!, limit: Int, modelsFilter: [String!],
             syncToken: String, instance: String, deviceInfo: JSON, appVersion: String): SyncPullResult!
    "A device back to the start of the log (bridgecore.sync_reset)."
    syncReset(userId: Int, deviceId: String!, instance: String): SyncResetResult!
  }

  extend type Subscription {
    "One message per store of new events of the token's instance and the app type's models."
    syncAvailable(appType: String!): SyncAvailable!
  }
`;

const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());

// The keys of one level of an object in camelCase (payloads keep theirs).
function camelKeys(obj) {
  const out = {};
  for (const [k, v] of Object.entries(obj)) out[camel(k)] = v;
  return out;
}

function event(e) {
  const c = camelKeys(e);
  c.timestamp = e.timestamp ?? e.occurred_at;
  c.occurredAt = c.timestamp;
  return c;
}

// Runs a function of the extension in PostGraphile's transaction of the
// request (its role and claims) and returns its JSON answer.
async function call(ctx, fn, values) {
  const query = functionCall(fn, ARGS[fn], values);
  const { rows } = await ctx.withPgClient(ctx.pgSettings, (client) => client.query(query));
  return JSON.parse(rows[0].r);
}

// The token's claims, as the context carries them.
const claimsOf = (ctx) => (ctx.pgSettings?.["request.jwt.claims"] ? JSON.parse(ctx.pgSettings["request.jwt.claims"]) : {});

// hub: the NotificationHub whose single LISTEN serves every subscription.
export function bridgecorePlugin(hub) {
  return extendSchema(() => ({
    typeDefs,
    objects: {
      Query: {
        plans: {
          webhookEvents: {
            async resolve(_src, args, ctx) {
              const f = args.filter ?? {};
              const r = await call(ctx, "events", {
                model_name: f.model, record_id: f.recordId, event: f.event, since: f.since, priority: f.priority,
                category: f.category, limit: args.limit, offset: args.offset, instance: args.instance,
              });
              return r.data.map(event);
            },
          },
          syncState: {
            async resolve(_src, args, ctx) {
              const r = await call(ctx, "sync_state", bindUser({ user_id: args.userId, device_id: args.deviceId, instance: args.instance }, claimsOf(ctx)));
              return { ...camelKeys(r), raw: r };
            },
          },
          checkUpdates: {
            async resolve(_src, args, ctx) {
              const r = await call(ctx, "check_updates", { since: args.since, limit: args.limit, instance: args.instance });
              return { ...camelKeys(r), raw: r };
            },
          },
        },
      },
      Mutation: {
        plans: {
          syncPull: {
            async resolve(_src, args, ctx) {
              const r = await call(ctx, "sync_pull", bindUser({
                user_id: args.userId, device_id: args.deviceId, app_type: args.appType, limit: args.limit,
                models_filter: args.modelsFilter, sync_token: args.syncToken, instance: args.instance,
                device_info: args.deviceInfo, app_version: args.appVersion,
              }, claimsOf(ctx)));
              return { ...camelKeys(r), events: r.events.map(event), raw: r };
            },
          },
          syncReset: {
            async resolve(_src, args, ctx) {
              return call(ctx, "sync_reset", bindUser({ user_id: args.userId, device_id: args.deviceId, instance: args.instance }, claimsOf(ctx)));
            },
          },
        },
      },
      Subscription: {
        plans: {
          syncAvailable: {
            // The instance and models come from the database
            // (bridgecore.sync_scope, as the token's role and claims); the
            // hub only matches notifications against them.
            async subscribe(_src, args, ctx) {
              const scope = await call(ctx, "sync_scope", { app_type: args.appType });
              return hub.subscribe(scope);
            },
            resolve: (message) => message,
          },
        },
      },
    },
  }), "BridgeCorePlugin");
}

// PostgreSQL's errors as GraphQL errors with extensions.code (the
// SQLSTATE), detail, hint and status (the HTTP status the REST routes
// answer); other errors with an original error are masked.
export function maskError(error) {
  const orig = error.originalError;
  if (!orig) return error;   // a GraphQL error of the document itself
  const e = fromError(orig);
  if (e.status === 500 && e.code === null) {
    console.error(`bridgecore gateway: GraphQL: ${orig.stack ?? orig}`);
  }
  return new GraphQLError(e.message, {
    nodes: error.nodes, source: error.source, positions: error.positions, path: error.path,
    extensions: { code: e.code, detail: typeof orig.detail === "string" ? orig.detail : null, hint: e.hint, status: e.status },
  });
}

// The fields of SyncAvailable.
const SYNC_AVAILABLE_FIELDS = new Set(["reason", "instance", "model", "count", "maxId", "high", "__typename"]);
const INT_FIELDS = new Set(["count", "maxId", "high"]);

// A subscription document that is one syncAvailable field selecting plain
// fields of SyncAvailable (aliases allowed; no fragments, directives or
// variables with defaults) as {field (its node), key, appType, fields:
// [[alias, name, nodes]] (one per alias, in the document's order), shape (a
// string naming key and fields)}; otherwise null. Such a subscription, the
// one apps use, is answered by syncAvailableStream without running the
// GraphQL executor per message: with a thousand subscribers the executor's
// per-message work was about a third of the gateway's time to reach them
// all. The document has been validated against the schema already (so one
// alias names one field).
export function plainSyncAvailable(document, operationName, variableValues) {
  const ops = document.definitions.filter((d) => d.kind === Kind.OPERATION_DEFINITION);
  if (ops.length !== document.definitions.length) return null;
  const op = operationName ? ops.find((o) => o.name?.value === operationName) : ops.length === 1 ? ops[0] : null;
  if (!op || op.operation !== "subscription" || op.directives?.length) return null;
  if (op.variableDefinitions?.some((v) => v.defaultValue)) return null;
  const [field, ...more] = op.selectionSet.selections;
  if (more.length || field.kind !== Kind.FIELD || field.name.value !== "syncAvailable" || field.directives?.length) return null;
  if (field.arguments.length !== 1 || field.arguments[0].name.value !== "appType") return null;
  const value = field.arguments[0].value;
  const appType = value.kind === Kind.STRING ? value.value : value.kind === Kind.VARIABLE ? variableValues?.[value.name.value] : undefined;
  if (typeof appType !== "string") return null;
  const byAlias = new Map();
  for (const s of field.selectionSet.selections) {
    if (s.kind !== Kind.FIELD || s.directives?.length || s.arguments?.length || s.selectionSet || !SYNC_AVAILABLE_FIELDS.has(s.name.value)) return null;
    const alias = s.alias?.value ?? s.name.value;
    const f = byAlias.get(alias);
    if (f) f[2].push(s);
    else byAlias.set(alias, [alias, s.name.value, [s]]);
  }
  const key = field.alias?.value ?? "syncAvailable";
  const fields = [...byAlias.values()];
  return { field, key, appType, fields, shape: JSON.stringify([key, fields.map(([alias, name]) => [alias, name])]) };
}

// A hub message as the JSON text of the GraphQL result PostGraphile's
// executor gives for a plain subscription: the selected fields under their
// aliases in the document's order, null for what the message does not
// have; an Int field whose value is not a 32-bit integer is null with an
// error (the executor's: masked as an internal error, with its locations
// and path).
function renderResult(plain, m) {
  const out = {};
  let errors;
  for (const [alias, name, nodes] of plain.fields) {
    let v = name === "__typename" ? "SyncAvailable" : m[name] ?? null;
    if (INT_FIELDS.has(name) && v !== null && !(Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31)) {
      const why = new TypeError(`Int cannot represent ${Number.isInteger(v) ? "non 32-bit signed integer" : "non-integer"} value: ${v}`);
      (errors ??= []).push(maskError(new GraphQLError(why.message, { nodes, path: [plain.key, alias], originalError: why })));
      v = null;
    }
    out[alias] = v;
  }
  return JSON.stringify(errors ? { data: { [plain.key]: out }, errors } : { data: { [plain.key]: out } });
}

// A plain syncAvailable subscription (plainSyncAvailable), from the same
// scope (bridgecore.sync_scope) and hub as the field's resolver: an async
// iterator for graphql-ws whose first next() hands the subscription to
// frames (the socket's writer of this subscription's "next" messages: open(),
// buffered(), send(payloadText[, flushed])) and resolves only at its end:
// the hub writes each message itself, its JSON made once per notification
// for all the subscribers of one selection (shape), not through
// graphql-ws's per-message machinery. Or, when sync_scope fails, the
// executor's result for it (its error at the field, no data).
export async function syncAvailableStream(ctx, hub, plain, frames) {
  let scope;
  try {
    scope = await call(ctx, "sync_scope", { app_type: plain.appType });
  } catch (e) {
    return { errors: [maskError(new GraphQLError(e.message, { nodes: [plain.field], originalError: e }))] };
  }
  const sub = hub.subscribe(scope);
  const out = { ...frames, shape: plain.shape, render: (m) => renderResult(plain, m) };
  return {
    next: () => sub.attach(out),
    return: () => sub.return(),
    throw: (e) => sub.throw(e),
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
