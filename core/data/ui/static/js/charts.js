// Small SVG charts drawn by hand: horizontal (optionally stacked) bars and a sparkline.
// Each bar chart comes with its data as a table, for screen readers and exact numbers.

import { h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}

function clip(text, max) {
  const t = String(text);
  return t.length > max ? `${t.slice(0, max - 1)}…` : t;
}

/**
 * rows: [{label, values: [n, ...]}]; series: names of the stacked values.
 * format(total) renders the number at the end of a bar.
 */
export function barChart({ title, rows, series = ["Value"], format = (v) => v.toLocaleString() }) {
  const width = 460;
  const labelWidth = 140;
  const valueWidth = 64;
  const barHeight = 20;
  const gap = 8;
  const plot = width - labelWidth - valueWidth;
  const height = Math.max(1, rows.length) * (barHeight + gap) + gap;
  const totals = rows.map((r) => r.values.reduce((a, b) => a + (b || 0), 0));
  const max = Math.max(0, ...totals) || 1;
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": `${title} (bar chart; the data is in the table below)` });
  if (!rows.length) {
    svg.append(s("text", { x: 8, y: 20, class: "value" }, "No data for this period."));
  }
  rows.forEach((row, i) => {
    const y = gap + i * (barHeight + gap);
    svg.append(s("text", { x: labelWidth - 8, y: y + barHeight * 0.7, "text-anchor": "end" },
      s("title", {}, row.label), clip(row.label, 22)));
    let x = labelWidth;
    row.values.forEach((v, j) => {
      const w = ((v || 0) / max) * plot;
      if (w > 0) {
        svg.append(s("rect", { x, y, width: Math.max(w, 1), height: barHeight, rx: 3, class: j ? "bar alt" : "bar" },
          s("title", {}, `${row.label} · ${series[j]}: ${format(v || 0)}`)));
      }
      x += w;
    });
    svg.append(s("text", { x: x + 6, y: y + barHeight * 0.7, class: "value" }, format(totals[i])));
  });
  const table = h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), series.map((name) => h("th", { class: "num" }, name)),
      series.length > 1 ? h("th", { class: "num" }, "Total") : null)),
    h("tbody", {}, rows.map((r, i) => h("tr", {}, h("td", {}, r.label),
      r.values.map((v) => h("td", { class: "num" }, format(v || 0))),
      series.length > 1 ? h("td", { class: "num" }, format(totals[i])) : null))));
  return h("figure", { class: "chart panel" },
    h("figcaption", {}, h("h3", {}, title)), svg,
    series.length > 1 ? h("div", { class: "legend", "aria-hidden": "true" },
      series.map((name, j) => h("span", { class: j ? "alt" : "" }, name))) : null,
    h("details", {}, h("summary", { class: "small muted" }, "Show as a table"), h("div", { class: "table-wrap" }, table)));
}

/** A sparkline of recent values (newest last). */
export function sparkline(values, label) {
  const width = 200;
  const height = 48;
  const max = Math.max(1e-9, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => [i * step, height - 2 - (v / max) * (height - 6)]);
  const line = points.map(([x, y], i) => `${i ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
  const svg = s("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img", "aria-label": label });
  if (points.length > 1) {
    svg.append(s("path", { class: "area", d: `${line} L${width},${height} L0,${height} Z` }), s("path", { d: line }));
  }
  return svg;
}
