// GET /status: one self-contained HTML page (inline CSS and JS, nothing fetched from elsewhere)
// that draws GET /v1/regions (edge/regions-view.ts) for a person: overall state, a map of the
// regions, a table of regions, latency over the last hour, latency per caller colo and errors.
// The page asks for an API key (input box, kept in sessionStorage: this tab only, gone when it
// closes), sends it as a bearer token and refreshes every 5 s. A key never travels in a URL: a
// `?key=` is scrubbed from the address bar and not used. It runs under a nonce CSP
// (page-security.ts): no inline handlers or style attributes, styles are set through CSSOM.
//
// The browser script is a plain string (not a compiled function): the Worker is checked without
// DOM types, and a bundler's renaming helpers must not leak into it. It builds every element with
// createElement/textContent, never innerHTML, so names from the API cannot inject markup. The
// script avoids backticks, "${" and backslashes because it sits inside a template literal.

/** Map projection shared by the static map (drawn here) and the dots (drawn by the page). */
const MAP_LAT_TOP = 80;
const MAP_LAT_BOTTOM = -60;
const MAP_SCALE = 2; // SVG units per degree
const MAP_W = 360 * MAP_SCALE;
const MAP_H = (MAP_LAT_TOP - MAP_LAT_BOTTOM) * MAP_SCALE;

function mapX(lon: number): number {
  return (lon + 180) * MAP_SCALE;
}
function mapY(lat: number): number {
  return (MAP_LAT_TOP - Math.max(MAP_LAT_BOTTOM, Math.min(MAP_LAT_TOP, lat))) * MAP_SCALE;
}

/** Very coarse land outlines, [lon, lat] pairs: only there so the dots read as places. */
const LAND: [number, number][][] = [
  // North America
  [
    [-168, 66], [-162, 70], [-140, 70], [-125, 70], [-95, 72], [-80, 73], [-62, 66], [-55, 52],
    [-66, 45], [-70, 42], [-76, 35], [-81, 31], [-80, 25], [-84, 30], [-90, 29], [-97, 27],
    [-97, 22], [-92, 18], [-87, 21], [-88, 16], [-83, 10], [-78, 8], [-83, 8], [-92, 14],
    [-105, 20], [-110, 23], [-112, 29], [-117, 32], [-124, 40], [-124, 48], [-133, 56],
    [-150, 60], [-165, 60],
  ],
  // Greenland
  [[-73, 78], [-60, 80], [-30, 80], [-20, 75], [-22, 70], [-43, 60], [-50, 64], [-55, 70]],
  // South America
  [
    [-78, 8], [-72, 12], [-62, 11], [-50, 0], [-35, -5], [-39, -13], [-41, -22], [-48, -26],
    [-53, -34], [-58, -38], [-65, -41], [-65, -55], [-70, -55], [-75, -50], [-72, -30],
    [-70, -18], [-76, -14], [-81, -5], [-80, 1],
  ],
  // Eurasia
  [
    [-10, 36], [-9, 43], [-2, 44], [-5, 48], [2, 51], [8, 54], [10, 57], [5, 58], [5, 62],
    [15, 69], [25, 71], [40, 68], [60, 70], [70, 73], [80, 73], [100, 78], [115, 74], [140, 73],
    [160, 70], [180, 68], [180, 65], [172, 60], [163, 60], [156, 51], [142, 59], [137, 54],
    [141, 48], [135, 43], [129, 40], [129, 35], [126, 35], [126, 38], [121, 40], [118, 38],
    [122, 31], [121, 28], [117, 23], [110, 21], [106, 20], [108, 12], [105, 9], [100, 13],
    [101, 3], [104, 1], [98, 8], [98, 16], [94, 17], [91, 22], [87, 21], [80, 15], [77, 8],
    [73, 17], [72, 21], [67, 25], [57, 25], [56, 26], [59, 22], [52, 16], [43, 13], [39, 21],
    [34, 28], [35, 36], [27, 37], [24, 38], [20, 40], [16, 38], [12, 44], [8, 44], [3, 43],
    [0, 39], [-6, 36],
  ],
  // Africa
  [
    [-17, 21], [-16, 12], [-12, 7], [-8, 4], [2, 6], [9, 4], [9, -1], [13, -10], [12, -17],
    [15, -27], [18, -34], [26, -34], [32, -28], [35, -21], [40, -15], [40, -4], [51, 12],
    [43, 12], [38, 18], [34, 28], [32, 31], [20, 32], [10, 37], [-6, 36], [-10, 30],
  ],
  // Australia
  [
    [114, -22], [122, -18], [130, -12], [137, -12], [142, -11], [146, -19], [153, -25],
    [151, -33], [146, -39], [138, -35], [131, -31], [117, -35], [114, -28],
  ],
  // Great Britain, Japan, Borneo, Sumatra, New Guinea, New Zealand, Madagascar
  [[-5, 50], [1, 51], [0, 53], [-2, 57], [-5, 58], [-6, 56], [-3, 55], [-5, 52]],
  [[130, 31], [133, 34], [140, 35], [142, 40], [145, 44], [141, 45], [139, 40], [136, 36], [131, 34]],
  [[109, 1], [117, 7], [119, 1], [116, -4], [110, -3]],
  [[95, 5], [98, 4], [106, -5], [104, -6]],
  [[131, -1], [141, -3], [150, -10], [142, -9], [138, -8]],
  [[172, -35], [178, -38], [174, -41], [167, -46], [171, -44]],
  [[44, -25], [49, -13], [50, -16], [47, -25]],
];

function staticMapSvg(): string {
  const parts: string[] = [];
  parts.push(`<rect class="sea" x="0" y="0" width="${MAP_W}" height="${MAP_H}" rx="6"/>`);
  for (const shape of LAND) {
    const pts = shape.map(([lon, lat]) => `${mapX(lon).toFixed(0)},${mapY(lat).toFixed(0)}`).join(" ");
    parts.push(`<polygon class="land" points="${pts}"/>`);
  }
  for (let lon = -150; lon <= 150; lon += 30) {
    const x = mapX(lon);
    parts.push(`<line class="graticule${lon === 0 ? " equator" : ""}" x1="${x}" y1="0" x2="${x}" y2="${MAP_H}"/>`);
    const label = lon === 0 ? "0°" : `${Math.abs(lon)}°${lon < 0 ? "W" : "E"}`;
    parts.push(`<text class="grat-label" x="${x + 3}" y="${MAP_H - 5}">${label}</text>`);
  }
  for (let lat = -30; lat <= 60; lat += 30) {
    const y = mapY(lat);
    parts.push(`<line class="graticule${lat === 0 ? " equator" : ""}" x1="0" y1="${y}" x2="${MAP_W}" y2="${y}"/>`);
    const label = lat === 0 ? "0°" : `${Math.abs(lat)}°${lat < 0 ? "S" : "N"}`;
    parts.push(`<text class="grat-label" x="4" y="${y - 4}">${label}</text>`);
  }
  return parts.join("");
}

