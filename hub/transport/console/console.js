// Shared by the console's pages: the signed-in identity, REST and Socket.IO helpers, plain-word
// errors, exact money for display. User-supplied text is only ever set as textContent.

const TOKEN_KEY = "hub.transport.console.token";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function token() {
  return localStorage.getItem(TOKEN_KEY);
}

// The stored token's claims, unverified (null if none can be read): the hub checks the token
// itself on every call.
function tokenClaims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(decodeURIComponent(escape(atob(part))));
  } catch {
    return null;
  }
}

// The token's claims, for display only.
export function identity() {
  if (!token()) return null;
  const claims = tokenClaims();
  if (!claims || typeof claims !== "object") return { invalid: true };
  if (claims.exp && claims.exp * 1000 < Date.now()) return { expired: true, ...claims };
  return { id: String(claims.sub), name: claims.name || String(claims.sub), roles: claims.roles || [] };
}

let configPromise = null;
export function config() {
  configPromise ??= fetch("/console/config").then((r) => r.json());
  return configPromise;
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/api/v1/streaming/${path}`, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { success: false, error: { code: "unavailable" } };
  }
  try {
    return await response.json();
  } catch {
    return { success: false, error: { code: "unavailable" } };
  }
}

const WORDS = {
  invalid: () => "That doesn't look right.",
  unauthorized: () => "Please sign in first (or sign in again: your token may have expired).",
  forbidden: () => "You are not allowed to do that.",
  not_found: () => "This stream doesn't exist.",
  conflict: () => "That can't be done now.",
  stream_not_live: () => "This stream is not live.",
  not_joined: () => "Join the stream first.",
  payload_too_large: () => "That is too long.",
  rate_limited: (s) => `You're going too fast. Try again in ${s} s.`,
  slow_mode: (s) => `Slow mode is on: you can write again in ${s} s.`,
  banned: () => "You are banned from this stream.",
  timed_out: (s) => `You are timed out: you can write again in ${s} s.`,
  unavailable: () => "The hub can't be reached right now. Try again in a moment.",
};

// An error in plain words, with the hub's own explanation where it gives one.
export function plainWords(error) {
  const code = error?.code || "unavailable";
  const seconds = Math.max(1, Math.ceil(Number(error?.retry_after) || 1));
  const base = (WORDS[code] || (() => "Something went wrong."))(seconds);
  const detail = error?.message && !/^Too many requests/.test(error.message) ? ` (${error.message})` : "";
  return code === "invalid" || code === "conflict" || code === "forbidden" ? base + detail : base;
}

export function notice(target, text, kind = "error") {
  target.replaceChildren(text ? el("p", { class: `notice ${kind}` }, text) : "");
}

// The Socket.IO connection to /streaming, signed in when a token is stored (read again at each
// reconnect, so a renewed token is the one sent). A minute before the token expires the hub sends
// token_expiring; the console then renews it without reconnecting.
export function connect() {
  const socket = io("/streaming", {
    auth: (send) => { const t = token(); send(t ? { token: t } : {}); },
  });
  socket.on("token_expiring", () => renewToken(socket));
  return socket;
}

// A new token for the same user handed to the hub with refresh_token, kept once the hub took
// it. Only development tokens can be had here (HUB_CONSOLE_DEV_TOKENS): with tokens from an
// identity provider the user signs in again when this one expires.
export async function renewToken(socket) {
  const cfg = await config();
  const claims = tokenClaims();
  if (!cfg.dev_tokens || !claims?.sub) return false;
  const roles = Array.isArray(claims.roles) ? claims.roles : [];
  const response = await fetch("/console/dev-token", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user_id: String(claims.sub), role: roles.includes("streamer") ? "streamer" : "" }),
  }).then((r) => r.json()).catch(() => ({ success: false }));
  if (!response.success) return false;
  const ack = await call(socket, "refresh_token", { token: response.token });
  if (ack.success) localStorage.setItem(TOKEN_KEY, response.token);
  return ack.success;
}

export function call(socket, event, payload) {
  return socket.timeout(8000).emitWithAck(event, payload)
    .catch(() => ({ success: false, error: { code: "unavailable" } }));
}

// Money for display, exact: amounts are strings of at most two decimals, computed in cents.
export function cents(text) {
  const m = /^\s*(\d{1,10})(?:\.(\d{1,2}))?\s*$/.exec(String(text));
  if (!m) return null;
  return BigInt(m[1]) * 100n + BigInt((m[2] || "").padEnd(2, "0"));
}

