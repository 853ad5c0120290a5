// The search page: moderation filters, result cards, cursor paging. The filters live in the page's
// hash (#/search?verdict=fake&...), so a search can be bookmarked and the back button works; the key
// never does.
import { getJson, mediaUrl } from "./api.js";
import {
  clear, fmtScore, fmtTime, h, mediaHref, platforms, plural, sightingCount, titleOf, verdictBadge,
} from "./dom.js";

const VERDICTS = ["fake", "uncertain", "real", "no_face", "error", "unscored"];
const TEXT_FIELDS = ["q", "platform", "source", "since", "until"];
const SELECTS = {
  kind: ["", "image", "video"],
  dedup: ["", "none", "url", "exact", "near"],
  review: ["", "none", "fake", "real", "unsure"],
  sort: ["score_desc", "score_asc", "newest", "oldest"],
  limit: ["24", "50", "100"],
};

function field(label, control) {
  return h("label", { class: "field" }, h("span", {}, label), control);
}

function select(name, values, current) {
  return h("select", { name, id: `f-${name}` },
    values.map((v) => h("option", { value: v, selected: v === current }, v || "any")));
}

function number(name, current, placeholder) {
  return h("input", { type: "number", name, id: `f-${name}`, min: 0, max: 1, step: 0.01, placeholder,
    value: current ?? "" });
}

function filterForm(params, detectors, onSearch) {
  const chosen = new Set(params.getAll("verdict"));
  const detector = params.get("detector") || "";
  const [detName, detRange] = detector.includes("=") ? detector.split("=", 2) : ["", ""];
  const [detMin, detMax] = detRange ? detRange.split(":", 2) : ["", ""];
  const form = h("form", { class: "filters", id: "search-form" },
    field("Words", h("input", { type: "search", name: "q", id: "f-q", value: params.get("q") || "",
      placeholder: "title, uploader, URL" })),
    h("fieldset", { class: "verdicts" }, h("legend", {}, "Verdict"),
      VERDICTS.map((v) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "verdict", value: v, checked: chosen.has(v) }), v))),
    h("div", { class: "row" },
      field("Score ≥", number("min_score", params.get("min_score"), "0")),
      field("Score ≤", number("max_score", params.get("max_score"), "1"))),
    h("div", { class: "row" },
      field("Detector", h("select", { name: "det_name", id: "f-det_name" },
        h("option", { value: "" }, "any"),
        detectors.map((d) => h("option", { value: d, selected: d === detName }, d)))),
      field("≥", number("det_min", detMin, "0")),
      field("≤", number("det_max", detMax, "1"))),
    h("div", { class: "row" },
      field("Platform", h("input", { name: "platform", id: "f-platform", value: params.get("platform") || "",
        placeholder: "youtube, reddit" })),
      field("Source", h("input", { name: "source", id: "f-source", value: params.get("source") || "" }))),
    h("div", { class: "row" },
      field("Kind", select("kind", SELECTS.kind, params.get("kind") || "")),
      field("Dedup", select("dedup", SELECTS.dedup, params.get("dedup") || "")),
      field("Review", select("review", SELECTS.review, params.get("review") || ""))),
    h("div", { class: "row" },
      field("Seen since", h("input", { name: "since", id: "f-since", value: params.get("since") || "",
        placeholder: "7d, 2026-11-01" })),
      field("Seen until", h("input", { name: "until", id: "f-until", value: params.get("until") || "" }))),
    h("div", { class: "row" },
      field("Sort", select("sort", SELECTS.sort, params.get("sort") || "score_desc")),
      field("Per page", select("limit", SELECTS.limit, params.get("limit") || "24")),
      h("button", { type: "submit", id: "search-button", class: "primary" }, "Search")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    onSearch(formParams(new FormData(form)));
  });
  return form;
}

function formParams(data) {
  const params = new URLSearchParams();
  for (const v of data.getAll("verdict")) params.append("verdict", v);
  for (const name of [...TEXT_FIELDS, "min_score", "max_score", "kind", "dedup", "review", "sort", "limit"]) {
    const value = String(data.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  const det = String(data.get("det_name") || "");
  if (det) params.set("detector", `${det}=${data.get("det_min") || 0}:${data.get("det_max") || 1}`);
  return params;
}

function detectorScores(record) {
  const entries = Object.entries(record.detectors || {});
  if (!entries.length) return h("p", { class: "muted" }, "no detector scores");
  return h("dl", { class: "scores" },
    entries.map(([name, d]) => [h("dt", {}, name), h("dd", {}, fmtScore(d.p_fake))]));
}

export function card(record) {
  const thumb = h("div", { class: "thumb" }, h("span", { class: "muted" }, record.kind));
  if (record.objects && record.objects.thumbnail) {
    mediaUrl(`/v1/media/${record.media_id}/thumbnail`).then((url) => {
      if (url) thumb.replaceChildren(h("img", { src: url, alt: "thumbnail" }));
    }).catch(() => thumb.replaceChildren(h("span", { class: "muted" }, "no thumbnail")));
  }
  const review = record.review ? h("span", { class: `badge r-${record.review.label}` }, `reviewed ${record.review.label}`) : null;
  return h("a", { class: "card", href: mediaHref(record.media_id), "data-media-id": record.media_id },
    thumb,
    h("div", { class: "card-body" },
      h("h3", { class: "title" }, titleOf(record)),
      h("p", {}, verdictBadge(record.verdict), " ", h("strong", { class: "score" }, fmtScore(record.score)), " ", review),
      detectorScores(record),
      h("p", { class: "meta" },
        h("span", {}, platforms(record)), " · ",
        h("span", {}, `first seen ${fmtTime(record.first_seen)}`), " · ",
        h("span", { class: "sightings" }, plural(sightingCount(record), "sighting")),
        record.dedup !== "none" ? h("span", {}, ` · dedup ${record.dedup}`) : null)));
}

export async function renderSearch(view, params, navigate, say) {
  let detectors = [];
  try {
    detectors = (await getJson("/v1/detectors")).detectors.map((d) => d.name);
  } catch { /* the filter still works without the list */ }
  const results = h("div", { class: "cards", id: "results" });
  const summary = h("p", { id: "summary", class: "muted" });
  const more = h("button", { type: "button", id: "more", hidden: true }, "More");
  const form = filterForm(params, detectors, (next) => navigate(`#/search?${next}`));
  clear(view).append(h("h1", {}, "Search"), form, summary, results, more);

  const query = new URLSearchParams(params);
  if (!query.has("limit")) query.set("limit", "24");
  let cursor = null;
  let shown = 0;
  async function page() {
    more.disabled = true;
    const current = new URLSearchParams(query);
    if (cursor) current.set("cursor", cursor);
    try {
      const found = await getJson("/v1/search", current);
      results.append(...found.items.map(card));
      shown += found.items.length;
      summary.textContent = `${shown} of ${found.total} records`;
      cursor = found.next;
      more.hidden = !cursor;
    } catch (error) {
      say(error.message, true);
    } finally {
      more.disabled = false;
    }
  }
  more.addEventListener("click", page);
  await page();
}
