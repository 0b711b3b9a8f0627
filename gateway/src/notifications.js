// One LISTEN bridgecore_events connection for every subscriber of the
// gateway (one per shard when the database is a router). The extension sends one NOTIFY per (instance, model) and store,
// at commit, with the payload {"instance", "model", "count", "max_id",
// "high"} (docs/sql-api.md, Notifications); each subscriber gets those of
// its scope (bridgecore.sync_scope: its instance, its app type's models).
//
// When the connection is lost the hub connects and LISTENs again (at once,
// then backing off up to 5 s), and then tells every subscriber that
// announcements may have been missed (MISSED): pulling after the new LISTEN
// loses nothing, as in the extension's "LISTEN, then pull".
import pg from "pg";

export const CHANNEL = "bridgecore_events";
export const LISTENER_APPLICATION_NAME = "bridgecore gateway listener";
// A subscriber that does not read its messages keeps at most this many;
// beyond, they collapse into one MISSED.
const MAX_QUEUE = 1000;
const PING_MS = 30_000;
const MAX_BACKOFF_MS = 5_000;

// A subscriber's messages: pulled with next() (an async iterator, for
// PostGraphile's executor), or, once attach(out) is called, handed to out
// as they come (the gateway's short way: graphql.js, syncAvailableStream).
class Subscription {
  constructor(hub, scope) {
    this.hub = hub;
    this.instance = scope.instance;
    this.models = new Set(scope.models);
    this.queue = [];
    this.waiter = null;
    this.done = false;
    this.out = null;
    this.blocked = false;       // attached: a write waits for the socket to take it
    this.ended = null;          // attached: a promise of { done: true }, resolved by end()
    this.finish = null;
  }

