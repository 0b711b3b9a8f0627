// The floor of bench/ws_fanout.sh: a bare ws server (no GraphQL, no
// database) in its own process, speaking as much of graphql-ws (subprotocol
// graphql-transport-ws) as the benchmark's clients use, so that they do
// the same work as against the gateway: connection_init is answered with
// connection_ack, subscribe with a "next" of the LISTENING payload, ping
// with pong, complete forgets the subscription. Told {payload} (a payload's
// JSON text) by its parent, it writes to every subscription the frame the
// gateway writes, {"id":<id>,"type":"next","payload":<payload>}, joined per
// subscription the same way; told {listening} first, the LISTENING payload.
import { createRequire } from "node:module";

const require = createRequire(new URL("../../gateway/package.json", import.meta.url));
const { WebSocketServer } = require("ws");

const PROTOCOL = "graphql-transport-ws";
const TEXT_FRAME = { binary: false, compress: false };
let listening = null;
const subscriptions = new Map();     // socket -> Map(id -> frame head)

const wss = new WebSocketServer({
  host: "127.0.0.1", port: 0, perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.has(PROTOCOL) ? PROTOCOL : false),
});
wss.on("connection", (socket) => {
  const mine = new Map();
  subscriptions.set(socket, mine);
  socket.on("close", () => subscriptions.delete(socket));
  socket.on("message", (data) => {
    const m = JSON.parse(data);
    if (m.type === "connection_init") {
      socket.send('{"type":"connection_ack"}');
    } else if (m.type === "subscribe") {
      const head = `{"id":${JSON.stringify(m.id)},"type":"next","payload":`;
      mine.set(m.id, head);
      socket.send(head + listening + "}", TEXT_FRAME);
    } else if (m.type === "complete") {
      mine.delete(m.id);
    } else if (m.type === "ping") {
      socket.send('{"type":"pong"}');
    }
  });
});
wss.on("listening", () => process.send({ port: wss.address().port }));
process.on("message", (m) => {
  if (m.listening !== undefined) listening = m.listening;
  if (m.payload === undefined) return;
  for (const [socket, mine] of subscriptions) {
    for (const head of mine.values()) socket.send(head + m.payload + "}", TEXT_FRAME);
  }
});
