// The viewer page: the stream, its live viewer count, chat with history, emoji and tips; once the
// stream has ended, its chat read again from REST, with when it ended.
import {
  ChatLog, alertHead, api, call, cents, config, connect, duration, el, feeCents, formatCents, header, identity,
  localTime, money, notice, plainWords, randomId,
} from "/console/console.js";

const streamId = new URLSearchParams(location.search).get("stream") || "";
const $ = (id) => document.getElementById(id);
const chat = new ChatLog($("chat"));
const me = identity();
const signedIn = Boolean(me && me.id);
let socket = null;
let stream = null;
let ended = false;

function showStream(s) {
  stream = s;
  document.title = `${s.title} · Streaming hub`;
  $("stream-head").replaceChildren(el("h1", { id: "title" }, s.title),
    el("p", { class: "meta" }, `${s.streamer_name || s.streamer_id} · ${s.category || "general"}`));
  $("about").replaceChildren(s.description || "No description.");
  setViewers(s.viewer_count);
}

function setViewers(n) {
  $("viewer-count").textContent = String(n);
}

// The end, told with when (in the reader's own time) and after how long. What can no longer be
// used (sending, emoji, tips) and what no longer holds (the viewer count, the live notices) goes.
function showEnded(s) {
  ended = true;
  const when = s.ended_at ? localTime(s.ended_at) : "";
  const seconds = s.duration_seconds;
  notice($("banner"),
    `This stream ended${when ? ` on ${when}` : ""}${seconds ? ` after ${duration(seconds)}` : ""}. Thanks for watching!`,
    "info");
  for (const id of ["chat-form", "emoji", "tip-form", "tip-notice", "watching", "highlight", "chat-notice"]) $(id).hidden = true;
  $("chat-title").textContent = "Chat replay";
}

// An ended stream's chat, from REST (GET /{id}/chat: a page of the newest, oldest first), then
// page by page before the first shown, as the reader asks for them.
const REPLAY_PAGE = 200;
async function replay(before = null) {
  const query = before ? `&before=${encodeURIComponent(before)}` : "";
  const body = await api("GET", `${encodeURIComponent(streamId)}/chat?limit=${REPLAY_PAGE}${query}`);
  if (!body.success) {
    return $("banner").append(el("p", { class: "notice error" }, `The chat can't be shown: ${plainWords(body.error)}`));
  }
  if (before) chat.prepend(body.messages);
  else if (!body.count) $("chat").append(el("li", { class: "meta" }, "Nobody wrote in this chat."));
  else for (const m of body.messages) chat.add(m);
  $("earlier").hidden = body.count < REPLAY_PAGE;
}

// The stream as REST has it now, shown as ended (with its end time) when it is.
async function ending(fallback) {
  const found = await api("GET", encodeURIComponent(streamId));
  showEnded(found.success && found.stream.status === "ENDED" ? found.stream : fallback);
}

function forms(enabled, why) {
  for (const control of document.querySelectorAll("#chat-form input, #chat-form button, #emoji button, #tip-form input, #tip-form button")) {
    control.disabled = !enabled;
  }
  if (why) notice($("chat-notice"), why, "info");
}

async function join() {
  const payload = { stream_id: streamId };
  if (chat.last) payload.last_message_id = chat.last;  // after a reconnect: only what was missed
  const ack = await call(socket, "join_stream", payload);
  if (!ack.success) {
    if (ack.error?.code === "stream_not_live") return ending({}).then(replay);
    return notice($("banner"), plainWords(ack.error));
  }
  notice($("banner"), "");
  showStream(ack.stream);
  setViewers(ack.viewer_count);
  for (const m of ack.recent_messages) chat.add(m);
}

async function send(message, type) {
  const ack = await call(socket, "send_message", { stream_id: streamId, message, message_type: type });
  notice($("chat-notice"), ack.success ? "" : plainWords(ack.error));
  return ack.success;
}

function tipAmount() {
  const custom = $("tip-custom").value.trim();
  if (custom) return custom;
  return document.querySelector('input[name="amount"]:checked')?.value || "";
}

async function showFee() {
  const cfg = await config();
  const amount = cents(tipAmount());
  if (amount === null) {
    $("tip-fee").textContent = "–";
    $("tip-share").textContent = "–";
    return;
  }
  const fee = feeCents(amount, cfg.platform_fee);
  $("tip-fee").textContent = money(formatCents(fee), cfg.currency);
  $("tip-share").textContent = money(formatCents(amount - fee), cfg.currency);
}

