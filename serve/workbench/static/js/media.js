// The media page: the clip or picture, what the detectors said, where it was seen, its near-duplicates
// and variants, and the review form with the record's review history.
import { ApiError, getJson, mediaUrl, postJson } from "./api.js";
import { timeStrip } from "./charts.js";
import {
  clear, fmtPlatt, fmtScore, fmtTime, h, isMediaId, mediaHref, outLink, s, sightingCount, titleOf, verdictBadge,
} from "./dom.js";

function section(title, id, ...children) {
  return h("section", { class: "panel", id }, h("h2", {}, title), ...children);
}

async function player(record, links) {
  const box = h("div", { class: "player" });
  const link = links.media || links.thumbnail;
  if (!link) {
    box.append(h("p", { class: "muted" }, "The media is not kept in the store (only flagged media is, unless store_keep_media is set)."));
    return box;
  }
  try {
    const url = await mediaUrl(link);
    if (!url) throw new Error("unusable media link");
    if (links.media && record.kind === "video") {
      box.append(h("video", { src: url, controls: true, preload: "metadata", playsinline: true, id: "media-view" }));
    } else {
      box.append(h("img", { src: url, alt: titleOf(record), id: "media-view" }));
      if (!links.media) box.append(h("p", { class: "muted" }, "Only the thumbnail is kept."));
    }
  } catch (error) {
    box.append(h("p", { class: "error" }, `media unavailable: ${error.message}`));
  }
  return box;
}

// The settings that turned the detectors' scores into the verdict (records scored before they were kept: none).
function ensembleSettings(settings) {
  if (!settings) return null;
  const platt = fmtPlatt(settings.platt);
  const weights = Object.entries(settings.weights || {}).map(([name, w]) => `${name} ${w}`).join(", ");
  return `fake at ${settings.fake_threshold} or above, real at ${settings.real_threshold} or below; ` +
    `Platt: ${platt || "none"}; weights: ${weights || "all 1"}`;
}