export function formatCents(value) {
  const sign = value < 0n ? "-" : "";
  const v = value < 0n ? -value : value;
  return `${sign}${v / 100n}.${String(v % 100n).padStart(2, "0")}`;
}

// The platform's fee on an amount, rounded half up to the cent, as the hub computes it.
export function feeCents(amount, rate) {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(String(rate));
  if (!m) return 0n;
  const scale = 10n ** BigInt((m[2] || "").length);
  const numerator = BigInt(m[1] + (m[2] || ""));
  return (amount * numerator * 2n + scale) / (2n * scale);
}

// An amount for display: a JSON number from the hub has at most two decimals, so showing it
// with two (10 -> "10.00") is exact; nothing here does arithmetic on it.
export function money(amount, currency = "USD") {
  const text = typeof amount === "number" ? amount.toFixed(2) : String(amount);
  return currency === "USD" ? `$${text}` : `${text} ${currency}`;
}

// A trade price for display, exact: the hub sends it as a JSON number of at most 15 significant
// digits, whose shortest text (String) is exactly its decimal; that text is written out without an
// exponent and with at least two decimals (64250.5 -> "64250.50", 0.00001234 as it is), by string
// operations only. A string (a price as typed) is shown the same way.
export function priceText(value) {
  let text = String(value).trim();
  const e = /^(\d+)(?:\.(\d+))?e([-+]?\d+)$/i.exec(text);
  if (e) {
    const digits = e[1] + (e[2] || "");
    const point = e[1].length + Number(e[3]);
    if (point <= 0) text = `0.${"0".repeat(-point)}${digits}`;
    else if (point >= digits.length) text = digits + "0".repeat(point - digits.length);
    else text = `${digits.slice(0, point)}.${digits.slice(point)}`;
    text = text.replace(/^0+(?=\d)/, "");
  }
  if (!/^\d+(\.\d+)?$/.test(text)) return text;
  const [whole, fraction = ""] = text.split(".");
  return `${whole}.${fraction.padEnd(2, "0")}`;
}

// A trade alert's head: side, symbol and price ("SELL BTC @ 64250.50"), the parts it has.
export function alertHead(a) {
  if (!a) return "";
  const price = a.price !== null && a.price !== undefined ? `@ ${priceText(a.price)}` : null;
  return [a.side, a.symbol, price].filter(Boolean).join(" ");
}

