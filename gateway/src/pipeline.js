// A request's call with a token the gateway has seen, as one pipeline of the
// extended protocol: Bind and Execute of bridgecore_gateway.authorize(token)
// (the database's check of the token, then the token's role and
// request.jwt.claims for the transaction), Bind and Execute of the call,
// then one Sync. PostgreSQL runs what comes before a Sync as one implicit
// transaction: the call starts, and has its privileges checked, as the
// token's role; the role and the claims end with the call or with its error;
// an error of the check skips the call. One round trip, as a function that
// ran the call's text would be, without parsing and planning that text per
// request: each statement is prepared on a connection once it has completed
// there (again after a pipeline that failed, within the bounds below). The
// call's statement is parsed inside the pipeline, after the check, so as the
// token's role (the gateway's login role may have no USAGE on schema
// bridgecore, as documented); later executions check function privileges
// as the role of their own request (every token role has USAGE on the
// schema).
//
// Sent through node-postgres's submittable interface (client.query(object)
// with submit() and the handle* callbacks), which pg-cursor and
// pg-query-stream use too.
import { HttpError } from "./http.js";

// The statement of the check, prepared on each connection.
const AUTHORIZE_NAME = "bridgecore_gateway_authorize";
const AUTHORIZE_TEXT = "SELECT bridgecore_gateway.authorize($1)";

// Statement names by text. The calls' texts are few (one per route and set
// of arguments present), but a client chooses which arguments it sends:
// beyond these bounds a call goes as the unnamed statement, parsed each
// time, so that neither the gateway nor a server session holds more.
const MAX_NAMES = 1000;
const MAX_PER_CONNECTION = 100;
const names = new Map();
// Per connection: the statements known to exist there (parsed by a
// pipeline that completed), and every name ever sent in a Parse there (a
// pipeline that failed may have left it), which the bound applies to; a
// connection that is replaced starts empty.
const parsedOn = new WeakMap();

function statementName(text, state) {
  let name = names.get(text);
  if (name === undefined) {
    if (names.size >= MAX_NAMES) return "";
    names.set(text, (name = `bridgecore_gateway_call_${names.size + 1}`));
  }
  return state.sent.has(name) || state.sent.size < MAX_PER_CONNECTION ? name : "";
}

// A parameter as the text PostgreSQL reads: a string as it is, an array as
// an array literal of its elements, each quoted. Text with a NUL character
// cannot travel in the protocol.
export function parameter(v) {
  if (v === null || v === undefined) return null;
  const text = Array.isArray(v)
    ? `{${v.map((x) => (x === null ? "NULL" : `"${String(x).replace(/[\\"]/g, (c) => `\\${c}`)}"`)).join(",")}}`
    : String(v);
  if (text.includes("\0")) {
    throw new HttpError(400, "a value contains a NUL character", { code: "22021", hint: "Remove the \\u0000 from the value." });
  }
  return text;
}

export class AuthorizedCall {
  // query: { text, values } with $n placeholders (routes.js functionCall);
  // its one row's first column is the answer.
  constructor(token, query) {
    this.token = parameter(token);
    this.text = query.text;
    this.values = (query.values ?? []).map(parameter);    // throws before anything is sent
    this.completed = 0;     // CommandComplete messages seen: the check's, then the call's
    this.value = null;
    this.parsing = [];      // names this pipeline parses
    this.state = null;
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.promise.catch(() => {});   // awaited by the caller; an error after it gave up is not unhandled
  }

  submit(connection) {
    let state = parsedOn.get(connection);
    if (state === undefined) parsedOn.set(connection, (state = { parsed: new Set(), sent: new Set([AUTHORIZE_NAME]) }));
    this.state = state;
    const call = statementName(this.text, state);
    connection.stream.cork?.();
    try {
      this.prepare(connection, AUTHORIZE_NAME, AUTHORIZE_TEXT);
      connection.bind({ statement: AUTHORIZE_NAME, values: [this.token] });
      connection.execute({});
      this.prepare(connection, call, this.text);
      connection.bind({ statement: call, values: this.values });
      connection.execute({});
      connection.sync();
    } finally {
      connection.stream.uncork?.();
    }
    return null;
  }

  // A statement not known to exist on the connection is closed first (not
  // an error when there is none: a pipeline that failed may or may not have
  // parsed it), then parsed.
  prepare(connection, name, text) {
    if (name !== "" && this.state.parsed.has(name)) return;
    if (name !== "") connection.close({ type: "S", name });
    connection.parse({ name, text });
    if (name !== "") {
      this.parsing.push(name);
      this.state.sent.add(name);
    }
  }

  handleRowDescription() {}

  handleDataRow(msg) {
    if (this.completed === 1) this.value = msg.fields[0];
  }

  handleCommandComplete() {
    this.completed++;
  }

  handleEmptyQuery() {}

  handlePortalSuspended() {}

  handleCopyInResponse(connection) {
    connection.sendCopyFail("bridgecore gateway: no COPY here");
  }

  handleCopyData() {}

  // The database's error (the pipeline skips to the Sync), or the
  // connection's. A statement that should exist and does not (26000: a
  // DEALLOCATE, a pooler between) makes every statement of the connection
  // be closed and parsed again.
  handleError(err) {
    if (err?.code === "26000" && this.state !== null) this.state.parsed.clear();
    this.reject(err);
    this.callback?.(err);   // node-postgres's query_timeout wraps it
  }

  handleReadyForQuery() {
    for (const name of this.parsing) this.state.parsed.add(name);
    this.resolve(this.value);
    this.callback?.(null, this.value);
  }
}