function facts(record) {
  const info = record.media || {};
  const rows = [
    ["media id", h("code", {}, record.media_id)],
    ["kind", record.kind],
    ["verdict", verdictBadge(record.verdict)],
    ["ensemble score", fmtScore(record.score)],
    ["ensemble settings", ensembleSettings(record.ensemble)],
    ["first seen", fmtTime(record.first_seen)],
    ["last seen", fmtTime(record.last_seen)],
    ["sightings", String(sightingCount(record))],
    ["dedup", record.dedup],
    ["duplicate of", isMediaId(record.duplicate_of) ? h("a", { href: mediaHref(record.duplicate_of) }, record.duplicate_of.slice(0, 16)) : null],
    ["variant of", isMediaId(record.variant_of) ? h("a", { href: mediaHref(record.variant_of) }, record.variant_of.slice(0, 16)) : null],
    ["size", info.width ? `${info.width}×${info.height}` : null],
    ["duration", info.duration ? `${info.duration.toFixed(1)} s` : null],
    ["error", record.error],
    ["review", record.review ? `${record.review.label} by ${record.review.reviewer} at ${fmtTime(record.review.at)}` : "not reviewed"],
  ];
  return h("dl", { class: "facts", id: "facts" },
    rows.filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", { "data-fact": k }, v)]));
}

function detectorTable(record) {
  const entries = Object.entries(record.detectors || {});
  if (!entries.length) return h("p", { class: "muted" }, "No detector scored this record.");
  return h("table", { class: "grid-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "detector"), h("th", {}, "P(fake)"), h("th", {}, "frames"), h("th", {}, "version"))),
    h("tbody", {}, entries.map(([name, d]) => h("tr", {},
      h("td", {}, name), h("td", {}, fmtScore(d.p_fake)), h("td", {}, String(d.frames)), h("td", {}, d.model_version)))));
}

// A record scored since per-face scores are kept has one entry per scored face (time, box, each
// detector's P(fake) and their ensemble); older records keep only where faces were found, drawn instead.
function timeline(record, view, videoFaces) {
  const faces = (record.face_scores || []).map((f, index) => ({ ...f, index })).filter((f) => Number.isFinite(f.t));
  if (faces.length) {
    return [scoreChart(faces, record.media?.duration), h("h3", {}, "Faces, most suspicious first"),
      faceList(faces, view, videoFaces ? (f) => faceImage(record.media_id, f.index) : null)];
  }
  const fp = record.fingerprints || {};
  const frames = fp.frame_times || [];
  const faceTimes = fp.face_times || [];
  const parts = [h("p", { class: "muted", id: "timeline-note" },
    "Per-face scores are not stored for this record (scored before they were kept, or no face was scored). "
    + "Shown instead: the sampled frames and where faces were found.")];
  if (frames.length || faceTimes.length) {
    parts.push(timeStrip("sampled frames and faces over time", record.media?.duration, [
      { name: "frames", times: frames, cls: "m-frame" },
      { name: "faces", times: faceTimes, cls: "m-face" },
    ]));
  } else {
    parts.push(h("p", { class: "muted" }, "No per-frame data (an image, or fingerprinted without frame times)."));
  }
  const thumbs = fp.face_thumbs || [];
  if (thumbs.length) {
    parts.push(h("h3", {}, "Face crops (16×16 as fingerprinted)"),
      h("div", { class: "faces" }, thumbs.slice(0, 24).map((hex, i) => faceCanvas(hex, faceTimes[i]))));
  }
  return parts;
}

const CHART = { w: 600, h: 200, left: 40, right: 10, top: 10, bottom: 28 };

// x = time, y = P(fake): a dot per face, and a line through each sampled frame's most suspicious face
// (the frame score the media score averages).
function scoreChart(faces, duration) {
  const span = Math.max(duration || 0, ...faces.map((f) => f.t), 0.001);
  const plotW = CHART.w - CHART.left - CHART.right;
  const plotH = CHART.h - CHART.top - CHART.bottom;
  const x = (t) => CHART.left + (t / span) * plotW;
  const y = (p) => CHART.top + (1 - p) * plotH;
  const svg = s("svg", { viewBox: `0 0 ${CHART.w} ${CHART.h}`, class: "chart score-timeline", role: "img",
    "aria-label": "P(fake) of each face over time" }, s("title", {}, "P(fake) of each face over time"));
  for (const p of [0, 0.5, 1]) {
    svg.append(s("line", { x1: CHART.left, x2: CHART.w - CHART.right, y1: y(p), y2: y(p), class: "grid" }),
      s("text", { x: CHART.left - 4, y: y(p) + 4, class: "tick", "text-anchor": "end" }, p.toFixed(1)));
  }
  const worst = new Map();
  for (const f of faces) {
    if (typeof f.score !== "number") continue;
    const known = worst.get(f.frame);
    if (!known || f.score > known.score) worst.set(f.frame, f);
  }
  const line = [...worst.values()].sort((a, b) => a.t - b.t);
  if (line.length > 1) {
    svg.append(s("polyline", { class: "frame-max", points: line.map((f) => `${x(f.t)},${y(f.score)}`).join(" ") }));
  }
  for (const f of faces) {
    if (typeof f.score !== "number") continue;
    svg.append(s("circle", { cx: x(f.t), cy: y(f.score), r: 4, class: `face-dot ${band(f.score)}` },
      s("title", {}, `${f.t.toFixed(2)} s: P(fake) ${fmtScore(f.score)}`)));
  }
  svg.append(s("text", { x: CHART.left, y: CHART.h - 8, class: "tick" }, "0 s"),
    s("text", { x: CHART.w - CHART.right, y: CHART.h - 8, class: "tick", "text-anchor": "end" }, `${span.toFixed(1)} s`));
  return svg;
}

function band(score) {
  return score >= 0.7 ? "d-fake" : score <= 0.3 ? "d-real" : "d-uncertain";
}

const LISTED_FACES = 48;

function faceList(faces, view, picture) {
  const ranked = faces.slice().sort((a, b) => (b.score ?? -1) - (a.score ?? -1) || a.t - b.t);
  const items = ranked.slice(0, LISTED_FACES).map((f) => {
    const [bx, by, bw, bh] = f.box;
    const crop = view ? cropCanvas(view, f.box) : picture ? picture(f) : null;
    return h("li", { class: "face-score", "data-score": f.score ?? "" },
      crop,
      h("div", {}, h("strong", { class: "face-p" }, fmtScore(f.score)), ` at ${f.t.toFixed(2)} s`),
      h("div", { class: "muted" }, `box ${bw}×${bh} at (${bx}, ${by})`),
      h("div", { class: "muted" }, Object.entries(f.scores || {}).map(([name, p]) => `${name} ${fmtScore(p)}`).join(", ")));
  });
  const more = ranked.length > LISTED_FACES ? h("p", { class: "muted" }, `and ${ranked.length - LISTED_FACES} more`) : null;
  return [h("ul", { class: "face-scores", id: "face-scores" }, items), more];
}

// An image's face drawn from the stored picture (boxes are in its upright pixels, as the browser shows
// it). A video's face is cut out by the API from the frame it was scored in (faceImage).
function cropCanvas(img, box) {
  const canvas = h("canvas", { width: 64, height: 64, class: "face" });
  const draw = () => {
    try {
      canvas.getContext("2d").drawImage(img, box[0], box[1], box[2], box[3], 0, 0, 64, 64);
    } catch {
      canvas.remove();
    }
  };
  if (img.complete && img.naturalWidth) draw();
  else img.addEventListener("load", draw, { once: true });
  return canvas;
}

function faceImage(id, index) {
  const img = h("img", { class: "face", alt: `face ${index + 1}`, width: 64, height: 64, "data-face": String(index) });
  mediaUrl(`/v1/media/${id}/faces/${index}`)
    .then((url) => { if (url) img.src = url; else img.remove(); })
    .catch(() => img.remove());
  return img;
}

function faceCanvas(hex, time) {
  const canvas = h("canvas", { width: 16, height: 16, class: "face" });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(16, 16);
  for (let i = 0; i < 256; i += 1) {
    const v = parseInt(hex.slice(i * 2, i * 2 + 2), 16) || 0;
    image.data.set([v, v, v, 255], i * 4);
  }
  ctx.putImageData(image, 0, 0);
  return h("figure", {}, canvas, h("figcaption", {}, time === undefined ? "" : `${time.toFixed(1)} s`));
}

function sightings(record) {
  const rows = (record.sightings || []).map((s) => h("tr", {},
    h("td", { class: "wrap" }, outLink(s.url), s.hints?.title ? h("div", { class: "muted" }, s.hints.title) : null,
      s.hints?.uploader ? h("div", { class: "muted" }, `by ${s.hints.uploader}`) : null),
    h("td", {}, `${s.platform} / ${s.source}`),
    h("td", {}, fmtTime(s.first_seen), s.last_seen !== s.first_seen ? h("div", { class: "muted" }, `last ${fmtTime(s.last_seen)}`) : null),
    h("td", {}, String(s.count))));
  if (!rows.length) return h("p", { class: "muted" }, "No sightings recorded.");
  return h("table", { class: "grid-table", id: "sightings" },
    h("thead", {}, h("tr", {}, h("th", {}, "URL"), h("th", {}, "platform / source"), h("th", {}, "seen"), h("th", {}, "count"))),
    h("tbody", {}, rows));
}

// The API answers one item per hash kind that found a record; a moderator wants one line per record.
function byRecord(items) {
  const grouped = new Map();
  for (const item of items) {
    if (!grouped.has(item.media_id)) grouped.set(item.media_id, { ...item, evidence: [] });
    grouped.get(item.media_id).evidence.push(`${item.kind} ${item.distance} bits via ${item.via}`);
  }
  return [...grouped.values()];
}

async function similar(id) {
  const box = h("div", { id: "similar" }, h("p", { class: "muted" }, "searching…"));
  getJson(`/v1/similar/${id}`).then((page) => {
    if (!page.items.length) {
      box.replaceChildren(h("p", { class: "muted" }, "No near-duplicates or variants in the index."));
      return;
    }
    box.replaceChildren(h("ul", { class: "similar" }, byRecord(page.items).map((item) => h("li", {},
      h("a", { href: mediaHref(item.media_id) }, titleOf(item.record)), " ",
      h("span", { class: `badge rel-${item.relation}` }, item.relation), " ",
      verdictBadge(item.record.verdict), " ",
      h("span", { class: "muted" }, `${Math.round(item.matched_fraction * 100)} % of frames matched; `
        + item.evidence.join(", "))))));
  }).catch((error) => box.replaceChildren(h("p", { class: "error" }, error.message)));
  return box;
}

function historyList(events) {
  if (!events.length) return h("p", { class: "muted" }, "No reviews yet.");
  return h("ol", { class: "history" }, events.slice().reverse().map((e) => h("li", {},
    h("strong", {}, e.review.label), ` (was ${e.previous}) by `, h("span", { class: "reviewer" }, e.review.reviewer),
    ` at ${fmtTime(e.review.at)}`, e.review.note ? h("blockquote", {}, e.review.note) : null)));
}

function reviewForm(id, onReviewed, say) {
  const note = h("textarea", { name: "note", id: "review-note", rows: 3, maxlength: 10000, placeholder: "note (optional)" });
  const form = h("form", { id: "review-form", class: "review" },
    h("fieldset", {}, h("legend", {}, "Label"),
      ["fake", "real", "unsure"].map((label) => h("label", { class: "check" },
        h("input", { type: "radio", name: "label", value: label, required: true }), label))),
    note,
    h("button", { type: "submit", class: "primary", id: "review-submit" }, "Record review"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = { label: data.get("label") };
    const text = String(data.get("note") || "").trim();
    if (text) body.note = text;
    try {
      const record = await postJson(`/v1/media/${id}/review`, body);
      say(`Recorded: ${record.review.label} by ${record.review.reviewer}`);
      form.reset();
      onReviewed();
    } catch (error) {
      say(error instanceof ApiError && error.status === 403 ? `${error.detail} (reviews need the review scope)` : error.message, true);
    }
  });
  return form;
}

function imageView(record, links, top) {
  if (record.kind !== "image" || !links.media) return null;
  return top.querySelector("img#media-view");
}

export async function renderMedia(view, id, say) {
  if (!isMediaId(id)) {
    clear(view).append(h("p", { class: "error" }, "not a media id"));
    return;
  }
  const { record, links } = await getJson(`/v1/media/${id}`);
  const history = h("div", { id: "review-history" });
  async function refresh() {
    const [events, fresh] = await Promise.all([getJson(`/v1/media/${id}/reviews`), getJson(`/v1/media/${id}`)]);
    history.replaceChildren(historyList(events));
    factsBox.replaceChildren(facts(fresh.record));
  }
  const factsBox = h("div", {}, facts(record));
  const top = h("div", { class: "media-top" }, await player(record, links), factsBox);
  clear(view).append(
    h("p", {}, h("a", { href: "#/search", class: "back" }, "← search")),
    h("h1", { id: "media-title" }, titleOf(record)),
    top,
    section("Detectors", "detectors", detectorTable(record)),
    section("Score timeline", "timeline",
      ...timeline(record, imageView(record, links, top), record.kind === "video" && Boolean(links.media))),
    section("Sightings", "sightings-panel", sightings(record)),
    section("Near-duplicates and variants", "similar-panel", await similar(id)),
    section("Review", "review", reviewForm(id, () => refresh().catch((e) => say(e.message, true)), say), h("h3", {}, "History"), history));
  await refresh();
}
