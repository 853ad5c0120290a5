// The dashboard: figures from /v1/aggregations (one call per verdict, kind and review label, each
// filtered server-side; dedup savings from the index's sighting totals), the detectors against the
// reviews from /v1/detectors/agreement and the stream's stored failures from /v1/failures.
import { getJson } from "./api.js";
import { bars, legend, stackedBars } from "./charts.js";
import { clear, fmtPlatt, fmtSeconds, h } from "./dom.js";

const VERDICTS = [
  { name: "fake", cls: "v-fake" }, { name: "uncertain", cls: "v-uncertain" }, { name: "real", cls: "v-real" },
  { name: "no_face", cls: "v-no_face" }, { name: "error", cls: "v-error" }, { name: "unscored", cls: "v-unscored" },
];
const REVIEWS = ["fake", "real", "unsure"];

function tile(label, value, id, note) {
  return h("div", { class: "tile", id }, h("span", { class: "tile-value" }, String(value)),
    h("span", { class: "tile-label" }, label), note ? h("span", { class: "muted" }, note) : null);
}

function panel(title, id, ...children) {
  return h("section", { class: "panel", id }, h("h2", {}, title), ...children);
}

function aggregate(base, extra) {
  const params = new URLSearchParams(base);
  for (const [k, v] of Object.entries(extra || {})) params.set(k, v);
  return getJson("/v1/aggregations", params);
}

// What dedup saved, from the index's exact totals over every selected record: a repeat of a known URL
// was neither downloaded nor scored (sightings beyond the distinct URLs); another URL with the same
// bytes was downloaded but not scored (distinct URLs beyond the records); a near-duplicate reused a
// verdict instead of being scored.
function dedupSavings(all) {
  const urlRepeats = all.sightings - all.distinct_urls;
  const sameBytes = Math.max(0, all.distinct_urls - all.total);
  const near = all.by_dedup.near || 0;
  return { urlRepeats, sameBytes, near, downloads: urlRepeats, scorings: urlRepeats + sameBytes + near };
}

// The worker's stored failures (the dead letters moderators can see), or why they are not available.
async function recentFailures() {
  try {
    return await getJson("/v1/failures", new URLSearchParams({ limit: "20", scan: "2000" }));
  } catch (error) {
    return { error: error.message };
  }
}

function countTable(title, id, counts) {
  const rows = Object.entries(counts);
  return h("table", { class: "grid-table", id },
    h("thead", {}, h("tr", {}, h("th", {}, title), h("th", {}, "failures"))),
    h("tbody", {}, rows.map(([name, n]) => h("tr", {}, h("td", {}, name), h("td", {}, String(n))))));
}

function failuresPanel(failures) {
  if (failures.error) return [h("p", { class: "muted" }, `Failures are not available: ${failures.error}`)];
  if (!failures.scanned) return [h("p", { class: "muted", id: "f-none" }, "No stored failures.")];
  const scope = failures.truncated ? `the ${failures.scanned} failure documents read (there are more)` : "every stored failure";
  return [
    h("p", { class: "muted" }, `URLs the stream gave up on, over ${scope}; not narrowed by the date filter.`),
    countTable("stage", "f-by-stage", failures.by_stage),
    countTable("error type", "f-by-type", failures.by_error_type),
    h("h3", {}, "Most recent"),
    h("table", { class: "grid-table", id: "f-recent" },
      h("thead", {}, h("tr", {}, ["when", "stage", "reason", "URL"].map((t) => h("th", {}, t)))),
      h("tbody", {}, failures.items.map((f) => h("tr", {},
        h("td", {}, f.at.replace("T", " ").slice(0, 19)), h("td", {}, f.stage),
        h("td", { class: "wrap" }, `${f.error_type}: ${f.reason}`), h("td", { class: "wrap" }, f.canonical_url))))),
    failures.unreadable ? h("p", { class: "muted" }, `${failures.unreadable} damaged failure documents skipped.`) : null,
  ];
}

// How each detector's recorded scores agree with moderators' fake/real reviews (or why that is not available).
async function agreement(base) {
  try {
    return await getJson("/v1/detectors/agreement", base);
  } catch (error) {
    return { error: error.message };
  }
}

function fixed(value) {
  return value === null || value === undefined ? "–" : value.toFixed(3);
}

