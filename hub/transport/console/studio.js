// The streamer's dashboard: go live, live figures, chat with moderation, alerts, end. What cannot
// be taken back (a ban, clearing the chat, the end) asks first; a timeout can be undone at once.
import {
  ChatLog, api, call, connect, duration, el, header, identity, money, notice, plainWords,
} from "/console/console.js";

const $ = (id) => document.getElementById(id);
const me = identity();
let stream = null;
let socket = null;
let startedAt = null;
let timer = null;

function tools(m) {
  if (!m.user_id || m.user_id === me.id || m.message_type === "ALERT") {
    return el("span", { class: "tools" }, el("button", {
      type: "button", class: "secondary", "aria-label": "Delete this message",
      onclick: () => moderate("delete_message", { message_id: m.message_id }),
    }, "Delete"));
  }
  const who = m.username || m.user_id;
  return el("span", { class: "tools" },
    el("button", { type: "button", class: "secondary", "aria-label": `Delete ${who}'s message`,
      onclick: () => moderate("delete_message", { message_id: m.message_id }) }, "Delete"),
    el("button", { type: "button", class: "secondary", "aria-label": `Time ${who} out for 5 minutes`,
      onclick: () => timeout(m.user_id, who) }, "Timeout 5 min"),
    el("button", { type: "button", class: "danger", "aria-label": `Ban ${who}`,
      onclick: () => confirm(`Ban ${who} from this stream? They leave it at once and cannot come back.`)
        && moderate("ban_user", { user_id: m.user_id }) }, "Ban"));
}

// A timeout at once, with an Undo that lifts it (unban_user lifts a ban or a timeout).
async function timeout(userId, who) {
  const ack = await moderate("timeout_user", { user_id: userId, seconds: 300 });
  if (!ack.success) return;
  $("tools-notice").replaceChildren(el("p", { class: "notice info" },
    `${who} is timed out for 5 minutes. `,
    el("button", { type: "button", class: "secondary", "aria-label": `Undo the timeout of ${who}`,
      onclick: async () => {
        const lifted = await moderate("unban_user", { user_id: userId });
        if (lifted.success) notice($("tools-notice"), `${who}'s timeout is lifted: they can write again.`, "info");
      } }, "Undo")));
}

const chat = new ChatLog($("chat"), tools);

async function moderate(event, fields) {
  const ack = await call(socket, event, { stream_id: stream.stream_id, ...fields });
  notice($("tools-notice"), ack.success ? "" : plainWords(ack.error));
  return ack;
}

function showModerators(ids) {
  $("moderators").replaceChildren(...ids.map((id) => el("li", {}, id, " ", el("button", {
    type: "button", class: "secondary", "aria-label": `Remove ${id} as moderator`,
    onclick: () => moderate("remove_moderator", { user_id: id }),
  }, "Remove"))));
}

function figures(stats) {
  $("f-viewers").textContent = String(stats.viewer_count);
  $("f-peak").textContent = String(stats.peak_viewers);
  $("f-unique").textContent = String(stats.unique_viewers);
  $("f-messages").textContent = String(stats.message_count);
  $("f-tips").textContent = String(stats.tip_count);
  $("f-total").textContent = money(stats.tips_total);
  $("f-fees").textContent = money(stats.platform_fees_total);
}

async function refresh() {
  const body = await api("GET", `${stream.stream_id}/stats`);
  if (body.success) figures(body.stats);
}

async function dashboard(s) {
  stream = s;
  $("go-live").hidden = true;
  $("dashboard").hidden = false;
  $("dash-heading").textContent = `Live: ${s.title}`;
  startedAt = s.started_at ? Date.parse(s.started_at) : Date.now();
  timer = setInterval(() => { $("f-duration").textContent = duration((Date.now() - startedAt) / 1000); }, 1000);
  refresh();
  setInterval(refresh, 2000);
  const log = await api("GET", `${s.stream_id}/moderation?limit=200`);
  const last = log.success && log.actions.find((a) => Array.isArray(a.moderators));
  showModerators(last ? last.moderators : []);

  socket = connect();
  socket.on("connect", async () => {
    const payload = { stream_id: s.stream_id };
    if (chat.last) payload.last_message_id = chat.last;
    const ack = await call(socket, "join_stream", payload);
    if (!ack.success) return notice($("studio-notice"), plainWords(ack.error));
    $("f-viewers").textContent = String(ack.viewer_count);
    for (const m of ack.recent_messages) chat.add(m);
  });
  socket.on("chat_message", (m) => chat.add(m));
  socket.on("viewer_joined", (e) => { $("f-viewers").textContent = String(e.viewer_count); });
  socket.on("viewer_left", (e) => { $("f-viewers").textContent = String(e.viewer_count); });
  socket.on("tip_received", () => refresh());
  socket.on("message_deleted", (e) => chat.remove(e.message_id));
  socket.on("chat_cleared", () => chat.clear());
  socket.on("moderators_changed", (e) => showModerators(e.moderators));
  socket.on("slow_mode", (e) => { $("slow-mode").value = String(e.seconds); });
  socket.on("connect_error", (err) => notice($("studio-notice"), plainWords(err?.data || { code: "unavailable" })));
}

