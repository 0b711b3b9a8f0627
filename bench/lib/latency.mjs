// What the gateway benchmarks' clients share: the gateway's packages, a
// graphql-ws client as apps open one, and latency percentiles.
import { createRequire } from "node:module";

export const require = createRequire(new URL("../../gateway/package.json", import.meta.url));
const { createClient } = require("graphql-ws");
const WebSocket = require("ws");

// The syncAvailable subscription as apps send it.
export const SYNC_AVAILABLE = 'subscription { syncAvailable(appType: "sales_app") { reason model maxId } }';

// A graphql-ws client of the gateway at gatewayUrl (http://...), with a bearer token.
export const subscriber = (gatewayUrl, token) => createClient({
  url: gatewayUrl.replace(/^http/, "ws") + "/graphql", webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` }, retryAttempts: 0,
});

// The p-th percentile (nearest rank) of xs.
export const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)];
};

export const fmt = (xs) => `p50 ${pct(xs, 50).toFixed(1)} ms, p99 ${pct(xs, 99).toFixed(1)} ms, max ${Math.max(...xs).toFixed(1)} ms`;