async function start() {
  await header(() => location.reload());
  if (!streamId) return notice($("banner"), "No stream given: pick one from the list of streams.");
  const found = await api("GET", encodeURIComponent(streamId));
  if (!found.success) return notice($("banner"), plainWords(found.error));
  showStream(found.stream);
  if (found.stream.status === "ENDED") {
    showEnded(found.stream);
    return replay();
  }
  forms(signedIn, signedIn ? "" : "You are watching anonymously: sign in to chat and tip.");
  if (found.stream.status !== "LIVE") return notice($("banner"), "This stream has not started yet.", "info");

  socket = connect();
  socket.on("connect", join);
  socket.on("connect_error", (err) => notice($("banner"), plainWords(err?.data || { code: "unavailable" })));
  socket.on("disconnect", () => !ended && notice($("banner"), "Connection lost, reconnecting…", "info"));
  socket.on("chat_message", (m) => {
    if (m.stream_id !== streamId) return;
    chat.add(m);
    if (m.message_type === "ALERT") {
      const head = alertHead(m.alert);
      notice($("highlight"), `📣 ${m.username || "The streamer"}: ${head ? `${head} — ` : ""}${m.message}`, "alert");
    }
  });
  socket.on("viewer_joined", (e) => e.stream_id === streamId && setViewers(e.viewer_count));
  socket.on("viewer_left", (e) => e.stream_id === streamId && setViewers(e.viewer_count));
  socket.on("message_deleted", (e) => chat.remove(e.message_id));
  socket.on("chat_cleared", () => chat.clear());
  socket.on("tip_received", (t) => {
    notice($("highlight"), `💸 ${t.from_username || t.from_user} tipped ${money(t.amount, t.currency)}!`, "tip");
  });
  socket.on("stream_ended", (e) => {
    if (e.stream_id !== streamId) return;
    showEnded({ ended_at: new Date().toISOString(), duration_seconds: e.duration });  // at once, then REST's time
    ending({ ended_at: new Date().toISOString(), duration_seconds: e.duration });
  });
  socket.on("banned", () => { forms(false); notice($("banner"), plainWords({ code: "banned" })); });
  socket.on("user_timed_out", (e) => {
    if (signedIn && e.user_id === me.id) notice($("chat-notice"), `You were timed out until ${new Date(e.until).toLocaleTimeString()}.`);
  });
  socket.on("user_unbanned", (e) => {
    if (signedIn && e.user_id === me.id) notice($("chat-notice"), "Your timeout was lifted: you can write again.", "info");
  });
  socket.on("slow_mode", (e) => notice($("chat-notice"), e.seconds ? `Slow mode is on: one message every ${e.seconds} s.` : "Slow mode is off.", "info"));
}

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("chat-input");
  if (!input.value.trim()) return;
  if (await send(input.value, "TEXT")) input.value = "";
  input.focus();
});
$("earlier").addEventListener("click", () => replay(chat.first()));
for (const button of document.querySelectorAll("#emoji button")) {
  button.addEventListener("click", () => send(button.dataset.emoji, "EMOJI"));
}
$("tip-form").addEventListener("input", showFee);
$("tip-custom").addEventListener("input", () => {
  if ($("tip-custom").value.trim()) for (const r of document.querySelectorAll('input[name="amount"]')) r.checked = false;
});
$("tip-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const cfg = await config();
  const amount = tipAmount();
  if (cents(amount) === null || cents(amount) <= 0n) return notice($("tip-notice"), "Choose an amount, like 5 or 12.50.");
  // A JSON number: at most two decimals, so its shortest form is exactly what was typed.
  const payload = { stream_id: streamId, amount: Number(amount), client_tip_id: randomId(), currency: cfg.currency };
  const message = $("tip-message").value.trim();
  if (message) payload.message = message;
  let ack = await call(socket, "send_tip", payload);
  if (!ack.success && ack.error?.code === "unavailable") ack = await call(socket, "send_tip", payload);  // same id: never twice
  if (!ack.success) return notice($("tip-notice"), plainWords(ack.error));
  $("tip-message").value = "";
  notice($("tip-notice"), `Thank you! You tipped ${money(ack.tip.amount, ack.tip.currency)} (fee ${money(ack.tip.platform_fee, ack.tip.currency)}).`, "info");
});

showFee();
start();