function showFinal(s, stats) {
  clearInterval(timer);
  socket?.disconnect();
  $("dashboard").hidden = true;
  $("final").hidden = false;
  const rows = [
    ["Duration", duration(s.duration_seconds || 0)], ["Peak viewers", s.peak_viewers],
    ["Unique viewers", stats?.unique_viewers ?? "–"], ["Messages", stats?.message_count ?? "–"],
    ["Tips", stats?.tip_count ?? "–"], ["Tips total", stats ? money(stats.tips_total) : "–"],
    ["Fees", stats ? money(stats.platform_fees_total) : "–"],
  ];
  $("final-figures").replaceChildren(...rows.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, String(v)))));
  $("final-heading").textContent = `Stream ended: ${s.title}`;
}

async function start() {
  await header(() => location.reload());
  if (!me || !me.id) return notice($("studio-notice"), "Sign in with a streamer's token to go live.", "info");
  if (!me.roles.includes("streamer")) return notice($("studio-notice"), "Your token has no streamer role: only streamers can go live.", "info");
  const mine = await api("GET", `user/${encodeURIComponent(me.id)}/streams?status=LIVE`);
  if (mine.success && mine.count) return dashboard(mine.streams[0]);
  $("go-live").hidden = false;
}

$("go-live-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const body = { title: $("live-title").value.trim() };
  if ($("live-description").value.trim()) body.description = $("live-description").value.trim();
  if ($("live-category").value.trim()) body.category = $("live-category").value.trim();
  const made = await api("POST", "create", body);
  if (!made.success) return notice($("studio-notice"), plainWords(made.error));
  notice($("studio-notice"), "");
  dashboard(made.stream);
});
$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("chat-input");
  if (!input.value.trim()) return;
  const ack = await call(socket, "send_message", { stream_id: stream.stream_id, message: input.value });
  notice($("tools-notice"), ack.success ? "" : plainWords(ack.error));
  if (ack.success) input.value = "";
});
$("slow-mode").addEventListener("change", () => moderate("set_slow_mode", { seconds: Number($("slow-mode").value) }));
$("mod-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if ((await moderate("add_moderator", { user_id: $("mod-user").value.trim() })).success) $("mod-user").value = "";
});
$("unban-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if ((await moderate("unban_user", { user_id: $("unban-user").value.trim() })).success) $("unban-user").value = "";
});
$("clear-chat").addEventListener("click", () => {
  if (confirm("Clear the chat for everyone? Every message so far disappears, also from the chat history.")) {
    moderate("clear_chat", {});
  }
});
$("alert-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const payload = { stream_id: stream.stream_id, message: $("alert-message").value.trim() };
  if ($("alert-symbol").value.trim()) payload.symbol = $("alert-symbol").value.trim();
  if ($("alert-side").value) payload.side = $("alert-side").value;
  // The price as typed, a decimal string (the hub reads it exactly), never through a float.
  const price = $("alert-price").value.trim();
  if (price && !/^\d{1,12}(\.\d{1,8})?$/.test(price)) {
    return notice($("tools-notice"), "The price must be a number like 64250.50 (at most 8 decimals).");
  }
  if (price) payload.price = price;
  const ack = await call(socket, "send_alert", payload);
  notice($("tools-notice"), ack.success ? "" : plainWords(ack.error));
  if (ack.success) $("alert-message").value = "";
});
$("end-stream").addEventListener("click", async () => {
  if (!confirm("End the stream now?")) return;
  const ended = await api("POST", `${stream.stream_id}/end`);
  if (!ended.success) return notice($("tools-notice"), plainWords(ended.error));
  const stats = await api("GET", `${stream.stream_id}/stats`);
  showFinal(ended.stream, stats.success ? stats.stats : null);
});

start();
