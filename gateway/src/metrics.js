// The gateway's own Prometheus metric families, served by GET /metrics
// after the extension's (bridgecore.metrics()). Names differ from every
// family of the extension, so no family appears twice.

// Upper bounds of the request duration buckets, in seconds (then +Inf).
const DURATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const escapeLabel = (v) => String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
const labels = (obj) => {
  const parts = Object.entries(obj).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
};
const family = (name, type, help, lines) => `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${lines.join("")}`;

// A counter by label values: key is the JSON of the values.
class LabeledCounter {
  constructor(labelNames) {
    this.labelNames = labelNames;
    this.values = new Map();
  }
  inc(...values) {
    const key = JSON.stringify(values.map(String));
    this.values.set(key, (this.values.get(key) ?? 0) + 1);
  }
  samples(name) {
    return [...this.values].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([key, n]) => {
      const vals = JSON.parse(key);
      return `${name}${labels(Object.fromEntries(this.labelNames.map((l, i) => [l, vals[i]])))} ${n}\n`;
    });
  }
}

export class GatewayMetrics {
  constructor() {
    this.requests = new LabeledCounter(["route", "status"]);
    this.rings = new LabeledCounter(["instance", "outcome"]);
    this.standbyPulls = new LabeledCounter(["outcome"]);
    this.durations = new Map();    // route -> { buckets, sum, count }
    this.websockets = 0;
    this.databaseUp = 1;
  }

  // A request answered: its route (a known path, or "other"), its status
  // and how long it took.
  observeRequest(route, status, seconds) {
    this.requests.inc(route, status);
    let d = this.durations.get(route);
    if (!d) this.durations.set(route, (d = { buckets: new Array(DURATION_BUCKETS.length).fill(0), sum: 0, count: 0 }));
    for (let i = 0; i < DURATION_BUCKETS.length; i++) if (seconds <= DURATION_BUCKETS[i]) d.buckets[i]++;
    d.sum += seconds;
    d.count++;
  }

  // A doorbell ring: the instance it named ("" when none) and its outcome
  // (woken, coalesced, no_poller, refused, rate_limited, error).
  countRing(instance, outcome) {
    this.rings.inc(instance ?? "", outcome);
  }

  // A sync pull sent to a standby: answered there, or answered by the
  // primary after the standby could not (fell_back).
  countStandbyPull(outcome) {
    this.standbyPulls.inc(outcome);
  }

  // The open WebSocket connections (GraphQL subscriptions): their server
  // sets the number, or moves it by one.
  setWebsocketConnections(n) {
    this.websockets = Math.max(0, Math.trunc(n));
  }
  websocketOpened() {
    this.websockets++;
  }
  websocketClosed() {
    this.websockets = Math.max(0, this.websockets - 1);
  }

  render() {
    const durationLines = [];
    for (const route of [...this.durations.keys()].sort()) {
      const d = this.durations.get(route);
      DURATION_BUCKETS.forEach((le, i) =>
        durationLines.push(`bridgecore_gateway_request_duration_seconds_bucket${labels({ route, le: String(le) })} ${d.buckets[i]}\n`));
      durationLines.push(`bridgecore_gateway_request_duration_seconds_bucket${labels({ route, le: "+Inf" })} ${d.count}\n`);
      durationLines.push(`bridgecore_gateway_request_duration_seconds_sum${labels({ route })} ${d.sum}\n`);
      durationLines.push(`bridgecore_gateway_request_duration_seconds_count${labels({ route })} ${d.count}\n`);
    }
    return [
      family("websocket_connections_active", "gauge", "Open WebSocket connections (GraphQL subscriptions).",
        [`websocket_connections_active ${this.websockets}\n`]),
      family("bridgecore_push_rings_total", "counter", "Doorbell rings (POST /api/v1/webhooks/receive) by instance and outcome.",
        this.rings.samples("bridgecore_push_rings_total")),
      family("bridgecore_gateway_requests_total", "counter", "HTTP requests answered by the gateway, by route and status.",
        this.requests.samples("bridgecore_gateway_requests_total")),
      family("bridgecore_gateway_request_duration_seconds", "histogram", "Time from a request's arrival to the end of its answer, by route.",
        durationLines),
      family("bridgecore_gateway_standby_pulls_total", "counter", "Sync pulls sent to a standby, by outcome (answered there, or fell_back to the primary).",
        this.standbyPulls.samples("bridgecore_gateway_standby_pulls_total")),
      family("bridgecore_gateway_database_up", "gauge", "1 when the last read of bridgecore.metrics() succeeded, else 0.",
        [`bridgecore_gateway_database_up ${this.databaseUp}\n`]),
    ].join("");
  }
}
