// Building DOM from data. Record fields (titles, URLs, uploaders, notes) are attacker-controlled:
// they only ever become text nodes or attribute values set through the DOM, never markup.
const SVG_NS = "http://www.w3.org/2000/svg";

function fill(node, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function h(tag, attrs, ...children) {
  return fill(document.createElement(tag), attrs, children);
}

export function s(tag, attrs, ...children) {
  return fill(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function fmtScore(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(3);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

export function fmtSeconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return value < 1 ? `${(value * 1000).toFixed(0)} ms` : `${value.toFixed(2)} s`;
}

// Platt parameters by detector, {name: [a, b]}, as words: "meso4_df (3, 1), meso4_f2f (0.5, -1)"
export function fmtPlatt(platt) {
  return Object.entries(platt || {}).map(([name, [a, b]]) => `${name} (${a}, ${b})`).join(", ");
}

export function verdictBadge(verdict) {
  const name = verdict || "unscored";
  return h("span", { class: `badge v-${name.replace(/[^a-z_]/g, "")}` }, name);
}

// Media ids are sha256 hex: anything else never reaches a URL we build.
export function isMediaId(value) {
  return typeof value === "string" && /^[0-9a-f]{64}$/.test(value);
}

export function mediaHref(id) {
  return isMediaId(id) ? `#/media/${id}` : "#/search";
}

// The title a person would recognise: the first sighting hint with one.
export function titleOf(record) {
  for (const sighting of record.sightings || []) {
    if (sighting.hints && sighting.hints.title) return sighting.hints.title;
  }
  return `${record.kind} ${record.media_id.slice(0, 12)}`;
}

export function sightingCount(record) {
  return (record.sightings || []).reduce((sum, s) => sum + (s.count || 1), 0);
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function platforms(record) {
  return [...new Set((record.sightings || []).map((s) => s.platform))].join(", ") || "–";
}

// A link out to a crawled URL: shown as text, opened only on purpose, in a new context that gets
// neither this page (noopener) nor where the moderator came from (noreferrer).
export function outLink(url) {
  let safe = false;
  try { safe = ["http:", "https:"].includes(new URL(url).protocol); } catch { safe = false; }
  const text = h("span", { class: "url" }, url);
  if (!safe) return text;
  return h("span", {}, text, " ",
    h("a", { href: url, target: "_blank", rel: "noopener noreferrer nofollow", referrerpolicy: "no-referrer",
      class: "out" }, "open ↗"));
}
