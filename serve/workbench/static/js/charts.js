// Charts as inline SVG, drawn from numbers only (labels become text nodes). A viewBox makes them
// scale to the width of the screen.
import { h, s } from "./dom.js";

const W = 600;
const H = 220;
const PAD = { left: 44, right: 8, top: 10, bottom: 42 };

function frame(title, width = W, height = H) {
  return s("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img", "aria-label": title },
    s("title", {}, title));
}

function niceMax(value) {
  if (value <= 0) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return Math.ceil(value / step) * step;
}

function yAxis(svg, max, height) {
  const plot = height - PAD.top - PAD.bottom;
  for (const fraction of [0, 0.5, 1]) {
    const y = PAD.top + plot * (1 - fraction);
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: y, y2: y, class: "grid" }));
    const value = max * fraction;
    svg.append(s("text", { x: PAD.left - 4, y: y + 4, class: "tick", "text-anchor": "end" },
      Number.isInteger(value) ? value : value.toFixed(1)));
  }
}

// series: [{name, cls}], groups: [{label, values: {name: number}}]; bars stacked per group.
export function stackedBars(title, groups, series) {
  const svg = frame(title);
  const totals = groups.map((g) => series.reduce((sum, x) => sum + (g.values[x.name] || 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  yAxis(svg, max, H);
  const plot = H - PAD.top - PAD.bottom;
  const slot = (W - PAD.left - PAD.right) / Math.max(1, groups.length);
  const bar = Math.max(2, Math.min(40, slot * 0.7));
  const labelEvery = Math.ceil(groups.length / 8);
  groups.forEach((group, i) => {
    const x = PAD.left + slot * i + (slot - bar) / 2;
    let top = PAD.top + plot;
    for (const item of series) {
      const value = group.values[item.name] || 0;
      if (!value) continue;
      const height = (value / max) * plot;
      top -= height;
      svg.append(s("rect", { x, y: top, width: bar, height, class: `bar ${item.cls}` },
        s("title", {}, `${group.label} ${item.name}: ${value}`)));
    }
    if (i % labelEvery === 0) {
      svg.append(s("text", { x: x + bar / 2, y: H - PAD.bottom + 14, class: "tick", "text-anchor": "middle" },
        group.label));
    }
  });
  return svg;
}

export function bars(title, items, cls = "b-default") {
  return stackedBars(title, items.map((item) => ({ label: item.label, values: { value: item.value } })),
    [{ name: "value", cls }]);
}

export function legend(series) {
  return h("ul", { class: "legend" },
    series.map((item) => h("li", {}, h("span", { class: `swatch ${item.cls}` }), item.name)));
}

// A strip over a clip's duration with a mark at each time, one row per named series.
export function timeStrip(title, duration, rows) {
  const height = 28 * rows.length + 26;
  const svg = frame(title, W, height);
  const span = Math.max(duration || 0, ...rows.flatMap((r) => r.times), 0.001);
  const left = 90;
  const width = W - left - PAD.right;
  rows.forEach((row, i) => {
    const y = 8 + i * 28;
    svg.append(s("text", { x: 0, y: y + 14, class: "tick" }, row.name));
    svg.append(s("rect", { x: left, y, width, height: 20, class: "track" }));
    for (const t of row.times) {
      svg.append(s("rect", { x: left + (t / span) * (width - 3), y, width: 3, height: 20, class: `mark ${row.cls}` },
        s("title", {}, `${t.toFixed(2)} s`)));
    }
  });
  const axisY = height - 6;
  svg.append(s("text", { x: left, y: axisY, class: "tick" }, "0 s"));
  svg.append(s("text", { x: W - PAD.right, y: axisY, class: "tick", "text-anchor": "end" }, `${span.toFixed(1)} s`));
  return svg;
}
