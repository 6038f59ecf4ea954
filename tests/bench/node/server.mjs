// The Node.js peer for make bench (BENCH_SERVER=node): socket.io 4.8 with its Redis adapter, doing
// the part of the hub's work socket.io does by itself: check the token at the namespace connect
// (HS256, the hub's secret), join a stream's room and tell its other viewers (viewer_joined, on a
// viewer's first connection, as the hub does), and for each send_message build the message object,
// broadcast it to the room across workers and acknowledge; a viewer's last connection leaving tells
// the room (viewer_left), and ending a stream empties its room. Viewer counts are this worker's
// only, and there are no rate limits, presence in Redis, recent buffer or outbox, so it does less
// per event than the hub: the cost per delivery, per join and per idle connection is what compares.
import { createServer } from "node:http";
import { createHmac, randomUUID, timingSafeEqual } from "node:crypto";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const prefix = (process.env.HUB_REDIS_PREFIX || "hub:") + "node-peer";
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";
const secret = process.env.HUB_JWT_SECRET || "";

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

// The claims of an HS256 token signed with the hub's secret and not expired; null otherwise.
function claimsOf(token) {
  const [head, body, signature = ""] = String(token).split(".");
  const expected = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  if (signature.length !== expected.length) return null;
  if (!timingSafeEqual(Buffer.from(signature), Buffer.from(expected))) return null;
  const claims = JSON.parse(Buffer.from(body, "base64url").toString());
  return typeof claims.exp === "number" && claims.exp * 1000 < Date.now() ? null : claims;
}

const http = createServer((req, res) => {
  if (req.url === "/readyz" || req.url === "/healthz") return json(res, 200, { success: true });
  const create = req.method === "POST" && req.url === "/api/v1/streaming/create";
  const end = req.method === "POST" && /^\/api\/v1\/streaming\/[^/]+\/end$/.test(req.url);
  if (create || end) {
    const streamId = create ? randomUUID() : req.url.split("/")[4];
    if (end) endStream(streamId);
    req.resume();
    req.on("end", () => json(res, create ? 201 : 200, { success: true, stream: { stream_id: streamId } }));
    return;
  }
  if (!req.url.startsWith("/socket.io/")) json(res, 404, { success: false });
});

const io = new Server(http, { cors: { origin: false }, adapter: createAdapter(pub, sub, { key: prefix }) });
const nsp = io.of("/streaming");

// stream id -> (viewer -> this worker's connections of that viewer)
const viewers = new Map();

function watch(streamId, viewer) {
  let room = viewers.get(streamId);
  if (!room) viewers.set(streamId, (room = new Map()));
  const connections = (room.get(viewer) ?? 0) + 1;
  room.set(viewer, connections);
  return { first: connections === 1, count: room.size };
}

function unwatch(streamId, viewer) {
  const room = viewers.get(streamId);
  if (!room || !room.has(viewer)) return { last: false, count: room?.size ?? 0 };
  const connections = room.get(viewer) - 1;
  if (connections > 0) room.set(viewer, connections);
  else room.delete(viewer);
  return { last: connections === 0, count: room.size };
}

function endStream(streamId) {
  viewers.delete(streamId);
  nsp.in(streamId).socketsLeave(streamId);
}

nsp.use((socket, next) => {
  const token = socket.handshake.auth?.token;
  if (!token) return next(); // an anonymous viewer
  let claims = null;
  try {
    claims = claimsOf(token);
  } catch {
    // a token that is not three base64url parts of JSON is refused below
  }
  if (!claims) return next(new Error("unauthorized"));
  socket.data.user = { id: String(claims.sub), name: claims.name ?? null };
  next();
});

nsp.on("connection", (socket) => {
  const user = socket.data.user;
  const viewer = user ? user.id : socket.id;
  socket.on("join_stream", (data, ack) => {
    const streamId = data.stream_id;
    socket.join(streamId);
    socket.data.stream = streamId;
    const { first, count } = watch(streamId, viewer);
    if (first) {
      socket.to(streamId).emit("viewer_joined", {
        stream_id: streamId, viewer_count: count, user_id: user?.id ?? null, username: user?.name ?? null,
      });
    }
    if (typeof ack === "function") {
      ack({ success: true, stream: { stream_id: streamId }, viewer_count: count, recent_messages: [] });
    }
  });
  socket.on("send_message", (data, ack) => {
    const message = {
      message_id: randomUUID(), stream_id: data.stream_id, user_id: user?.id ?? null,
      username: user?.name ?? null, message: String(data.message).trim(), message_type: "TEXT",
      tip_amount: null, created_at: new Date().toISOString(),
    };
    nsp.to(data.stream_id).emit("chat_message", message);
    if (typeof ack === "function") ack({ success: true, message });
  });
  socket.on("disconnect", () => {
    const streamId = socket.data.stream;
    if (streamId === undefined) return;
    const { last, count } = unwatch(streamId, viewer);
    if (last) {
      nsp.to(streamId).emit("viewer_left", { stream_id: streamId, viewer_count: count, user_id: user?.id ?? null });
    }
  });
});
http.listen(port, "127.0.0.1", () => console.log(`node peer listening on ${port}`));