const CSS = `
:root {
  color-scheme: light;
  --bg: #f3f5f8; --card: #ffffff; --text: #111827; --muted: #5b6472; --faint: #8a929e;
  --border: #e2e6ec; --head: #f7f8fa;
  --ok: #17692f; --ok-bg: #e3f4e8; --ok-dot: #1f9d49;
  --warn: #8a5300; --warn-bg: #fff2cf; --warn-dot: #e49b00;
  --bad: #b42318; --bad-bg: #fde8e7; --bad-dot: #d92d20;
  --unk: #4b5563; --unk-bg: #eceef1; --unk-dot: #9aa1ab;
  --accent: #2563eb;
}
* { box-sizing: border-box; }
html, body { margin: 0; }
body {
  background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
.wrap { max-width: 1320px; margin: 0 auto; padding: 0 20px; }
header.top { background: #0f172a; color: #f8fafc; }
header.top .wrap { display: flex; align-items: center; justify-content: space-between; gap: 16px; padding-top: 16px; padding-bottom: 16px; flex-wrap: wrap; }
header.top h1 { margin: 0; font-size: 20px; font-weight: 650; letter-spacing: 0.01em; }
header.top .sub { margin: 2px 0 0; color: #a5b0c2; font-size: 13px; }
.overall { display: flex; align-items: center; gap: 12px; padding: 10px 18px; border-radius: 12px; background: var(--unk-bg); color: var(--unk); min-width: 280px; }
.overall .big-dot { width: 16px; height: 16px; border-radius: 50%; background: var(--unk-dot); flex: none; box-shadow: 0 0 0 4px rgba(255,255,255,0.6); }
.overall strong { display: block; font-size: 18px; line-height: 1.2; }
.overall .detail { display: block; font-size: 13px; opacity: 0.9; }
.overall[data-state="healthy"] { background: var(--ok-bg); color: var(--ok); }
.overall[data-state="healthy"] .big-dot { background: var(--ok-dot); }
.overall[data-state="degraded"] { background: var(--warn-bg); color: var(--warn); }
.overall[data-state="degraded"] .big-dot { background: var(--warn-dot); }
.overall[data-state="down"] { background: var(--bad-bg); color: var(--bad); }
.overall[data-state="down"] .big-dot { background: var(--bad-dot); }
.bar { background: #fff; border-bottom: 1px solid var(--border); }
.bar .wrap { display: flex; align-items: center; justify-content: space-between; gap: 12px 24px; padding-top: 10px; padding-bottom: 10px; flex-wrap: wrap; }
.facts { display: flex; gap: 8px 20px; flex-wrap: wrap; align-items: center; color: var(--muted); }
.facts b { color: var(--text); font-weight: 600; }
.pill { display: inline-block; padding: 1px 9px; border-radius: 999px; font-weight: 600; font-size: 12.5px; background: var(--unk-bg); color: var(--unk); }
.pill.ok { background: var(--ok-bg); color: var(--ok); }
.pill.bad { background: var(--bad-bg); color: var(--bad); }
.pill.warn { background: var(--warn-bg); color: var(--warn); }
form.key { display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
form.key label { color: var(--muted); font-weight: 600; white-space: nowrap; }
form.key input { width: 250px; max-width: 100%; flex: 0 1 250px; min-width: 120px; padding: 6px 10px; border: 1px solid #c9d0da; border-radius: 8px; font: inherit; }
form.key input:focus, button:focus-visible, input[type="checkbox"]:focus-visible { outline: 3px solid #93b4f5; outline-offset: 1px; }
button { font: inherit; padding: 6px 12px; border-radius: 8px; border: 1px solid #c9d0da; background: #fff; color: var(--text); cursor: pointer; }
button.primary { background: var(--accent); border-color: var(--accent); color: #fff; font-weight: 600; }
.banner { margin: 14px 0 0; padding: 11px 14px; border-radius: 10px; border: 1px solid; font-weight: 500; }
.banner.error { background: var(--bad-bg); color: var(--bad); border-color: #f5b5b0; }
.banner.info { background: #e8f0fe; color: #1e3a8a; border-color: #bfd3fb; }
.banner.warn { background: var(--warn-bg); color: var(--warn); border-color: #f3d38a; }
.banner strong { font-weight: 700; }
main { padding-bottom: 24px; }
main.outdated .card { opacity: 0.65; }
.grid { display: grid; gap: 16px; margin-top: 16px; }
.grid.map-row { grid-template-columns: minmax(0, 1.75fr) minmax(0, 1fr); }
.grid.halves { grid-template-columns: minmax(0, 1.25fr) minmax(0, 1fr); }
@media (max-width: 980px) { .grid.map-row, .grid.halves { grid-template-columns: minmax(0, 1fr); } }
@media (max-width: 560px) { .wrap { padding: 0 12px; } .overall { min-width: 0; width: 100%; } #map .map-sub { display: none; } ul.legend { margin-left: 0; } }
.card { background: var(--card); border: 1px solid var(--border); border-radius: 12px; padding: 14px 16px 16px; min-width: 0; }
abbr[title] { text-decoration: none; cursor: help; }
.card > h2, .card-head h2 { margin: 0 0 10px; font-size: 15px; font-weight: 650; }
.card-head { display: flex; justify-content: space-between; align-items: baseline; gap: 12px; }
.card-head label { color: var(--muted); font-size: 13px; user-select: none; }
.hint { color: var(--muted); font-size: 12.5px; margin: -6px 0 10px; }
svg { display: block; }
#map { width: 100%; height: auto; }
#map .sea { fill: #eef3f8; }
#map .land { fill: #dbe2ea; stroke: #cbd4de; stroke-width: 0.6; stroke-linejoin: round; }
#map .graticule { stroke: #c4ceda; stroke-width: 0.5; stroke-dasharray: 2 3; }
#map .graticule.equator { stroke: #aab6c4; stroke-dasharray: none; }
#map .grat-label { fill: #8a95a3; font-size: 9px; }
#map .region-dot { stroke: #fff; stroke-width: 2.5; }
#map .halo { fill: none; stroke-width: 2; opacity: 0.55; }
#map .map-label { font-size: 13px; font-weight: 700; fill: #111827; paint-order: stroke; stroke: #fff; stroke-width: 4px; stroke-linejoin: round; }
#map .map-sub { font-size: 11px; fill: #374151; paint-order: stroke; stroke: #fff; stroke-width: 4px; stroke-linejoin: round; }
.fill-healthy { fill: var(--ok-dot); } .stroke-healthy { stroke: var(--ok-dot); }
.fill-stale { fill: var(--warn-dot); } .stroke-stale { stroke: var(--warn-dot); }
.fill-unhealthy { fill: var(--bad-dot); } .stroke-unhealthy { stroke: var(--bad-dot); }
.fill-unknown { fill: var(--unk-dot); } .stroke-unknown { stroke: var(--unk-dot); }
.key-legend { display: flex; gap: 14px; flex-wrap: wrap; list-style: none; padding: 0; margin: 10px 0 0; color: var(--muted); font-size: 12.5px; }
.key-legend li { display: inline-flex; align-items: center; gap: 6px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 50%; background: var(--unk-dot); flex: none; }
.dot.healthy { background: var(--ok-dot); } .dot.stale { background: var(--warn-dot); }
.dot.unhealthy { background: var(--bad-dot); } .dot.unknown { background: var(--unk-dot); }
dl.tiles { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 10px; margin: 0; }
dl.tiles > .empty { grid-column: 1 / -1; }
dl.tiles .tile { background: var(--head); border: 1px solid var(--border); border-radius: 10px; padding: 10px 12px; }
dl.tiles dt { color: var(--muted); font-size: 12.5px; font-weight: 600; }
dl.tiles dd { margin: 2px 0 0; font-size: 22px; font-weight: 700; font-variant-numeric: tabular-nums; line-height: 1.2; }
dl.tiles dd small { display: block; font-size: 12px; font-weight: 500; color: var(--muted); }
dl.tiles .tile.warn dd { color: var(--warn); } dl.tiles .tile.bad dd { color: var(--bad); } dl.tiles .tile.ok dd { color: var(--ok); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
caption { text-align: left; }
th, td { padding: 8px 10px; border-bottom: 1px solid var(--border); text-align: left; vertical-align: top; }
thead th { background: var(--head); color: var(--muted); font-size: 12px; font-weight: 650; text-transform: uppercase; letter-spacing: 0.03em; white-space: nowrap; border-bottom: 1px solid #d5dbe3; }
tbody tr:last-child > * { border-bottom: none; }
th.num, td.num { text-align: right; white-space: nowrap; }
tbody th { font-weight: 650; }
#regions-table tbody tr { border-left: 4px solid transparent; }
#regions-table tbody tr.row-healthy { border-left-color: var(--ok-dot); }
#regions-table tbody tr.row-stale { border-left-color: var(--warn-dot); background: #fffaf0; }
#regions-table tbody tr.row-unhealthy { border-left-color: var(--bad-dot); background: #fff7f6; }
#regions-table tbody tr.row-unknown { border-left-color: var(--unk-dot); }
#regions-table td, #regions-table th { vertical-align: middle; }
.region-name { display: inline-flex; align-items: center; gap: 8px; font-size: 15px; white-space: nowrap; }
.swatch { display: inline-block; width: 12px; height: 4px; border-radius: 2px; flex: none; }
.sub-line { display: block; color: var(--muted); font-size: 12px; font-weight: 400; white-space: nowrap; }
.badge { display: inline-flex; align-items: center; gap: 6px; padding: 2px 10px 2px 8px; border-radius: 999px; font-weight: 700; font-size: 13px; background: var(--unk-bg); color: var(--unk); white-space: nowrap; }
.badge.healthy { background: var(--ok-bg); color: var(--ok); }
.badge.stale { background: var(--warn-bg); color: var(--warn); }
.badge.unhealthy { background: var(--bad-bg); color: var(--bad); }
.age.stale, .age.unhealthy { color: var(--warn); font-weight: 600; }
.age.unhealthy { color: var(--bad); }
.meter { display: block; width: 84px; height: 5px; border-radius: 3px; background: #e5e9ef; margin: 4px 0 0 auto; overflow: hidden; }
.meter > span { display: block; height: 100%; background: #60a5fa; }
.meter > span.full { background: var(--bad-dot); }
.meter > span.high { background: var(--warn-dot); }
td.lat { font-weight: 600; }
td.lat.p99 { color: #374151; }
.nonzero { color: var(--warn); font-weight: 700; }
ul.chips { list-style: none; margin: 4px 0 0; padding: 0; display: flex; gap: 4px; flex-wrap: wrap; }
ul.chips li { background: #eef2ff; color: #3730a3; border-radius: 6px; padding: 1px 7px; font-size: 12px; font-weight: 600; white-space: nowrap; }
.muted { color: var(--muted); }
.empty { color: var(--muted); padding: 14px 4px; text-align: center; }
#chart { width: 100%; height: 300px; }
#chart .grid-line { stroke: #e7ebf0; stroke-width: 1; }
#chart .axis { stroke: #9aa4b2; stroke-width: 1; }
#chart .tick { fill: #5b6472; font-size: 11.5px; font-variant-numeric: tabular-nums; }
#chart .axis-title { fill: #5b6472; font-size: 12px; font-weight: 600; }
#chart .line { fill: none; stroke-linejoin: round; stroke-linecap: round; }
#chart .line.p50 { stroke-width: 2.25; }
#chart .line.p99 { stroke-width: 1.6; stroke-dasharray: 6 4; }
#chart .empty-note { fill: #5b6472; font-size: 14px; }
ul.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 6px 22px; padding: 0; margin: 8px 0 0 56px; font-size: 13px; }
ul.legend li { display: inline-flex; align-items: center; gap: 6px; }
ul.legend .series-name { font-weight: 650; margin-right: 4px; }
ul.legend svg { flex: none; }
.rate-bar { display: inline-block; vertical-align: middle; }
.err-rate { font-weight: 700; }
.err-rate.zero { color: var(--ok); font-weight: 600; }
.err-rate.some { color: var(--warn); }
.err-rate.high { color: var(--bad); }
.best { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 6px; background: var(--ok-bg); color: var(--ok); font-size: 11px; font-weight: 700; vertical-align: 1px; }
tbody.colo-group th[scope="rowgroup"] { font-size: 14px; }
tbody.colo-group + tbody.colo-group > tr:first-child > * { border-top: 2px solid #d5dbe3; }
footer { color: var(--faint); font-size: 12px; padding: 8px 0 28px; }
`;

