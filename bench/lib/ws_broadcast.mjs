// The baseline of bench/ws_fanout.sh: a bare ws server (no GraphQL, no
// database) in its own process that sends one message of the size of a
// syncAvailable message to every connected socket each time it is told to.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../gateway/package.json", import.meta.url));
const { WebSocketServer } = require("ws");

const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
wss.on("listening", () => process.send({ port: wss.address().port }));
process.on("message", (text) => {
  for (const c of wss.clients) c.send(text);
});