function agreementPanel(found) {
  if (found.error) return [h("p", { class: "muted" }, `Not available: ${found.error}`)];
  if (!found.reviewed) return [h("p", { class: "muted", id: "a-none" }, "No record is reviewed fake or real yet.")];
  const rows = Object.entries(found.summaries);
  return [
    h("p", { class: "muted" }, "The scores each detector gave when the media was scored, against the " +
      `${found.reviewed} record${found.reviewed === 1 ? "" : "s"} moderators labelled fake or real` +
      `${found.truncated ? " (the newest ones: there are more)" : ""}. ` +
      "AUC: the chance that a reviewed fake scored above a reviewed real."),
    h("table", { class: "grid-table", id: "agreement" },
      h("thead", {}, h("tr", {}, ["detector", "AUC", "accuracy at 0.5", "reviewed fake", "reviewed real",
        "mean P(fake) of fakes", "of reals"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map(([name, s]) => h("tr", { "data-detector": name },
        h("td", {}, name), h("td", {}, fixed(s.auc)), h("td", {}, fixed(s.accuracy)), h("td", {}, String(s.fakes)),
        h("td", {}, String(s.reals)), h("td", {}, fixed(s.mean_p_fake_of_fakes)), h("td", {}, fixed(s.mean_p_fake_of_reals)))))),
    h("p", { class: "muted" }, found.setting
      ? `Platt parameters fitted on them (deepwatch detectors calibrate): ${found.setting}`
      : "Too few reviews of each label to fit Platt parameters (deepwatch detectors calibrate)."),
    h("p", { class: "muted", id: "a-in-force" }, Object.keys(found.in_force || {}).length
      ? `In force in this deployment: Platt ${fmtPlatt(found.in_force)}.`
      : "In force in this deployment: none (each detector's score as it is)."),
  ];
}

function meanScore(histogram) {
  const n = histogram.reduce((a, b) => a + b, 0);
  if (!n) return null;
  return histogram.reduce((sum, count, i) => sum + count * (i + 0.5) / histogram.length, 0) / n;
}

export async function renderDashboard(view, params) {
  const base = new URLSearchParams(params);
  const since = h("input", { name: "since", id: "d-since", value: base.get("since") || "", placeholder: "7d, 2026-11-01" });
  const form = h("form", { class: "filters inline", id: "dashboard-form" },
    h("label", { class: "field" }, h("span", {}, "Seen since"), since),
    h("button", { type: "submit" }, "Apply"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const next = new URLSearchParams();
    if (since.value.trim()) next.set("since", since.value.trim());
    location.hash = `#/dashboard?${next}`;
  });
  const body = h("div", { id: "dashboard" }, h("p", { class: "muted" }, "loading…"));
  clear(view).append(h("h1", {}, "Dashboard"), form, body);

  const [all, verdicts, kinds, reviewed, failures, agreed] = await Promise.all([
    aggregate(base),
    Promise.all(VERDICTS.map((v) => aggregate(base, { verdict: v.name }))),
    Promise.all(["image", "video"].map((k) => aggregate(base, { kind: k }))),
    Promise.all(REVIEWS.map((r) => aggregate(base, { review: r }))),
    recentFailures(),
    agreement(base),
  ]);
  const savings = dedupSavings(all);

  const days = [...new Set(verdicts.flatMap((a) => Object.keys(a.by_day)))].sort();
  const perDay = days.map((day) => ({
    label: day.slice(5),
    values: Object.fromEntries(VERDICTS.map((v, i) => [v.name, verdicts[i].by_day[day] || 0])),
  }));
  const scored = all.total - (all.by_verdict.unscored || 0);
  const mean = meanScore(all.score_histogram);
  const reviewTotal = reviewed.reduce((sum, a) => sum + a.total, 0);
  const stages = Object.entries(all.stage_seconds);

  body.replaceChildren(
    h("div", { class: "tiles" },
      tile("records", all.total, "t-total"),
      tile("scored", scored, "t-scored"),
      tile("flagged fake", all.by_verdict.fake || 0, "t-fake"),
      tile("reviewed", reviewTotal, "t-reviewed"),
      tile("mean P(fake)", mean === null ? "–" : `≈${mean.toFixed(2)}`, "t-mean", "from the histogram")),
    panel("Items per verdict over time", "p-verdict-time",
      days.length ? stackedBars("records per day of first sighting, by verdict", perDay, VERDICTS) : h("p", { class: "muted" }, "no records"),
      legend(VERDICTS)),
    panel("Score histogram", "p-histogram",
      bars("records per ensemble score bin", all.score_histogram.map((value, i) => ({ label: (i / 10).toFixed(1), value })), "b-score")),
    panel("Dedup savings", "p-dedup",
      h("div", { class: "tiles" },
        tile("downloads avoided", savings.downloads, "t-downloads-avoided", "repeats of known URLs"),
        tile("scorings avoided", savings.scorings, "t-scorings-avoided",
          "URL repeats + same bytes + near-duplicates")),
      h("table", { class: "grid-table" }, h("tbody", {},
        h("tr", {}, h("td", {}, "known URL seen again (no download, no scoring)"), h("td", { id: "d-url" }, String(savings.urlRepeats))),
        h("tr", {}, h("td", {}, "same bytes at another URL (downloaded, not scored)"), h("td", { id: "d-exact" }, String(savings.sameBytes))),
        h("tr", {}, h("td", {}, "near-duplicate records reusing a verdict (downloaded, not scored)"), h("td", { id: "d-near" }, String(savings.near))))),
      h("p", { class: "muted" }, `${all.sightings} sightings of ${all.distinct_urls} URLs, ${all.total} records.`)),
    panel("Throughput", "p-throughput",
      days.length ? bars("new records per day", days.map((d) => ({ label: d.slice(5), value: all.by_day[d] || 0 })), "b-default") : h("p", { class: "muted" }, "no records")),
    panel("Per-stage latency", "p-stages",
      stages.length
        ? h("table", { class: "grid-table" },
          h("thead", {}, h("tr", {}, ["stage", "count", "p50", "p90", "p99"].map((t) => h("th", {}, t)))),
          h("tbody", {}, stages.map(([stage, t]) => h("tr", {}, h("td", {}, stage), h("td", {}, String(t.count)),
            h("td", {}, fmtSeconds(t.p50)), h("td", {}, fmtSeconds(t.p90)), h("td", {}, fmtSeconds(t.p99))))))
        : h("p", { class: "muted" }, "The records carry no stage timings.")),
    panel("By platform, kind and review", "p-breakdown",
      bars("records per platform", Object.entries(all.by_platform).map(([label, value]) => ({ label, value })), "b-default"),
      h("table", { class: "grid-table", id: "breakdown" }, h("tbody", {},
        ["image", "video"].map((k, i) => h("tr", {}, h("td", {}, `kind ${k}`), h("td", {}, String(kinds[i].total)))),
        REVIEWS.map((r, i) => h("tr", {}, h("td", {}, `reviewed ${r}`), h("td", { id: `d-review-${r}` }, String(reviewed[i].total))))))),
    panel("Detectors against reviews", "p-agreement", ...agreementPanel(agreed)),
    panel("Dead letters by reason", "p-dlq", ...failuresPanel(failures)),
  );
}
