// A command-line GraphQL subscriber (graphql-ws, as an app's client would
// be): prints each syncAvailable message as one JSON line on stdout, with
// the time it arrived (ms since the epoch), until it is stopped or the
// subscription ends. For the demo and for tests that need a subscriber in
// another process.
//
// Usage: node bin/subscribe.js <gateway URL> <token> [app type, default sales_app]
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const [url, token, appType = "sales_app"] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: node bin/subscribe.js <gateway URL> <token> [app type]");
  process.exit(2);
}

const client = createClient({
  url: `${url.replace(/^http/, "ws").replace(/\/+$/, "")}/graphql`,
  webSocketImpl: WebSocket,
  connectionParams: { authorization: `Bearer ${token}` },
  retryAttempts: 0,
});

const query = "subscription($appType: String!) { syncAvailable(appType: $appType) { reason instance model count maxId high } }";
client.subscribe({ query, variables: { appType } }, {
  next(message) {
    if (message.errors) {
      console.error(`subscription error: ${JSON.stringify(message.errors)}`);
      process.exitCode = 1;
      return;
    }
    process.stdout.write(`${JSON.stringify({ at: Date.now(), ...message.data.syncAvailable })}\n`);
  },
  error(err) {
    // A closed socket (4401: the token refused) or a transport error.
    const why = err?.code !== undefined ? `closed ${err.code} ${err.reason ?? ""}` : String(err?.message ?? err);
    console.error(`subscription ended: ${why.trim()}`);
    process.exit(1);
  },
  complete() {
    process.exit(0);
  },
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    client.dispose();
    process.exit(0);
  });
}