const CLIENT_JS = `
(() => {
  "use strict";
  const REFRESH_MS = 5000;
  const FETCH_TIMEOUT_MS = 8000;
  const STORE_KEY = "mesh.status.apiKey";
  const STORE_LOG = "mesh.status.logScale";
  const SVGNS = "http://www.w3.org/2000/svg";
  const MAP_TOP = ${MAP_LAT_TOP};
  const MAP_BOTTOM = ${MAP_LAT_BOTTOM};
  const MAP_SCALE = ${MAP_SCALE};
  const MAP_W = ${MAP_W};
  const MAP_H = ${MAP_H};
  const HEALTH = {
    healthy: "Healthy",
    unhealthy: "Unhealthy",
    stale: "Stale",
    unknown: "Unknown",
  };
  const SERIES = ["#2563eb", "#c2410c", "#7c3aed", "#0f766e", "#db2777", "#4d7c0f", "#0369a1", "#a16207"];

  const $ = (id) => document.getElementById(id);

  function build(node, attrs, kids) {
    if (attrs) {
      for (const k of Object.keys(attrs)) {
        const v = attrs[k];
        if (v === null || v === undefined || v === false) continue;
        if (k === "text") node.textContent = String(v);
        // CSSOM, not a style attribute: the CSP refuses inline style attributes.
        else if (k === "style") node.style.cssText = String(v);
        else node.setAttribute(k, v === true ? "" : String(v));
      }
    }
    add(node, kids);
    return node;
  }
  function add(node, kids) {
    if (kids === null || kids === undefined || kids === false) return;
    if (Array.isArray(kids)) { for (const k of kids) add(node, k); return; }
    if (typeof kids === "string" || typeof kids === "number") { node.appendChild(document.createTextNode(String(kids))); return; }
    node.appendChild(kids);
  }
  const el = (tag, attrs, kids) => build(document.createElement(tag), attrs, kids);
  const sv = (tag, attrs, kids) => build(document.createElementNS(SVGNS, tag), attrs, kids);
  const clear = (node) => { while (node.firstChild) node.removeChild(node.firstChild); };

  // The key lives in sessionStorage (this tab, until it closes); preferences in localStorage.
  const keyStore = () => sessionStorage;
  function load(name, area) { try { return (area || localStorage).getItem(name); } catch (e) { return null; } }
  function store(name, value, area) {
    try { const a = area || localStorage; if (value === null) a.removeItem(name); else a.setItem(name, value); } catch (e) { /* storage disabled */ }
  }

  const nf = new Intl.NumberFormat();
  const isNum = (v) => typeof v === "number" && isFinite(v);
  const fmtInt = (v) => (isNum(v) ? nf.format(Math.round(v)) : "—");
  function fmtMs(v, count) {
    if (count === 0 || !isNum(v)) return "—";
    return v < 10 ? v.toFixed(1) : nf.format(Math.round(v));
  }
  function fmtAge(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + (s % 60) + " s";
    const hr = Math.floor(m / 60);
    if (hr < 48) return hr + " h " + (m % 60) + " min";
    return Math.floor(hr / 24) + " days";
  }
  function fmtPct(errors, count) {
    if (!count) return "—";
    const p = (errors / count) * 100;
    if (p === 0) return "0%";
    if (p < 0.01) return "<0.01%";
    return (p < 1 ? p.toFixed(2) : p.toFixed(1)) + "%";
  }
  function fmtMb(mb) { return mb >= 1024 ? (mb / 1024).toFixed(1) + " GB" : Math.round(mb) + " MB"; }
  function fmtClock(t, seconds) {
    const o = { hour: "2-digit", minute: "2-digit", hour12: false };
    if (seconds) o.second = "2-digit";
    return new Date(t).toLocaleTimeString([], o);
  }
  const healthOf = (r) => (Object.prototype.hasOwnProperty.call(HEALTH, r.health) ? r.health : "unknown");
  const latencyOf = (r) => r.latency || { p50: NaN, p95: NaN, p99: NaN, count: 0, errors: 0, byColo: {} };

  // ---- state ----
  let key = "";
  let view = null;
  let colors = new Map();
  let lastOkAt = 0;
  let lastFailed = false;
  let timer = 0;
  let seq = 0;
  let stopped = false;
  let refused = "";

  /** Why there is nothing to show, for the empty states. */
  function noData() {
    if (!key) return "Enter an API key to see the regions.";
    if (refused) return "No data: the edge refused this key (" + refused + ").";
    if (lastFailed) return "No data: the edge could not be reached.";
    return "Waiting for data…";
  }

  // ---- messages ----
  function showMessage(kind, parts) {
    const box = $("message");
    clear(box);
    if (!kind) { box.hidden = true; box.className = "banner"; box.removeAttribute("data-kind"); return; }
    box.className = "banner " + (kind === "info" ? "info" : "error");
    box.setAttribute("data-kind", kind);
    add(box, parts);
    box.hidden = false;
  }

  // ---- overall ----
  function overall() {
    if (!view) {
      if (!key) return { state: "unknown", title: "No API key", detail: "Enter a key to see the regions" };
      if (refused) return { state: "unknown", title: "Key refused (" + refused + ")", detail: "Enter a valid API key" };
      if (lastFailed) return { state: "unknown", title: "No data", detail: "Cannot load /v1/regions" };
      return { state: "unknown", title: "Waiting for data", detail: "Loading /v1/regions…" };
    }
    const rs = view.regions;
    if (rs.length === 0) return { state: "unknown", title: "No regions", detail: "The edge lists no region" };
    const count = { healthy: 0, stale: 0, unhealthy: 0, unknown: 0 };
    for (const r of rs) count[healthOf(r)] += 1;
    let state, title;
    if (count.healthy === rs.length) { state = view.stale ? "degraded" : "healthy"; title = view.stale ? "Healthy, data stale" : "All regions healthy"; }
    else if (count.healthy === 0) { state = "down"; title = "No healthy region"; }
    else { state = "degraded"; title = "Degraded"; }
    const detail = [count.healthy + " of " + rs.length + " healthy"];
    if (count.stale) detail.push(count.stale + " stale");
    if (count.unhealthy) detail.push(count.unhealthy + " unhealthy");
    if (count.unknown) detail.push(count.unknown + " unknown");
    if (view.stale && count.healthy === rs.length) detail.push("last-known state");
    return { state, title, detail: detail.join(" · ") };
  }

  function renderOverall() {
    const o = overall();
    const box = $("overall");
    box.setAttribute("data-state", o.state);
    $("overall-title").textContent = o.title;
    $("overall-detail").textContent = o.detail;
    box.setAttribute("aria-label", "Overall status: " + o.title + ". " + o.detail);
    document.title = o.title + " · Inference mesh status";
  }

  function renderFacts() {
    const redis = $("redis");
    if (!view) { redis.textContent = "—"; redis.className = "pill"; }
    else {
      const r = view.redis;
      redis.textContent = r === "ok" ? "ok" : r === "unreachable" ? "unreachable" : r === "not_configured" ? "not configured" : String(r);
      redis.className = "pill " + (r === "ok" ? "ok" : r === "unreachable" ? "bad" : "");
    }
    const data = $("data-state");
    if (!view) { data.textContent = "—"; data.className = "pill"; }
    else if (view.stale) { data.textContent = "stale"; data.className = "pill warn"; }
    else { data.textContent = "fresh"; data.className = "pill ok"; }
    tickUpdated();
  }

  function tickUpdated() {
    const u = $("updated");
    if (!lastOkAt) { u.textContent = "never"; return; }
    u.textContent = fmtClock(lastOkAt, true) + " (" + fmtAge(Date.now() - lastOkAt) + " ago)";
  }

  function renderStaleBanner() {
    const b = $("stale-banner");
    clear(b);
    if (!view) { b.hidden = true; return; }
    const stale = view.regions.filter((r) => healthOf(r) === "stale");
    if (!view.stale && stale.length === 0) { b.hidden = true; return; }
    const parts = [el("strong", { text: "Stale data. " })];
    if (view.stale) parts.push("Some figures are last-known state, not fresh region reports. ");
    for (const r of stale) {
      parts.push(r.name + ": " + (r.measuredAt ? "last report " + fmtAge(view.generatedAt - r.measuredAt) + " ago" : "no report") + ". ");
    }
    if (view.redis !== "ok") parts.push("Redis: " + (view.redis === "not_configured" ? "not configured" : view.redis) + ".");
    add(b, parts);
    b.hidden = false;
  }

  // ---- map ----
  function renderMap() {
    const g = $("map-dots");
    clear(g);
    const svg = $("map");
    if (!view || view.regions.length === 0) { svg.setAttribute("aria-label", "World map of regions: no data"); return; }
    const markers = view.regions.map((r) => ({
      r,
      h: healthOf(r),
      x: (Math.max(-180, Math.min(180, r.lon)) + 180) * MAP_SCALE,
      y: (MAP_TOP - Math.max(MAP_BOTTOM, Math.min(MAP_TOP, r.lat))) * MAP_SCALE,
    }));
    // Labels go beside their dot, on whichever side (and at whatever row) overlaps no other
    // label and no dot; one moved off its row gets a leader line. Text widths are estimated.
    const boxes = markers.map((m) => ({ x0: m.x - 9, x1: m.x + 9, y0: m.y - 9, y1: m.y + 9 }));
    const overlaps = (a, b) => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
    const dots = sv("g");
    const labels = sv("g");
    for (const m of markers.slice().sort((a, b) => a.y - b.y || a.x - b.x)) {
      const r = m.r;
      const lat = latencyOf(r);
      const sub = HEALTH[m.h] + (lat.count ? " · p50 " + fmtMs(lat.p50, lat.count) + " ms" : "");
      const w = Math.max(r.name.length * 7.8, sub.length * 6.2) + 4;
      const gap = m.h === "healthy" ? 12 : 17;
      let best = null;
      for (const dy of [0, 30, -30, 60, -60, 90, -90]) {
        for (const right of [true, false]) {
          const box = right
            ? { x0: m.x + gap - 2, x1: m.x + gap + w, y0: m.y - 14 + dy, y1: m.y + 18 + dy }
            : { x0: m.x - gap - w, x1: m.x - gap + 2, y0: m.y - 14 + dy, y1: m.y + 18 + dy };
          if (box.x0 < 0 || box.x1 > MAP_W || box.y0 < 0 || box.y1 > MAP_H) continue;
          if (boxes.some((b) => overlaps(b, box))) continue;
          best = { dy, right, box };
          break;
        }
        if (best) break;
      }
      if (!best) {
        const right = m.x < MAP_W / 2;
        best = { dy: 0, right, box: null };
      }
      if (best.box) boxes.push(best.box);
      const dy = best.dy;
      const tx = best.right ? gap : -gap;
      const anchor = best.right ? "start" : "end";
      const at = "translate(" + m.x.toFixed(1) + " " + m.y.toFixed(1) + ")";
      dots.appendChild(sv("g", { class: "region-marker", transform: at, "data-testid": "region-marker-" + r.name }, [
        dy ? sv("line", { x1: 0, y1: 0, x2: tx, y2: dy - 4, stroke: "#6b7280", "stroke-width": 1 }) : null,
        m.h === "healthy" ? null : sv("circle", { class: "halo stroke-" + m.h, r: 12 }),
        sv("circle", { class: "region-dot fill-" + m.h, r: 7, "data-testid": "region-dot-" + r.name, "data-health": m.h },
          sv("title", { text: r.name + ": " + HEALTH[m.h] })),
      ]));
      labels.appendChild(sv("g", { transform: at, "aria-hidden": "true" }, [
        sv("text", { class: "map-label", x: tx, y: -1 + dy, "text-anchor": anchor, text: r.name }),
        sv("text", { class: "map-sub", x: tx, y: 13 + dy, "text-anchor": anchor, text: sub }),
      ]));
    }
    g.appendChild(dots);
    g.appendChild(labels);
    svg.setAttribute("aria-label", "World map of regions: " + view.regions.map((r) => r.name + " " + HEALTH[healthOf(r)]).join(", "));
  }

  // ---- at a glance ----
  function renderTiles() {
    const dl = $("tiles");
    clear(dl);
    if (!view) { dl.appendChild(el("div", { class: "empty" }, noData())); return; }
    const rs = view.regions;
    let healthy = 0, nodes = 0, slots = 0, free = 0, inflight = 0, queue = 0, calls = 0, errors = 0, hasCap = false;
    for (const r of rs) {
      if (healthOf(r) === "healthy") healthy += 1;
      nodes += r.nodes || 0;
      if (r.capacity) { hasCap = true; slots += r.capacity.slots || 0; free += r.capacity.freeSlots || 0; }
      inflight += r.inflight || 0;
      queue += r.queue || 0;
      const l = latencyOf(r);
      calls += l.count || 0;
      errors += l.errors || 0;
    }
    const tiles = [
      ["Regions healthy", healthy + " / " + rs.length, null, healthy === rs.length ? "ok" : healthy === 0 ? "bad" : "warn"],
      ["Nodes", fmtInt(nodes), null, nodes === 0 ? "bad" : ""],
      ["Free slots", hasCap ? fmtInt(free) + " / " + fmtInt(slots) : "—", null, hasCap && free === 0 ? "bad" : ""],
      ["In flight", fmtInt(inflight), "queued " + fmtInt(queue), queue > 0 ? "warn" : ""],
      ["Calls, last hour", fmtInt(calls), null, ""],
      ["Errors, last hour", fmtInt(errors), fmtPct(errors, calls) + " of calls", errors > 0 ? "warn" : "ok"],
    ];
    for (const [label, value, sub, cls] of tiles) {
      dl.appendChild(el("div", { class: "tile " + cls }, [el("dt", { text: label }), el("dd", null, [value, sub ? el("small", { text: sub }) : null])]));
    }
  }

  // ---- regions table ----
  function renderTable() {
    const body = $("regions-body");
    clear(body);
    if (!view) { body.appendChild(el("tr", null, el("td", { colspan: 10, class: "empty", text: noData() }))); return; }
    if (view.regions.length === 0) { body.appendChild(el("tr", null, el("td", { colspan: 10, class: "empty", text: "No regions." }))); return; }
    for (const r of view.regions) {
      const h = healthOf(r);
      const lat = latencyOf(r);
      const age = r.measuredAt ? view.generatedAt - r.measuredAt : null;
      const ageText = age === null ? "never reported" : (h === "stale" ? "last report " : "reported ") + fmtAge(age) + " ago";
      let slots = el("td", { class: "num muted", text: "—" });
      if (r.capacity) {
        const c = r.capacity;
        const used = c.slots ? (c.slots - c.freeSlots) / c.slots : 0;
        slots = el("td", { class: "num" }, [
          el("span", { text: fmtInt(c.freeSlots) + " / " + fmtInt(c.slots) }),
          el("span", { class: "meter", role: "img", "aria-label": Math.round(used * 100) + "% of slots in use" },
            el("span", { class: used >= 1 ? "full" : used >= 0.8 ? "high" : "", style: "width:" + Math.min(100, Math.round(used * 100)) + "%" })),
          c.memoryMb ? el("span", { class: "sub-line", text: "mem " + fmtMb(c.memoryUsedMb) + " / " + fmtMb(c.memoryMb) }) : null,
        ]);
      }
      const mine = Array.isArray(r.warmModels) ? r.warmModels : [];
      const warm = el("td", null, [
        el("span", null, [el("b", { text: fmtInt(r.warmModelCount) }), view.scope === "account" ? " of yours warm" : " warm in total"]),
        mine.length
          ? el("ul", { class: "chips", "aria-label": "Your models warm in " + r.name },
              mine.map((w) => el("li", { title: w.replicas + " replica(s)", text: w.model + " v" + w.version + (w.replicas > 1 ? " ×" + w.replicas : "") })))
          : el("span", { class: "sub-line", text: "none of yours" }),
      ]);
      const latTitle = fmtInt(lat.count) + " calls in the last hour";
      const tr = el("tr", { class: "row-" + h, "data-testid": "region-row-" + r.name, "data-health": h }, [
        el("th", { scope: "row" }, [
          el("span", { class: "region-name" }, [el("span", { class: "swatch", style: "background:" + colors.get(r.name), "aria-hidden": "true" }), r.name]),
          el("span", { class: "sub-line", text: (isNum(r.lat) ? r.lat.toFixed(1) : "?") + "°, " + (isNum(r.lon) ? r.lon.toFixed(1) : "?") + "°" }),
        ]),
        el("td", null, [
          el("span", { class: "badge " + h, "data-testid": "health-" + r.name }, [el("span", { class: "dot " + h, "aria-hidden": "true" }), HEALTH[h]]),
          el("span", { class: "sub-line age " + h, "data-testid": "age-" + r.name, text: ageText }),
        ]),
        el("td", { class: "num" + (r.nodes === 0 ? " nonzero" : ""), text: fmtInt(r.nodes) }),
        slots,
        el("td", { class: "num" + (r.queue > 0 ? " nonzero" : ""), text: fmtInt(r.queue) }),
        el("td", { class: "num", text: fmtInt(r.inflight) }),
        el("td", { class: "num lat", title: latTitle, text: fmtMs(lat.p50, lat.count) }),
        el("td", { class: "num lat", title: latTitle, text: fmtMs(lat.p95, lat.count) }),
        el("td", { class: "num lat p99", title: latTitle, text: fmtMs(lat.p99, lat.count) }),
        warm,
      ]);
      body.appendChild(tr);
    }
  }

  // ---- latency chart ----
  function niceStep(span, n) {
    const raw = span / n;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const f = raw / p;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
  }
  function fmtTick(v) { return v >= 1000 ? nf.format(v) : String(+v.toFixed(2)); }

  function renderChart() {
    const svg = $("chart");
    const legend = $("chart-legend");
    clear(svg);
    clear(legend);
    const W = Math.max(360, Math.round(svg.getBoundingClientRect().width) || 960);
    const H = 300;
    const m = { l: 56, r: 18, t: 14, b: 34 };
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const pw = W - m.l - m.r, ph = H - m.t - m.b;
    const end = view ? view.generatedAt : Date.now();
    const start = end - 3600000;
    const series = view ? view.regions.map((r) => ({
      r,
      color: colors.get(r.name),
      pts: (Array.isArray(r.history) ? r.history : []).filter((p) => isNum(p.t) && p.t >= start - 60000 && p.t <= end && p.count > 0).sort((a, b) => a.t - b.t),
    })) : [];
    let max = 0, min = Infinity;
    for (const s of series) for (const p of s.pts) for (const k of ["p50", "p99"]) {
      if (isNum(p[k])) { max = Math.max(max, p[k]); if (p[k] > 0) min = Math.min(min, p[k]); }
    }
    if (max === 0) max = 100;
    const log = $("logscale").checked;
    let y, ticks;
    if (log) {
      const lo = Math.pow(10, Math.floor(Math.log10(isFinite(min) ? Math.max(0.1, min) : 1)));
      const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(lo * 10, max || 10))));
      const l0 = Math.log10(lo), l1 = Math.log10(hi);
      y = (v) => m.t + ph - ((Math.log10(Math.max(lo, v)) - l0) / (l1 - l0)) * ph;
      ticks = [];
      for (let d = lo; d <= hi * 1.0001; d *= 10) for (const f of [1, 2, 5]) if (d * f <= hi * 1.0001) ticks.push(d * f);
    } else {
      const step = niceStep(Math.max(max, 1) * 1.05, 5);
      const top = Math.max(step, Math.ceil((Math.max(max, 1) * 1.05) / step) * step);
      y = (v) => m.t + ph - (v / top) * ph;
      ticks = [];
      for (let v = 0; v <= top + step / 1000; v += step) ticks.push(v);
    }
    const x = (t) => m.l + ((t - start) / (end - start)) * pw;
    for (const v of ticks) {
      const yy = y(v).toFixed(1);
      svg.appendChild(sv("line", { class: "grid-line", x1: m.l, x2: W - m.r, y1: yy, y2: yy }));
      svg.appendChild(sv("text", { class: "tick", x: m.l - 8, y: yy, dy: "0.32em", "text-anchor": "end", text: fmtTick(v) }));
    }
    for (let t = Math.ceil(start / 600000) * 600000; t <= end; t += 600000) {
      const xx = x(t).toFixed(1);
      svg.appendChild(sv("line", { class: "grid-line", x1: xx, x2: xx, y1: m.t, y2: m.t + ph }));
      svg.appendChild(sv("text", { class: "tick", x: xx, y: H - m.b + 18, "text-anchor": "middle", text: fmtClock(t, false) }));
    }
    svg.appendChild(sv("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph }));
    svg.appendChild(sv("line", { class: "axis", x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph }));
    svg.appendChild(sv("text", { class: "axis-title", transform: "translate(14 " + (m.t + ph / 2) + ") rotate(-90)", "text-anchor": "middle", text: "ms, end to end" + (log ? " (log)" : "") }));
    svg.appendChild(sv("text", { class: "axis-title", x: W - m.r, y: H - 2, "text-anchor": "end", text: "local time" }));

    let any = false;
    for (const s of series) {
      for (const k of ["p99", "p50"]) {
        const d = [];
        const lonely = [];
        let prev = null;
        s.pts.forEach((p, i) => {
          if (!isNum(p[k])) { prev = null; return; }
          const cmd = prev !== null && p.t - prev <= 90000 ? "L" : "M";
          d.push(cmd + x(p.t).toFixed(1) + " " + y(p[k]).toFixed(1));
          const next = s.pts[i + 1];
          if (cmd === "M" && !(next && next.t - p.t <= 90000)) lonely.push(p);
          prev = p.t;
        });
        if (d.length === 0) continue;
        any = true;
        const label = s.r.name + " " + k;
        svg.appendChild(sv("path", { class: "line " + k, d: d.join(" "), stroke: s.color, "data-region": s.r.name, "data-series": k, "data-testid": "latency-" + s.r.name + "-" + k },
          sv("title", { text: label })));
        for (const p of lonely) svg.appendChild(sv("circle", { cx: x(p.t).toFixed(1), cy: y(p[k]).toFixed(1), r: 2.5, fill: s.color }));
      }
    }
    if (!any) {
      svg.appendChild(sv("text", { class: "empty-note", x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle", text: view ? "No calls in the last hour" : noData() }));
    }
    const sample = (dash) => sv("svg", { width: 28, height: 10, "aria-hidden": "true" },
      sv("line", { x1: 1, x2: 27, y1: 5, y2: 5, stroke: "currentColor", "stroke-width": dash ? 1.6 : 2.25, "stroke-dasharray": dash ? "6 4" : null }));
    for (const s of series) {
      legend.appendChild(el("li", { style: "color:" + s.color }, [
        el("span", { class: "series-name", text: s.r.name }),
        sample(false), el("span", { style: "color:var(--text)", text: "p50" }),
        sample(true), el("span", { style: "color:var(--text)", text: "p99" }),
        s.pts.length ? null : el("span", { class: "muted", text: "(no calls)" }),
      ]));
    }
    svg.setAttribute("aria-label", "Line chart of end-to-end latency over the last hour, p50 solid and p99 dashed, per region" +
      (view ? ": " + view.regions.map((r) => r.name + " p50 " + fmtMs(latencyOf(r).p50, latencyOf(r).count) + " ms, p99 " + fmtMs(latencyOf(r).p99, latencyOf(r).count) + " ms").join("; ") : ""));
  }

  // ---- per caller colo ----
  function renderColo() {
    const table = $("colo-table");
    for (const tb of Array.from(table.tBodies)) tb.remove();
    const rows = new Map();
    if (view) {
      for (const r of view.regions) {
        const by = latencyOf(r).byColo || {};
        const rtt = r.rttMs || {};
        for (const colo of new Set(Object.keys(by).concat(Object.keys(rtt)))) {
          if (!rows.has(colo)) rows.set(colo, []);
          rows.get(colo).push({ r, l: by[colo] || null, rtt: isNum(rtt[colo]) ? rtt[colo] : null });
        }
      }
    }
    if (rows.size === 0) {
      table.appendChild(el("tbody", null, el("tr", null, el("td", { colspan: 8, class: "empty", text: view ? "No calls measured per colo yet." : noData() }))));
      return;
    }
    for (const colo of Array.from(rows.keys()).sort()) {
      const list = rows.get(colo).sort((a, b) => a.r.name.localeCompare(b.r.name));
      let best = null;
      for (const e of list) if (e.l && e.l.count > 0 && (!best || e.l.p50 < best.l.p50)) best = e;
      const tb = el("tbody", { class: "colo-group", "data-testid": "colo-" + colo });
      list.forEach((e, i) => {
        const l = e.l || { p50: NaN, p95: NaN, p99: NaN, count: 0, errors: 0 };
        tb.appendChild(el("tr", null, [
          i === 0 ? el("th", { scope: "rowgroup", rowspan: list.length, text: colo }) : null,
          el("td", null, [el("span", { class: "region-name", style: "font-size:inherit" }, [el("span", { class: "swatch", style: "background:" + colors.get(e.r.name), "aria-hidden": "true" }), e.r.name]),
            best === e && list.length > 1 ? el("span", { class: "best", text: "fastest" }) : null]),
          el("td", { class: "num", text: fmtInt(l.count) }),
          el("td", { class: "num lat", text: fmtMs(l.p50, l.count) }),
          el("td", { class: "num", text: fmtMs(l.p95, l.count) }),
          el("td", { class: "num", text: fmtMs(l.p99, l.count) }),
          el("td", { class: "num" + (l.errors > 0 ? " nonzero" : ""), text: fmtInt(l.errors) }),
          el("td", { class: "num", text: e.rtt === null ? "—" : fmtMs(e.rtt, 1) }),
        ]));
      });
      table.appendChild(tb);
    }
  }

  // ---- errors ----
  function renderErrors() {
    const body = $("errors-body");
    clear(body);
    if (!view || view.regions.length === 0) {
      body.appendChild(el("tr", null, el("td", { colspan: 5, class: "empty", text: view ? "No regions." : noData() })));
      return;
    }
    const end = view.generatedAt, start = end - 3600000;
    for (const r of view.regions) {
      const l = latencyOf(r);
      const rate = l.count ? l.errors / l.count : 0;
      const rateCls = !l.count ? "" : l.errors === 0 ? "zero" : rate >= 0.01 ? "high" : "some";
      const hist = (Array.isArray(r.history) ? r.history : []).filter((p) => isNum(p.t) && p.t >= start - 60000 && p.t <= end);
      const peak = hist.reduce((a, p) => Math.max(a, p.errors || 0), 0);
      const spark = sv("svg", { class: "rate-bar", width: 122, height: 24, viewBox: "0 0 122 24", role: "img",
        "aria-label": "Errors per minute in " + r.name + ", peak " + peak }, [
        sv("line", { x1: 0, x2: 122, y1: 23.5, y2: 23.5, stroke: "#d5dbe3", "stroke-width": 1 }),
      ]);
      for (const p of hist) {
        if (!p.errors) continue;
        const bx = ((p.t - start) / 3600000) * 120;
        const bh = Math.max(2, (p.errors / Math.max(1, peak)) * 22);
        spark.appendChild(sv("rect", { x: Math.max(0, bx).toFixed(1), y: (23 - bh).toFixed(1), width: 2, height: bh.toFixed(1), fill: rate >= 0.01 ? "#d92d20" : "#e49b00" },
          sv("title", { text: fmtClock(p.t, false) + ": " + p.errors + " error(s) of " + p.count })));
      }
      body.appendChild(el("tr", { "data-testid": "errors-row-" + r.name }, [
        el("th", { scope: "row" }, el("span", { class: "region-name", style: "font-size:inherit" }, [el("span", { class: "swatch", style: "background:" + colors.get(r.name), "aria-hidden": "true" }), r.name])),
        el("td", { class: "num", text: fmtInt(l.count) }),
        el("td", { class: "num" + (l.errors > 0 ? " nonzero" : ""), text: fmtInt(l.errors) }),
        el("td", { class: "num err-rate " + rateCls, text: fmtPct(l.errors, l.count) }),
        el("td", null, peak ? spark : el("span", { class: "muted", text: l.count ? "none" : "no calls" })),
      ]));
    }
  }

  function render() {
    colors = new Map();
    if (view) view.regions.forEach((r, i) => colors.set(r.name, SERIES[i % SERIES.length]));
    $("main").classList.toggle("outdated", lastFailed && view !== null);
    renderOverall();
    renderFacts();
    renderStaleBanner();
    renderMap();
    renderTiles();
    renderTable();
    renderChart();
    renderColo();
    renderErrors();
  }

  // ---- fetching ----
  function schedule() {
    clearTimeout(timer);
    if (!stopped && key) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && typeof body.error === "string") return body.error + (body.code ? " (" + body.code + ")" : "");
    } catch (e) { /* not JSON */ }
    return res.statusText || "";
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++seq;
    if (!key) {
      view = null;
      showMessage("info", [el("strong", { text: "Enter an API key " }), "above to load the regions. It is kept in this tab only (sessionStorage) and sent only as a header."]);
      render();
      return;
    }
    const ctl = new AbortController();
    const to = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    $("refresh-state").textContent = "refreshing…";
    try {
      const res = await fetch("/v1/regions", { headers: { Authorization: "Bearer " + key, Accept: "application/json" }, cache: "no-store", signal: ctl.signal });
      if (mine !== seq) return;
      if (res.status === 401) {
        stopped = true;
        refused = "401";
        view = null;
        lastOkAt = 0;
        showMessage("auth", [el("strong", { text: "401 Unauthorized: " }), "the edge refused this API key (missing, unknown or revoked). Enter a valid key above; refreshing is paused until then."]);
        render();
        return;
      }
      if (res.status === 403) {
        stopped = true;
        refused = "403";
        view = null;
        lastOkAt = 0;
        const why = await errorText(res);
        showMessage("forbidden", [el("strong", { text: "403 Forbidden: " }), "this key may not read /v1/regions. " + why]);
        render();
        return;
      }
      if (!res.ok) {
        const why = await errorText(res);
        lastFailed = true;
        showMessage("http", [el("strong", { text: "The edge answered " + res.status + ". " }), why + (why ? ". " : "") + "Retrying every 5 s" + (view ? "; the figures below are from " + fmtClock(lastOkAt, true) + "." : ".")]);
        render();
        return;
      }
      let data;
      try { data = await res.json(); } catch (e) { throw new Error("the answer is not JSON"); }
      if (mine !== seq) return;
      if (!data || !Array.isArray(data.regions)) throw new Error("the answer has no regions list");
      if (!isNum(data.generatedAt)) data.generatedAt = Date.now();
      view = data;
      lastOkAt = Date.now();
      lastFailed = false;
      showMessage(null);
      render();
    } catch (e) {
      if (mine !== seq) return;
      lastFailed = true;
      const timedOut = e && e.name === "AbortError";
      const what = timedOut ? "no answer within " + FETCH_TIMEOUT_MS / 1000 + " s" : e instanceof TypeError ? "network error: " + e.message : String(e && e.message ? e.message : e);
      showMessage("network", [el("strong", { text: "Cannot load " + location.origin + "/v1/regions. " }),
        "(" + what + ") Retrying every 5 s" + (view ? "; the figures below are from " + fmtClock(lastOkAt, true) + "." : ".")]);
      render();
    } finally {
      clearTimeout(to);
      if (mine === seq) { $("refresh-state").textContent = stopped ? "paused" : "every 5 s"; schedule(); }
    }
  }

  // ---- key handling ----
  function useKey(k) {
    key = (k || "").trim();
    store(STORE_KEY, key ? key : null, keyStore());
    $("key-input").value = key;
    stopped = false;
    refused = "";
    lastFailed = false;
    view = null;
    lastOkAt = 0;
    showMessage(null);
    refresh();
  }

  function init() {
    const params = new URLSearchParams(location.search);
    if (params.has("key")) {
      // Keys do not travel in URLs (they end up in logs, history and Referer headers): a key in
      // the address is not used, only taken out of the address bar and history.
      params.delete("key");
      const rest = params.toString();
      try { history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash); } catch (e) { /* ignore */ }
    }
    try { localStorage.removeItem(STORE_KEY); } catch (e) { /* where older pages kept it */ }
    key = (load(STORE_KEY, keyStore()) || "").trim();
    $("key-input").value = key;
    $("logscale").checked = load(STORE_LOG) === "1";
    $("key-form").addEventListener("submit", (ev) => { ev.preventDefault(); useKey($("key-input").value); });
    $("forget").addEventListener("click", () => useKey(""));
    $("logscale").addEventListener("change", () => { store(STORE_LOG, $("logscale").checked ? "1" : "0"); renderChart(); });
    let resizeTimer = 0;
    window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(renderChart, 100); });
    setInterval(tickUpdated, 1000);
    render();
    refresh();
  }

  init();
})();
`;