  // message: the hub's message; rendered: a Map (out.shape -> out.render's
  // result) shared by the subscribers of one notification, so that each
  // rendering is made once per notification.
  push(message, rendered) {
    if (this.done) return;
    if (this.out) {
      if (!this.blocked) return this.#send(message, rendered);
    } else if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      return w({ value: message, done: false });
    }
    if (this.queue.length >= MAX_QUEUE) {
      this.queue = [{ reason: "MISSED", instance: this.instance }];
    } else {
      this.queue.push(message);
    }
  }

  // From now on the messages go to out as they come, instead of to next():
  // out.shape (a string) names out.render, which turns a message into the
  // text out.send(text[, flushed]) writes; out.open() says whether the
  // socket takes writes, out.buffered() how many bytes it has not handed to
  // the kernel yet. A socket that does not take what it is given (its
  // client does not read) gets nothing more until it has; meanwhile its
  // messages wait in the queue, at most MAX_QUEUE, as for next(). The
  // messages queued so far (LISTENING) are sent now. Returns a promise of
  // { done: true } at the end of the subscription (also the answer of every
  // later next()).
  attach(out) {
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    if (!this.out) {
      this.out = out;
      this.ended = new Promise((resolve) => {
        this.finish = resolve;
      });
      this.#drain();
    }
    return this.ended;
  }

  #send(message, rendered) {
    const out = this.out;
    if (!out.open()) return;    // closing: graphql-ws ends the subscription
    let text = rendered?.get(out.shape);
    if (text === undefined) {
      text = out.render(message);
      rendered?.set(out.shape, text);
    }
    if (out.buffered() > 0) {
      this.blocked = true;
      out.send(text, () => {
        this.blocked = false;
        this.#drain();
      });
    } else {
      out.send(text);
    }
  }

  #drain() {
    while (!this.done && !this.blocked && this.queue.length > 0) this.#send(this.queue.shift(), null);
  }

  next() {
    if (this.out) return this.ended;
    if (this.queue.length > 0) return Promise.resolve({ value: this.queue.shift(), done: false });
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  end() {
    if (this.done) return;
    this.done = true;
    this.queue = [];
    this.hub.remove(this);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w({ value: undefined, done: true });
    }
    this.finish?.({ value: undefined, done: true });
  }

  return() {
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  throw(err) {
    this.end();
    return Promise.reject(err);
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}

export class NotificationHub {
  // targets: the connection string of the database, or a list of pg
  // client settings (strings or objects), one LISTEN connection each: the
  // shards behind a router, whose notifications are all this hub's.
  constructor(targets, { log = (m) => console.error(`bridgecore gateway: ${m}`) } = {}) {
    this.targets = (Array.isArray(targets) ? targets : [targets])
      .map((t) => (typeof t === "string" ? { connectionString: t } : t));
    this.log = log;
    this.clients = this.targets.map(() => null);
    this.byInstance = new Map();   // instance name -> Set of Subscription
    this.count = 0;
    this.closed = false;
    this.reconnecting = null;
    this.ping = null;
    this.listens = 0;              // LISTENs done (1 per target after start, +1 per reconnect)
  }

  get subscribers() {
    return this.count;
  }

  // Every LISTEN connection is up.
  get listening() {
    return this.clients.every((c) => c !== null);
  }

  // The first LISTENs; an error here is the caller's (the gateway does not start).
  async start() {
    await Promise.all(this.targets.map((_, i) => this.#listen(i)));
    this.ping = setInterval(() => {
      this.clients.forEach((c, i) => {
        if (c) c.query("SELECT 1").catch(() => this.#lost(i, c, "the listener did not answer"));
      });
    }, PING_MS);
    this.ping.unref();
  }

  async #listen(i) {
    const client = new pg.Client({ ...this.targets[i], application_name: LISTENER_APPLICATION_NAME, keepAlive: true });
    client.on("error", (e) => this.#lost(i, client, e.message));
    client.on("end", () => this.#lost(i, client, "the connection ended"));
    try {
      await client.connect();
      client.on("notification", (m) => this.#dispatch(m.payload));
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (e) {
      client.removeAllListeners();
      client.on("error", () => {});
      client.end().catch(() => {});
      throw e;
    }
    if (this.closed) {
      client.end().catch(() => {});
      return;
    }
    this.clients[i] = client;
    this.listens += 1;
  }

  #lost(i, client, why) {
    if (client !== this.clients[i] || this.closed) return;
    this.clients[i] = null;
    client.removeAllListeners();
    client.on("error", () => {});
    client.end().catch(() => {});
    this.log(`lost the LISTEN connection${this.targets.length > 1 ? ` ${i}` : ""} (${why}); connecting again`);
    this.reconnecting = this.#reconnect(i);
  }

  async #reconnect(i) {
    let delay = 0;
    while (!this.closed) {
      if (delay > 0) await new Promise((r) => setTimeout(r, delay).unref());
      if (this.closed) return;
      try {
        await this.#listen(i);
        this.log("listening again; subscribers are told to pull");
        this.#broadcastMissed();
        return;
      } catch (e) {
        delay = Math.min(MAX_BACKOFF_MS, Math.max(100, delay * 2));
        this.log(`cannot LISTEN (${e.message}); retrying in ${delay} ms`);
      }
    }
  }

  #broadcastMissed() {
    for (const [instance, subs] of this.byInstance) {
      const message = { reason: "MISSED", instance };
      const rendered = new Map();
      for (const s of subs) s.push(message, rendered);
    }
  }

  #dispatch(payload) {
    let n;
    try {
      n = JSON.parse(payload);
    } catch {
      return;
    }
    const subs = this.byInstance.get(n?.instance);
    if (!subs) return;
    const message = { reason: "NOTIFIED", instance: n.instance, model: n.model, count: n.count, maxId: n.max_id, high: n.high };
    const rendered = new Map();
    for (const s of subs) if (s.models.has(n.model)) s.push(message, rendered);
  }

  // An async iterator of the messages of scope ({instance, models}); its
  // first message is LISTENING (or MISSED once the listener is back, while
  // it is away).
  subscribe(scope) {
    const s = new Subscription(this, scope);
    if (this.closed) {
      s.done = true;
      return s;
    }
    let set = this.byInstance.get(s.instance);
    if (!set) this.byInstance.set(s.instance, (set = new Set()));
    set.add(s);
    this.count += 1;
    if (this.listening) s.push({ reason: "LISTENING", instance: s.instance });
    return s;
  }

  remove(s) {
    const set = this.byInstance.get(s.instance);
    if (set?.delete(s)) {
      this.count -= 1;
      if (set.size === 0) this.byInstance.delete(s.instance);
    }
  }

  async close() {
    this.closed = true;
    clearInterval(this.ping);
    for (const subs of [...this.byInstance.values()]) for (const s of [...subs]) s.end();
    const clients = this.clients;
    this.clients = this.clients.map(() => null);
    await Promise.all(clients.filter((c) => c).map((c) => {
      c.removeAllListeners();
      c.on("error", () => {});
      return c.end().catch(() => {});
    }));
  }
}
