// The reference server for make bench (BENCH_SERVER=node): socket.io 4.8 with its Redis adapter,
// doing the fan-out part of the hub's work: join a stream's room, and for each send_message build
// the message object, broadcast it to the room across workers, and acknowledge. It keeps no
// other state (no rate limits, presence, recent buffer or outbox), so it does less per message
// than the hub; the per-delivery cost is what is compared.
import { createServer } from "node:http";
import { randomUUID } from "node:crypto";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";

const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
const prefix = (process.env.HUB_REDIS_PREFIX || "hub:") + "node-reference";
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379/0";

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
await Promise.all([pub.connect(), sub.connect()]);

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

const http = createServer((req, res) => {
  if (req.url === "/readyz" || req.url === "/healthz") return json(res, 200, { success: true });
  const create = req.method === "POST" && req.url === "/api/v1/streaming/create";
  const end = req.method === "POST" && /^\/api\/v1\/streaming\/[^/]+\/end$/.test(req.url);
  if (create || end) {
    req.resume();
    req.on("end", () => json(res, create ? 201 : 200,
      { success: true, stream: { stream_id: create ? randomUUID() : req.url.split("/")[4] } }));
    return;
  }
  if (!req.url.startsWith("/socket.io/")) json(res, 404, { success: false });
});

const io = new Server(http, { cors: { origin: false }, adapter: createAdapter(pub, sub, { key: prefix }) });
const nsp = io.of("/streaming");
nsp.on("connection", (socket) => {
  socket.on("join_stream", (data, ack) => {
    socket.join(data.stream_id);
    socket.data.stream = data.stream_id;
    if (typeof ack === "function") {
      ack({ success: true, stream: { stream_id: data.stream_id }, viewer_count: 0, recent_messages: [] });
    }
  });
  socket.on("send_message", (data, ack) => {
    const message = {
      message_id: randomUUID(), stream_id: data.stream_id, user_id: socket.id, username: null,
      message: String(data.message).trim(), message_type: "TEXT", tip_amount: null,
      created_at: new Date().toISOString(),
    };
    nsp.to(data.stream_id).emit("chat_message", message);
    if (typeof ack === "function") ack({ success: true, message });
  });
});
http.listen(port, "127.0.0.1", () => console.log(`node reference listening on ${port}`));