/** The page; `nonce` marks its inline style and script for the CSP (page-security.ts). */
export function statusPageHtml(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Inference mesh status</title>
<link rel="icon" href="data:,">
<style nonce="${nonce}">${CSS}</style>
</head>
<body>
<header class="top">
  <div class="wrap">
    <div>
      <h1>Inference mesh status</h1>
      <p class="sub">Regions, capacity and end-to-end latency as this edge sees them</p>
    </div>
    <div id="overall" class="overall" data-testid="overall-status" data-state="unknown" role="status" aria-live="polite">
      <span class="big-dot" aria-hidden="true"></span>
      <span><strong id="overall-title">Loading…</strong><span class="detail" id="overall-detail"></span></span>
    </div>
  </div>
</header>
<div class="bar">
  <div class="wrap">
    <div class="facts" aria-label="Data source">
      <span>Redis <span id="redis" class="pill" data-testid="redis-state">—</span></span>
      <span>Data <span id="data-state" class="pill" data-testid="data-state">—</span></span>
      <span>Updated <b id="updated" data-testid="updated">never</b></span>
      <span>Refresh <b id="refresh-state">every 5 s</b></span>
    </div>
    <form id="key-form" class="key" aria-label="API key">
      <label for="key-input">API key</label>
      <input id="key-input" type="password" autocomplete="off" spellcheck="false" placeholder="mesh_…" data-testid="key-input">
      <button class="primary" type="submit">Use key</button>
      <button type="button" id="forget">Forget</button>
    </form>
  </div>
</div>
<div class="wrap">
  <div id="message" class="banner" role="alert" data-testid="error-banner" hidden></div>
  <div id="stale-banner" class="banner warn" role="status" data-testid="stale-banner" hidden></div>
</div>
<main id="main" class="wrap">
  <div class="grid map-row">
    <section class="card" aria-labelledby="h-map">
      <h2 id="h-map">Regions on the map</h2>
      <svg id="map" data-testid="region-map" viewBox="0 0 ${MAP_W} ${MAP_H}" role="img" aria-label="World map of regions">
        ${staticMapSvg()}
        <g id="map-dots"></g>
      </svg>
      <ul class="key-legend" aria-label="Health colours">
        <li><span class="dot healthy"></span>healthy</li>
        <li><span class="dot stale"></span>stale report</li>
        <li><span class="dot unhealthy"></span>unhealthy</li>
        <li><span class="dot unknown"></span>unknown</li>
      </ul>
    </section>
    <section class="card" aria-labelledby="h-glance">
      <h2 id="h-glance">At a glance</h2>
      <dl id="tiles" class="tiles" data-testid="summary"></dl>
    </section>
  </div>

  <div class="grid">
    <section class="card" aria-labelledby="h-regions">
      <h2 id="h-regions">Regions</h2>
      <p class="hint">Latency is end to end as callers saw it over the last hour; slots are free / total.</p>
      <div class="table-wrap">
        <table id="regions-table" data-testid="regions-table" aria-labelledby="h-regions">
          <thead>
            <tr>
              <th scope="col">Region</th>
              <th scope="col">Health</th>
              <th scope="col" class="num">Nodes</th>
              <th scope="col" class="num">Slots free</th>
              <th scope="col" class="num">Queue</th>
              <th scope="col" class="num">In flight</th>
              <th scope="col" class="num"><abbr title="median end-to-end latency, ms">p50 ms</abbr></th>
              <th scope="col" class="num"><abbr title="95th percentile end-to-end latency, ms">p95 ms</abbr></th>
              <th scope="col" class="num"><abbr title="99th percentile end-to-end latency, ms">p99 ms</abbr></th>
              <th scope="col">Warm models</th>
            </tr>
          </thead>
          <tbody id="regions-body"></tbody>
        </table>
      </div>
    </section>

    <section class="card" aria-labelledby="h-chart">
      <div class="card-head">
        <h2 id="h-chart">Latency, last hour</h2>
        <label><input type="checkbox" id="logscale"> log scale</label>
      </div>
      <p class="hint">Per minute, end to end: p50 solid, p99 dashed.</p>
      <svg id="chart" data-testid="latency-chart" role="img" aria-label="Latency chart"></svg>
      <ul id="chart-legend" class="legend" aria-label="Chart legend"></ul>
    </section>
  </div>

  <div class="grid halves">
    <section class="card" aria-labelledby="h-colo">
      <h2 id="h-colo">Latency by caller colo</h2>
      <p class="hint">Per Cloudflare colo the calls came in through, last hour; RTT is the edge-to-region round trip.</p>
      <div class="table-wrap">
        <table id="colo-table" data-testid="colo-table" aria-labelledby="h-colo">
          <thead>
            <tr>
              <th scope="col">Colo</th>
              <th scope="col">Region</th>
              <th scope="col" class="num">Calls</th>
              <th scope="col" class="num">p50 ms</th>
              <th scope="col" class="num">p95 ms</th>
              <th scope="col" class="num">p99 ms</th>
              <th scope="col" class="num">Errors</th>
              <th scope="col" class="num">RTT ms</th>
            </tr>
          </thead>
        </table>
      </div>
    </section>
    <section class="card" aria-labelledby="h-errors">
      <h2 id="h-errors">Errors by region</h2>
      <p class="hint">Failed calls over the last hour, and when they happened (one bar per minute).</p>
      <div class="table-wrap">
        <table id="errors-table" data-testid="errors-table" aria-labelledby="h-errors">
          <thead>
            <tr>
              <th scope="col">Region</th>
              <th scope="col" class="num">Calls</th>
              <th scope="col" class="num">Errors</th>
              <th scope="col" class="num">Rate</th>
              <th scope="col">Per minute</th>
            </tr>
          </thead>
          <tbody id="errors-body"></tbody>
        </table>
      </div>
    </section>
  </div>
</main>
<footer class="wrap">Data: GET /v1/regions with your key. Health: green healthy, amber stale report, red unhealthy, grey unknown.</footer>
<script nonce="${nonce}">${CLIENT_JS}</script>
</body>
</html>
`;
}