// A moment (ISO 8601) in the reader's own time zone and words: "3 Dec 2026, 07:41".
export function localTime(iso) {
  const t = Date.parse(iso);
  return Number.isNaN(t) ? "" : new Date(t).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}:${String(m).padStart(2, "0")}:${String(r).padStart(2, "0")}` : `${m}:${String(r).padStart(2, "0")}`;
}

export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

// The sign-in box of every page's header: who is signed in, a field for a token, and in
// development a button that asks the hub for one.
export async function signIn(container, onChange) {
  const cfg = await config();
  const me = identity();
  const status = el("p", { class: "who", "aria-live": "polite" });
  const problem = el("div");
  if (me && !me.invalid && !me.expired) {
    status.append("Signed in as ", el("strong", {}, me.name), me.roles.length ? ` (${me.roles.join(", ")})` : "");
    status.title = status.textContent;  // whole, where a small screen cuts it short
    container.replaceChildren(status, el("button", {
      type: "button", class: "secondary", onclick: () => { localStorage.removeItem(TOKEN_KEY); onChange(); },
    }, "Sign out"));
    return;
  }
  status.append(me?.expired ? "Your token has expired. " : "", "Watching anonymously.");
  const field = el("input", { id: "token-input", name: "token", autocomplete: "off", placeholder: "eyJ…" });
  const form = el("form", {
    class: "signin", onsubmit: (e) => {
      e.preventDefault();
      const value = field.value.trim();
      if (value.split(".").length !== 3) return notice(problem, "That is not a token (three parts separated by dots).");
      localStorage.setItem(TOKEN_KEY, value);
      onChange();
    },
  }, el("label", { for: "token-input" }, "Token"), field, el("button", { type: "submit" }, "Sign in"));
  const parts = [form];
  if (cfg.dev_tokens) {
    const user = el("input", {
      id: "dev-user", name: "user", value: "", placeholder: "e.g. alice", autocomplete: "off", maxlength: 64,
      "aria-describedby": "dev-user-hint",
    });
    const role = el("select", { id: "dev-role", name: "role" },
      el("option", { value: "" }, "viewer"), el("option", { value: "streamer" }, "streamer"));
    parts.push(el("form", {
      class: "signin dev", onsubmit: async (e) => {
        e.preventDefault();
        const missing = devUserProblem(user.value.trim());
        if (missing) {
          user.setAttribute("aria-invalid", "true");
          user.focus();
          return notice(problem, missing);
        }
        user.removeAttribute("aria-invalid");
        const response = await fetch("/console/dev-token", {
          method: "POST", headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ user_id: user.value.trim(), role: role.value }),
        }).then((r) => r.json()).catch(() => ({ success: false }));
        if (!response.success) return notice(problem, plainWords(response.error));
        localStorage.setItem(TOKEN_KEY, response.token);
        onChange();
      },
    }, el("label", { for: "dev-user" }, "User id"), user, el("label", { for: "dev-role" }, "as"), role,
    el("button", { type: "submit", class: "secondary" }, "Get a development token"),
    el("span", { id: "dev-user-hint", class: "hint" }, "Any id: letters, digits or . _ @ -")));
  }
  // The forms fold away behind "Sign in" on a small screen, where they would fill it; open on a wide one.
  const box = el("details", { class: "signin-box", open: matchMedia("(min-width: 48rem)").matches },
    el("summary", {}, "Sign in"), ...parts);
  container.replaceChildren(status, box, problem);
}

// What is wrong with a user id for a development token, in plain words ("" when nothing), as the
// hub checks it (hub/transport/console/__init__.py's USER_ID), so that a bad one is not sent.
function devUserProblem(id) {
  if (!id) return "Enter a user id first, like alice: the hub makes a token for that id.";
  if (!/^[A-Za-z0-9_.@-]{1,64}$/.test(id)) return "A user id is 1–64 letters, digits or . _ @ - (no spaces).";
  return "";
}

// One chat message as a list item: TIP and ALERT highlighted, EMOJI large. `tools` adds
// buttons (the studio's moderation) after the text.
export function chatItem(m, tools = null) {
  const kind = { TIP: "tip", ALERT: "alert", EMOJI: "emoji" }[m.message_type] || "text";
  const item = el("li", { class: kind, "data-message-id": m.message_id, "data-user-id": m.user_id || "" });
  const name = el("span", { class: "name" }, m.username || m.user_id || "someone");
  if (kind === "tip") {
    item.append("💸 ", name, `tipped ${money(m.tip_amount)}`, m.message ? `: ${m.message}` : "");
  } else if (kind === "alert") {
    const head = alertHead(m.alert);
    item.append("📣 ", name, el("strong", {}, `Alert${head ? `: ${head}` : ""}`), ` — ${m.message}`);
  } else {
    item.append(name, el("span", { class: "text" }, m.message));
  }
  if (tools) item.append(tools);
  return item;
}

// A chat list that keeps each message once, in order, scrolled to the newest.
export class ChatLog {
  constructor(list, tools = null) {
    this.list = list;
    this.tools = tools;
    this.ids = new Set();
    this.last = null;
  }

  add(m) {
    if (!m || this.ids.has(m.message_id)) return;
    this.ids.add(m.message_id);
    if (!this.last || m.message_id > this.last) this.last = m.message_id;
    const stick = this.list.scrollTop + this.list.clientHeight >= this.list.scrollHeight - 40;
    this.list.append(chatItem(m, this.tools ? this.tools(m) : null));
    while (this.list.children.length > 300) this.list.firstElementChild.remove();
    if (stick) this.list.scrollTop = this.list.scrollHeight;
  }

  // Older messages (oldest first) above those shown, for reading back an ended stream's chat:
  // the reader keeps the place they were reading.
  prepend(messages) {
    const fresh = messages.filter((m) => m && !this.ids.has(m.message_id));
    for (const m of fresh) this.ids.add(m.message_id);
    const height = this.list.scrollHeight;
    this.list.prepend(...fresh.map((m) => chatItem(m, this.tools ? this.tools(m) : null)));
    this.list.scrollTop += this.list.scrollHeight - height;
  }

  first() {
    return this.list.querySelector("li[data-message-id]")?.dataset.messageId || null;
  }

  remove(messageId) {
    this.list.querySelector(`li[data-message-id="${CSS.escape(messageId)}"]`)?.remove();
  }

  clear() {
    this.list.replaceChildren();
  }
}

export function header(onChange) {
  return signIn(document.getElementById("account"), onChange);
}
