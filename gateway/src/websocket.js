// GraphQL over WebSocket (the graphql-ws protocol, subprotocol
// graphql-transport-ws) on GET /graphql: queries, mutations and the
// syncAvailable subscription, executed by PostGraphile as over HTTP.
//
// Authentication, by the database (bridgecore.verify_token), once per
// connection:
// - an Authorization header on the upgrade request that is not a valid
//   Bearer token: the upgrade is refused with HTTP 401 and the gateway's
//   error body (a valid one authenticates the connection);
// - connectionParams {"authorization": "Bearer <token>"} in connection_init
//   (they win over the header): a missing or invalid token closes the
//   socket with 4401 and the reason as close reason; the database being
//   down closes it with 1013 (try again later);
// - when the token expires, the socket is closed with 4401.
import { WebSocketServer } from "ws";
import { useServer } from "graphql-ws/use/ws";
import { makeGraphQLWSConfig } from "grafserv";
import { bearerToken, missingToken, verifyToken } from "./auth.js";
import { plainSyncAvailable, syncAvailableStream } from "./graphql.js";
import { HttpError, fromError } from "./http.js";

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_TRY_AGAIN_LATER = 1013;
// setTimeout's largest delay.
const MAX_TIMER_MS = 2 ** 31 - 1;
// Where onSubscribe leaves the subscription's socket and id for subscribe.
const SUBSCRIBER = Symbol("bridgecore subscriber");
const TEXT_FRAME = { binary: false, compress: false };

// The writer of one subscription's graphql-ws "next" messages on socket,
// for the short way (graphql.js, syncAvailableStream): the text graphql-ws
// would send, {"id":<id>,"type":"next","payload":<payload>}, made by
// joining the payload's JSON (made once per notification and selection,
// whatever the number of subscribers) to this subscription's id.
function nextFrames(socket, id) {
  const head = `{"id":${JSON.stringify(id)},"type":"next","payload":`;
  return {
    open: () => socket.readyState === socket.OPEN,
    buffered: () => socket.bufferedAmount,
    send: (payload, flushed) => socket.send(head + payload + "}", TEXT_FRAME, flushed),
  };
}

// A close reason is at most 123 bytes.
function closeReason(text) {
  let t = text;
  while (Buffer.byteLength(t) > 123) t = t.slice(0, -2) + "…";
  return t;
}

function refuseUpgrade(socket, err) {
  const e = fromError(err);
  const body = JSON.stringify({ detail: e.message, code: e.code, hint: e.hint });
  const headers = { "Content-Type": "application/json; charset=utf-8", "Content-Length": Buffer.byteLength(body), Connection: "close", ...e.headers };
  const statusText = { 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable" }[e.status] ?? "Error";
  socket.end(`HTTP/1.1 ${e.status} ${statusText}\r\n` +
    Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\r\n") + `\r\n\r\n${body}`);
}

// Adds the WebSocket endpoint to server (messages of at most maxPayload
// bytes); returns { close(), get connections() }.
export function attachWebSocket({ server, serv, pool, hub, maxPayload, path = "/graphql" }) {
  // No permessage-deflate (ws's default, said here): compressing
  // messages of about 150 bytes for each of a thousand sockets would cost
  // more than it saves.
  const wss = new WebSocketServer({ noServer: true, maxPayload, perMessageDeflate: false });
  const wsConfig = makeGraphQLWSConfig(serv);
  useServer({
    ...wsConfig,
    async onSubscribe(ctx, id, payload) {
      const args = await wsConfig.onSubscribe(ctx, id, payload);
      if (args && !Array.isArray(args)) args[SUBSCRIBER] = { socket: ctx.extra.socket, id };
      return args;
    },
    // The subscription apps use takes the short way (graphql.js,
    // plainSyncAvailable, syncAvailableStream); any other operation runs
    // in PostGraphile.
    async subscribe(args) {
      const plain = plainSyncAvailable(args.document, args.operationName, args.variableValues);
      const { socket, id } = args[SUBSCRIBER];
      return plain ? syncAvailableStream(args.contextValue, hub, plain, nextFrames(socket, id)) : wsConfig.subscribe(args);
    },
    async onConnect(ctx) {
      const { socket, request } = ctx.extra;
      const params = ctx.connectionParams ?? {};
      const header = params.authorization ?? params.Authorization;
      try {
        let claims = request.bridgecoreClaims ?? null;
        if (header !== undefined && header !== null) {
          const token = bearerToken(header);
          claims = token === null ? null : await verifyToken(pool, token);
        }
        if (claims === null) throw missingToken();
        socket.bridgecoreClaims = claims;
        if (typeof claims.exp === "number") {
          const timer = setTimeout(() => socket.close(CLOSE_UNAUTHORIZED, "the token has expired"),
            Math.min(MAX_TIMER_MS, Math.max(0, claims.exp * 1000 - Date.now())));
          timer.unref();
          socket.once("close", () => clearTimeout(timer));
        }
        return true;
      } catch (err) {
        const e = fromError(err);
        socket.close(e.status === 401 ? CLOSE_UNAUTHORIZED : CLOSE_TRY_AGAIN_LATER, closeReason(e.message));
        return false;
      }
    },
  }, wss);

  const onUpgrade = async (req, socket, head) => {
    socket.on("error", () => {});
    const url = new URL(req.url, "http://gateway");
    if ((url.pathname.replace(/\/+$/, "") || "/") !== path) return refuseUpgrade(socket, new HttpError(404, "Not Found"));
    try {
      const token = bearerToken(req.headers.authorization);
      if (token !== null) req.bridgecoreClaims = await verifyToken(pool, token);
    } catch (err) {
      return refuseUpgrade(socket, err);
    }
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit("connection", ws, req));
  };
  server.on("upgrade", onUpgrade);
  return {
    get connections() {
      return wss.clients.size;
    },
    async close() {
      server.off("upgrade", onUpgrade);
      for (const c of wss.clients) c.terminate();
      await new Promise((resolve) => wss.close(() => resolve()));
    },
  };
}
