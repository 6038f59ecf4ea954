// The stream list: live streams by viewers, refreshed every few seconds; ended streams of a streamer,
// each linked to its viewer page like a live one.
import { api, el, header, notice, plainWords, duration } from "/console/console.js";

const live = document.getElementById("live");
const liveNotice = document.getElementById("live-notice");

function card(s, ended = false) {
  const thumb = s.thumbnail_url
    ? el("img", { src: s.thumbnail_url, alt: "", loading: "lazy", referrerpolicy: "no-referrer" })
    : el("div", { class: "thumb", "aria-hidden": "true" }, "📈");
  const viewers = ended
    ? el("span", { class: "meta" }, `ended · ${duration(s.duration_seconds || 0)} · peak ${s.peak_viewers} viewers`)
    : el("span", { class: "meta" }, el("span", { class: "badge" }, "LIVE"), " ",
      el("span", { class: "viewers", "data-stream-id": s.stream_id }, String(s.viewer_count)), " watching");
  // Both link to the viewer page: a live stream to watch, an ended one to read its chat again.
  const title = el("a", { href: `/watch?stream=${encodeURIComponent(s.stream_id)}` }, s.title);
  return el("li", { class: "card", "data-stream-id": s.stream_id }, thumb,
    el("div", { class: "body" }, el("h3", {}, title),
      el("span", { class: "meta" }, `${s.streamer_name || s.streamer_id} · ${s.category || "general"}`), viewers));
}

async function refresh() {
  const body = await api("GET", "live?limit=100");
  live.setAttribute("aria-busy", "false");
  if (!body.success) return notice(liveNotice, plainWords(body.error));
  notice(liveNotice, body.count ? "" : "Nobody is live right now.", "info");
  // Update counts in place when the same streams are listed in the same order.
  const shown = [...live.children].map((li) => li.dataset.streamId);
  if (shown.join() === body.streams.map((s) => s.stream_id).join()) {
    for (const s of body.streams) {
      const count = live.querySelector(`.viewers[data-stream-id="${CSS.escape(s.stream_id)}"]`);
      if (count && count.textContent !== String(s.viewer_count)) count.textContent = String(s.viewer_count);
    }
  } else {
    live.replaceChildren(...body.streams.map((s) => card(s)));
  }
}

document.getElementById("ended-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const who = document.getElementById("ended-streamer").value.trim();
  const target = document.getElementById("ended");
  const body = await api("GET", `user/${encodeURIComponent(who)}/streams?status=ENDED`);
  const where = document.getElementById("ended-notice");
  if (!body.success) return notice(where, plainWords(body.error));
  notice(where, body.count ? "" : "No ended streams for that streamer.", "info");
  target.replaceChildren(...body.streams.map((s) => card(s, true)));
});

header(() => location.reload());
refresh();
setInterval(refresh, 3000);
