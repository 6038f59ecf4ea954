// A viewer on worker A and a viewer on worker B, with socket.io-client 4.x:
// join, chat and tip across workers. Prints one JSON line with what each saw; exits 1 on failure.
// Usage: node cross_worker.mjs URL_A URL_B STREAM_ID TOKEN_A TOKEN_B
import { io } from "socket.io-client";

const [urlA, urlB, streamId, tokenA, tokenB] = process.argv.slice(2);
const deadline = setTimeout(() => { console.error("timed out"); process.exit(1); }, 20000);

function connect(url, token, transports) {
  const socket = io(`${url}/streaming`, { auth: { token }, transports, reconnection: false });
  const seen = [];
  socket.onAny((event, data) => seen.push({ event, data }));
  return new Promise((resolve, reject) => {
    socket.on("connect", () => resolve({ socket, seen }));
    socket.on("connect_error", reject);
  });
}

function waitFor(client, event, match = () => true) {
  return new Promise((resolve) => {
    const check = () => {
      const hit = client.seen.find((e) => e.event === event && match(e.data));
      if (hit) resolve(hit.data); else setTimeout(check, 20);
    };
    check();
  });
}

const a = await connect(urlA, tokenA, ["polling", "websocket"]);
const b = await connect(urlB, tokenB, ["websocket"]);
const joinedA = await a.socket.emitWithAck("join_stream", { stream_id: streamId });
const joinedB = await b.socket.emitWithAck("join_stream", { stream_id: streamId });
const sent = await b.socket.emitWithAck("send_message", { stream_id: streamId, message: "hello from B" });
const chatOnA = await waitFor(a, "chat_message", (m) => m.message_id === sent.message.message_id);
const tip = await a.socket.emitWithAck("send_tip", { stream_id: streamId, amount: 2.5, client_tip_id: "js-1" });
const tipOnB = await waitFor(b, "tip_received", (t) => t.tip_id === tip.tip.tip_id);
const bad = await a.socket.emitWithAck("send_tip", { stream_id: streamId, amount: -1 });
console.log(JSON.stringify({
  joinedA: joinedA.success, joinedB: joinedB.success, viewerCountB: joinedB.viewer_count,
  transportA: a.socket.io.engine.transport.name,
  chatOnA: chatOnA.message, tipOnB: tipOnB.amount, feeOnB: tipOnB.platform_fee,
  badCode: bad.success ? null : bad.error.code,
}));
clearTimeout(deadline);
a.socket.close();
b.socket.close();
