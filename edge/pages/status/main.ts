// GET /status in the browser: draws GET /v1/regions (edge/regions-view.ts) for a person: overall
// state, a map of the regions, a table of regions, latency over the last hour, latency per
// caller colo and errors. It asks for an API key (input box, kept in sessionStorage: this tab
// only, gone when it closes), sends it as a bearer token and refreshes every 5 s. A key never
// travels in a URL: a `?key=` is scrubbed from the address bar and not used.
//
// The answer is read defensively (an older or newer edge may leave a field out): every figure
// that may be missing shows as "—" rather than breaking the page.

import type { LatencySummary, MinutePoint, RegionView, RegionsView } from "../../regions-view.js";
import { add, byId, clear, el, load, scrubKeyFromUrl, store, sv, type Kid } from "../dom.js";
import { fmtAge, fmtClock, fmtInt, fmtMb, fmtMs, fmtNumber, fmtPct, isNum } from "./format.js";
import { drawMarkers, drawStaticMap } from "./map.js";

const REFRESH_MS = 5000;
const FETCH_TIMEOUT_MS = 8000;
const STORE_KEY = "mesh.status.apiKey";
const STORE_LOG = "mesh.status.logScale";
type Health = RegionView["health"];
const HEALTH: Record<Health, string> = { healthy: "Healthy", unhealthy: "Unhealthy", stale: "Stale", unknown: "Unknown" };
const SERIES = ["#2563eb", "#c2410c", "#7c3aed", "#0f766e", "#db2777", "#4d7c0f", "#0369a1", "#a16207"];

// The key lives in sessionStorage (this tab, until it closes); preferences in localStorage.
const keyStore = (): Storage => sessionStorage;
const prefStore = (): Storage => localStorage;

const healthOf = (r: RegionView): Health => (Object.prototype.hasOwnProperty.call(HEALTH, r.health) ? r.health : "unknown");
type Latency = LatencySummary & { byColo?: Record<string, LatencySummary> };
const latencyOf = (r: RegionView): Latency => r.latency || { p50: NaN, p95: NaN, p99: NaN, count: 0, errors: 0, byColo: {} };
const historyOf = (r: RegionView): MinutePoint[] => (Array.isArray(r.history) ? r.history : []);

// ---- state ----
let key = "";
let view: RegionsView | null = null;
let colors = new Map<string, string>();
let lastOkAt = 0;
let lastFailed = false;
let timer = 0;
let seq = 0;
let stopped = false;
let refused = "";

const colorOf = (name: string): string => colors.get(name) ?? SERIES[0]!;

/** Why there is nothing to show, for the empty states. */
function noData(): string {
  if (!key) return "Enter an API key to see the regions.";
  if (refused) return `No data: the edge refused this key (${refused}).`;
  if (lastFailed) return "No data: the edge could not be reached.";
  return "Waiting for data…";
}

// ---- messages ----
type MessageKind = "info" | "auth" | "forbidden" | "http" | "network";
function showMessage(kind: MessageKind | null, parts?: Kid): void {
  const box = byId("message");
  clear(box);
  if (!kind) {
    box.hidden = true;
    box.className = "banner";
    box.removeAttribute("data-kind");
    return;
  }
  box.className = `banner ${kind === "info" ? "info" : "error"}`;
  box.setAttribute("data-kind", kind);
  add(box, parts);
  box.hidden = false;
}

// ---- overall ----
function overall(): { state: "unknown" | "healthy" | "degraded" | "down"; title: string; detail: string } {
  if (!view) {
    if (!key) return { state: "unknown", title: "No API key", detail: "Enter a key to see the regions" };
    if (refused) return { state: "unknown", title: `Key refused (${refused})`, detail: "Enter a valid API key" };
    if (lastFailed) return { state: "unknown", title: "No data", detail: "Cannot load /v1/regions" };
    return { state: "unknown", title: "Waiting for data", detail: "Loading /v1/regions…" };
  }
  const rs = view.regions;
  if (rs.length === 0) return { state: "unknown", title: "No regions", detail: "The edge lists no region" };
  const count: Record<Health, number> = { healthy: 0, stale: 0, unhealthy: 0, unknown: 0 };
  for (const r of rs) count[healthOf(r)] += 1;
  let state: "healthy" | "degraded" | "down";
  let title: string;
  if (count.healthy === rs.length) {
    state = view.stale ? "degraded" : "healthy";
    title = view.stale ? "Healthy, data stale" : "All regions healthy";
  } else if (count.healthy === 0) {
    state = "down";
    title = "No healthy region";
  } else {
    state = "degraded";
    title = "Degraded";
  }
  const detail = [`${count.healthy} of ${rs.length} healthy`];
  if (count.stale) detail.push(`${count.stale} stale`);
  if (count.unhealthy) detail.push(`${count.unhealthy} unhealthy`);
  if (count.unknown) detail.push(`${count.unknown} unknown`);
  if (view.stale && count.healthy === rs.length) detail.push("last-known state");
  return { state, title, detail: detail.join(" · ") };
}

function renderOverall(): void {
  const o = overall();
  const box = byId("overall");
  box.setAttribute("data-state", o.state);
  byId("overall-title").textContent = o.title;
  byId("overall-detail").textContent = o.detail;
  box.setAttribute("aria-label", `Overall status: ${o.title}. ${o.detail}`);
  document.title = `${o.title} · Inference mesh status`;
}

function renderFacts(): void {
  const redis = byId("redis");
  if (!view) {
    redis.textContent = "—";
    redis.className = "pill";
  } else {
    const r = view.redis;
    redis.textContent = r === "ok" ? "ok" : r === "unreachable" ? "unreachable" : r === "not_configured" ? "not configured" : String(r);
    redis.className = `pill ${r === "ok" ? "ok" : r === "unreachable" ? "bad" : ""}`;
  }
  const data = byId("data-state");
  if (!view) {
    data.textContent = "—";
    data.className = "pill";
  } else if (view.stale) {
    data.textContent = "stale";
    data.className = "pill warn";
  } else {
    data.textContent = "fresh";
    data.className = "pill ok";
  }
  tickUpdated();
}

function tickUpdated(): void {
  const u = byId("updated");
  u.textContent = lastOkAt ? `${fmtClock(lastOkAt, true)} (${fmtAge(Date.now() - lastOkAt)} ago)` : "never";
}

function renderStaleBanner(): void {
  const b = byId("stale-banner");
  clear(b);
  if (!view) {
    b.hidden = true;
    return;
  }
  const v = view;
  const stale = v.regions.filter((r) => healthOf(r) === "stale");
  if (!v.stale && stale.length === 0) {
    b.hidden = true;
    return;
  }
  const parts: Kid[] = [el("strong", { text: "Stale data. " })];
  if (v.stale) parts.push("Some figures are last-known state, not fresh region reports. ");
  for (const r of stale) parts.push(`${r.name}: ${r.measuredAt ? `last report ${fmtAge(v.generatedAt - r.measuredAt)} ago` : "no report"}. `);
  if (v.redis !== "ok") parts.push(`Redis: ${v.redis === "not_configured" ? "not configured" : v.redis}.`);
  add(b, parts);
  b.hidden = false;
}

// ---- map ----
function renderMap(): void {
  const svg = byId<SVGSVGElement>("map");
  if (!view || view.regions.length === 0) {
    drawMarkers(byId<SVGGElement>("map-dots"), []);
    svg.setAttribute("aria-label", "World map of regions: no data");
    return;
  }
  drawMarkers(
    byId<SVGGElement>("map-dots"),
    view.regions.map((r) => {
      const h = healthOf(r);
      const lat = latencyOf(r);
      return { region: r, health: h, healthText: HEALTH[h], sub: HEALTH[h] + (lat.count ? ` · p50 ${fmtMs(lat.p50, lat.count)} ms` : "") };
    }),
  );
  svg.setAttribute("aria-label", `World map of regions: ${view.regions.map((r) => `${r.name} ${HEALTH[healthOf(r)]}`).join(", ")}`);
}

// ---- at a glance ----
function renderTiles(): void {
  const dl = byId("tiles");
  clear(dl);
  if (!view) {
    dl.appendChild(el("div", { class: "empty" }, noData()));
    return;
  }
  const rs = view.regions;
  let healthy = 0, nodes = 0, slots = 0, free = 0, inflight = 0, queue = 0, calls = 0, errors = 0, hasCap = false;
  for (const r of rs) {
    if (healthOf(r) === "healthy") healthy += 1;
    nodes += r.nodes || 0;
    if (r.capacity) {
      hasCap = true;
      slots += r.capacity.slots || 0;
      free += r.capacity.freeSlots || 0;
    }
    inflight += r.inflight || 0;
    queue += r.queue || 0;
    const l = latencyOf(r);
    calls += l.count || 0;
    errors += l.errors || 0;
  }
  const tiles: [label: string, value: string, sub: string | null, cls: string][] = [
    ["Regions healthy", `${healthy} / ${rs.length}`, null, healthy === rs.length ? "ok" : healthy === 0 ? "bad" : "warn"],
    ["Nodes", fmtInt(nodes), null, nodes === 0 ? "bad" : ""],
    ["Free slots", hasCap ? `${fmtInt(free)} / ${fmtInt(slots)}` : "—", null, hasCap && free === 0 ? "bad" : ""],
    ["In flight", fmtInt(inflight), `queued ${fmtInt(queue)}`, queue > 0 ? "warn" : ""],
    ["Calls, last hour", fmtInt(calls), null, ""],
    ["Errors, last hour", fmtInt(errors), `${fmtPct(errors, calls)} of calls`, errors > 0 ? "warn" : "ok"],
  ];
  for (const [label, value, sub, cls] of tiles) {
    dl.appendChild(el("div", { class: `tile ${cls}` }, [el("dt", { text: label }), el("dd", null, [value, sub ? el("small", { text: sub }) : null])]));
  }
}

const regionName = (name: string, big: boolean): HTMLElement =>
  el("span", { class: "region-name", style: big ? null : "font-size:inherit" }, [el("span", { class: "swatch", style: `background:${colorOf(name)}`, "aria-hidden": "true" }), name]);

// ---- regions table ----
function renderTable(): void {
  const body = byId("regions-body");
  clear(body);
  if (!view || view.regions.length === 0) {
    body.appendChild(el("tr", null, el("td", { colspan: 10, class: "empty", text: view ? "No regions." : noData() })));
    return;
  }
  const v = view;
  for (const r of v.regions) {
    const h = healthOf(r);
    const lat = latencyOf(r);
    const age = r.measuredAt ? v.generatedAt - r.measuredAt : null;
    const ageText = age === null ? "never reported" : `${h === "stale" ? "last report " : "reported "}${fmtAge(age)} ago`;
    let slots = el("td", { class: "num muted", text: "—" });
    if (r.capacity) {
      const c = r.capacity;
      const used = c.slots ? (c.slots - c.freeSlots) / c.slots : 0;
      slots = el("td", { class: "num" }, [
        el("span", { text: `${fmtInt(c.freeSlots)} / ${fmtInt(c.slots)}` }),
        el(
          "span",
          { class: "meter", role: "img", "aria-label": `${Math.round(used * 100)}% of slots in use` },
          el("span", { class: used >= 1 ? "full" : used >= 0.8 ? "high" : "", style: `width:${Math.min(100, Math.round(used * 100))}%` }),
        ),
        c.memoryMb ? el("span", { class: "sub-line", text: `mem ${fmtMb(c.memoryUsedMb)} / ${fmtMb(c.memoryMb)}` }) : null,
      ]);
    }
    const mine = Array.isArray(r.warmModels) ? r.warmModels : [];
    const warm = el("td", null, [
      el("span", null, [el("b", { text: fmtInt(r.warmModelCount) }), v.scope === "account" ? " of yours warm" : " warm in total"]),
      mine.length
        ? el(
            "ul",
            { class: "chips", "aria-label": `Your models warm in ${r.name}` },
            mine.map((w) => el("li", { title: `${w.replicas} replica(s)`, text: `${w.model} v${w.version}${w.replicas > 1 ? ` ×${w.replicas}` : ""}` })),
          )
        : el("span", { class: "sub-line", text: "none of yours" }),
    ]);
    const latTitle = `${fmtInt(lat.count)} calls in the last hour`;
    body.appendChild(
      el("tr", { class: `row-${h}`, "data-testid": `region-row-${r.name}`, "data-health": h }, [
        el("th", { scope: "row" }, [
          regionName(r.name, true),
          el("span", { class: "sub-line", text: `${isNum(r.lat) ? r.lat.toFixed(1) : "?"}°, ${isNum(r.lon) ? r.lon.toFixed(1) : "?"}°` }),
        ]),
        el("td", null, [
          el("span", { class: `badge ${h}`, "data-testid": `health-${r.name}` }, [el("span", { class: `dot ${h}`, "aria-hidden": "true" }), HEALTH[h]]),
          el("span", { class: `sub-line age ${h}`, "data-testid": `age-${r.name}`, text: ageText }),
        ]),
        el("td", { class: `num${r.nodes === 0 ? " nonzero" : ""}` }, [fmtInt(r.nodes), wireLine(r)]),
        slots,
        el("td", { class: `num${r.queue > 0 ? " nonzero" : ""}`, text: fmtInt(r.queue) }),
        el("td", { class: "num", text: fmtInt(r.inflight) }),
        el("td", { class: "num lat", title: latTitle, text: fmtMs(lat.p50, lat.count) }),
        el("td", { class: "num lat", title: latTitle, text: fmtMs(lat.p95, lat.count) }),
        el("td", { class: "num lat p99", title: latTitle, text: fmtMs(lat.p99, lat.count) }),
        warm,
      ]),
    );
  }
}

/**
 * Under a region's node count (operator view): the wire versions its nodes use, newest first
 * ("wire 2 ×3 · 1 ×1", the progress of a rolling upgrade), each node's announcement in the title.
 */
function wireLine(r: RegionView): HTMLElement | null {
  const w = r.wire;
  if (!w || typeof w.byVersion !== "object") return null;
  const versions = Object.entries(w.byVersion).sort(([a], [b]) => Number(b) - Number(a));
  if (versions.length === 0 && !w.unreported) return null;
  const parts = versions.map(([v, n]) => (versions.length === 1 && !w.unreported ? v : `${v} ×${fmtInt(n)}`));
  if (w.unreported) parts.push(`? ×${fmtInt(w.unreported)}`);
  const title = (Array.isArray(w.nodes) ? w.nodes : [])
    .map((n) => `${n.id}: announces ${n.min === n.max ? n.min : `${n.min}-${n.max}`}${n.features.length ? ` ${n.features.join(",")}` : ""}, uses ${n.version}${n.agreed.length ? ` ${n.agreed.join(",")}` : ""}`)
    .join("\n");
  return el("span", { class: "sub-line", "data-testid": `wire-${r.name}`, title, text: `wire ${parts.join(" · ")}` });
}

// ---- latency chart ----
function niceStep(span: number, n: number): number {
  const raw = span / n;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}
const fmtTick = (v: number): string => (v >= 1000 ? fmtNumber(v) : String(+v.toFixed(2)));
const PERCENTILES = ["p50", "p99"] as const;

function renderChart(): void {
  const svg = byId<SVGSVGElement>("chart");
  const legend = byId("chart-legend");
  clear(svg);
  clear(legend);
  const W = Math.max(360, Math.round(svg.getBoundingClientRect().width) || 960);
  const H = 300;
  const m = { l: 56, r: 18, t: 14, b: 34 };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const end = view ? view.generatedAt : Date.now();
  const start = end - 3_600_000;
  const series = view
    ? view.regions.map((r) => ({
        r,
        color: colorOf(r.name),
        pts: historyOf(r)
          .filter((p) => isNum(p.t) && p.t >= start - 60_000 && p.t <= end && p.count > 0)
          .sort((a, b) => a.t - b.t),
      }))
    : [];
  let max = 0;
  let min = Infinity;
  for (const s of series) {
    for (const p of s.pts) {
      for (const k of PERCENTILES) {
        const v = p[k];
        if (!isNum(v)) continue;
        max = Math.max(max, v);
        if (v > 0) min = Math.min(min, v);
      }
    }
  }
  if (max === 0) max = 100;
  const log = byId("logscale", HTMLInputElement).checked;
  let y: (v: number) => number;
  const ticks: number[] = [];
  if (log) {
    const lo = Math.pow(10, Math.floor(Math.log10(Number.isFinite(min) ? Math.max(0.1, min) : 1)));
    const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(lo * 10, max || 10))));
    const l0 = Math.log10(lo);
    const l1 = Math.log10(hi);
    y = (v) => m.t + ph - ((Math.log10(Math.max(lo, v)) - l0) / (l1 - l0)) * ph;
    for (let d = lo; d <= hi * 1.0001; d *= 10) for (const f of [1, 2, 5]) if (d * f <= hi * 1.0001) ticks.push(d * f);
  } else {
    const step = niceStep(Math.max(max, 1) * 1.05, 5);
    const top = Math.max(step, Math.ceil((Math.max(max, 1) * 1.05) / step) * step);
    y = (v) => m.t + ph - (v / top) * ph;
    for (let v = 0; v <= top + step / 1000; v += step) ticks.push(v);
  }
  const x = (t: number): number => m.l + ((t - start) / (end - start)) * pw;
  for (const v of ticks) {
    const yy = y(v).toFixed(1);
    svg.appendChild(sv("line", { class: "grid-line", x1: m.l, x2: W - m.r, y1: yy, y2: yy }));
    svg.appendChild(sv("text", { class: "tick", x: m.l - 8, y: yy, dy: "0.32em", "text-anchor": "end", text: fmtTick(v) }));
  }
  for (let t = Math.ceil(start / 600_000) * 600_000; t <= end; t += 600_000) {
    const xx = x(t).toFixed(1);
    svg.appendChild(sv("line", { class: "grid-line", x1: xx, x2: xx, y1: m.t, y2: m.t + ph }));
    svg.appendChild(sv("text", { class: "tick", x: xx, y: H - m.b + 18, "text-anchor": "middle", text: fmtClock(t, false) }));
  }
  svg.appendChild(sv("line", { class: "axis", x1: m.l, x2: m.l, y1: m.t, y2: m.t + ph }));
  svg.appendChild(sv("line", { class: "axis", x1: m.l, x2: W - m.r, y1: m.t + ph, y2: m.t + ph }));
  svg.appendChild(sv("text", { class: "axis-title", transform: `translate(14 ${m.t + ph / 2}) rotate(-90)`, "text-anchor": "middle", text: `ms, end to end${log ? " (log)" : ""}` }));
  svg.appendChild(sv("text", { class: "axis-title", x: W - m.r, y: H - 2, "text-anchor": "end", text: "local time" }));

  let any = false;
  for (const s of series) {
    // p99 first, so the solid p50 is drawn over it.
    for (const k of ["p99", "p50"] as const) {
      const d: string[] = [];
      const lonely: MinutePoint[] = [];
      let prev: number | null = null;
      s.pts.forEach((p, i) => {
        if (!isNum(p[k])) {
          prev = null;
          return;
        }
        // A gap of more than 1.5 minutes starts a new line.
        const cmd = prev !== null && p.t - prev <= 90_000 ? "L" : "M";
        d.push(`${cmd}${x(p.t).toFixed(1)} ${y(p[k]).toFixed(1)}`);
        const next = s.pts[i + 1];
        if (cmd === "M" && !(next && next.t - p.t <= 90_000)) lonely.push(p);
        prev = p.t;
      });
      if (d.length === 0) continue;
      any = true;
      svg.appendChild(
        sv(
          "path",
          { class: `line ${k}`, d: d.join(" "), stroke: s.color, "data-region": s.r.name, "data-series": k, "data-testid": `latency-${s.r.name}-${k}` },
          sv("title", { text: `${s.r.name} ${k}` }),
        ),
      );
      for (const p of lonely) svg.appendChild(sv("circle", { cx: x(p.t).toFixed(1), cy: y(p[k]).toFixed(1), r: 2.5, fill: s.color }));
    }
  }
  if (!any) {
    svg.appendChild(sv("text", { class: "empty-note", x: m.l + pw / 2, y: m.t + ph / 2, "text-anchor": "middle", text: view ? "No calls in the last hour" : noData() }));
  }
  const sample = (dash: boolean): SVGSVGElement =>
    sv("svg", { width: 28, height: 10, "aria-hidden": "true" }, sv("line", { x1: 1, x2: 27, y1: 5, y2: 5, stroke: "currentColor", "stroke-width": dash ? 1.6 : 2.25, "stroke-dasharray": dash ? "6 4" : null }));
  for (const s of series) {
    legend.appendChild(
      el("li", { style: `color:${s.color}` }, [
        el("span", { class: "series-name", text: s.r.name }),
        sample(false),
        el("span", { style: "color:var(--text)", text: "p50" }),
        sample(true),
        el("span", { style: "color:var(--text)", text: "p99" }),
        s.pts.length ? null : el("span", { class: "muted", text: "(no calls)" }),
      ]),
    );
  }
  const summary = view
    ? `: ${view.regions
        .map((r) => {
          const l = latencyOf(r);
          return `${r.name} p50 ${fmtMs(l.p50, l.count)} ms, p99 ${fmtMs(l.p99, l.count)} ms`;
        })
        .join("; ")}`
    : "";
  svg.setAttribute("aria-label", `Line chart of end-to-end latency over the last hour, p50 solid and p99 dashed, per region${summary}`);
}

// ---- per caller colo ----
function renderColo(): void {
  const table = byId("colo-table", HTMLTableElement);
  for (const tb of Array.from(table.tBodies)) tb.remove();
  type Row = { r: RegionView; l: LatencySummary | null; rtt: number | null };
  const rows = new Map<string, Row[]>();
  if (view) {
    for (const r of view.regions) {
      const by = latencyOf(r).byColo || {};
      const rtt = r.rttMs || {};
      for (const colo of new Set([...Object.keys(by), ...Object.keys(rtt)])) {
        let list = rows.get(colo);
        if (!list) rows.set(colo, (list = []));
        const t = rtt[colo];
        list.push({ r, l: by[colo] || null, rtt: isNum(t) ? t : null });
      }
    }
  }
  if (rows.size === 0) {
    table.appendChild(el("tbody", null, el("tr", null, el("td", { colspan: 8, class: "empty", text: view ? "No calls measured per colo yet." : noData() }))));
    return;
  }
  for (const [colo, list] of [...rows.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    list.sort((a, b) => a.r.name.localeCompare(b.r.name));
    let best: Row | null = null;
    for (const e of list) if (e.l && e.l.count > 0 && (!best || e.l.p50 < best.l!.p50)) best = e;
    const tb = el("tbody", { class: "colo-group", "data-testid": `colo-${colo}` });
    list.forEach((e, i) => {
      const l = e.l || { p50: NaN, p95: NaN, p99: NaN, count: 0, errors: 0 };
      tb.appendChild(
        el("tr", null, [
          i === 0 ? el("th", { scope: "rowgroup", rowspan: list.length, text: colo }) : null,
          el("td", null, [regionName(e.r.name, false), best === e && list.length > 1 ? el("span", { class: "best", text: "fastest" }) : null]),
          el("td", { class: "num", text: fmtInt(l.count) }),
          el("td", { class: "num lat", text: fmtMs(l.p50, l.count) }),
          el("td", { class: "num", text: fmtMs(l.p95, l.count) }),
          el("td", { class: "num", text: fmtMs(l.p99, l.count) }),
          el("td", { class: `num${l.errors > 0 ? " nonzero" : ""}`, text: fmtInt(l.errors) }),
          el("td", { class: "num", text: e.rtt === null ? "—" : fmtMs(e.rtt, 1) }),
        ]),
      );
    });
    table.appendChild(tb);
  }
}

// ---- errors ----
function renderErrors(): void {
  const body = byId("errors-body");
  clear(body);
  if (!view || view.regions.length === 0) {
    body.appendChild(el("tr", null, el("td", { colspan: 5, class: "empty", text: view ? "No regions." : noData() })));
    return;
  }
  const end = view.generatedAt;
  const start = end - 3_600_000;
  for (const r of view.regions) {
    const l = latencyOf(r);
    const rate = l.count ? l.errors / l.count : 0;
    const rateCls = !l.count ? "" : l.errors === 0 ? "zero" : rate >= 0.01 ? "high" : "some";
    const hist = historyOf(r).filter((p) => isNum(p.t) && p.t >= start - 60_000 && p.t <= end);
    const peak = hist.reduce((a, p) => Math.max(a, p.errors || 0), 0);
    const spark = sv("svg", { class: "rate-bar", width: 122, height: 24, viewBox: "0 0 122 24", role: "img", "aria-label": `Errors per minute in ${r.name}, peak ${peak}` }, [
      sv("line", { x1: 0, x2: 122, y1: 23.5, y2: 23.5, stroke: "#d5dbe3", "stroke-width": 1 }),
    ]);
    for (const p of hist) {
      if (!p.errors) continue;
      const bx = ((p.t - start) / 3_600_000) * 120;
      const bh = Math.max(2, (p.errors / Math.max(1, peak)) * 22);
      spark.appendChild(
        sv(
          "rect",
          { x: Math.max(0, bx).toFixed(1), y: (23 - bh).toFixed(1), width: 2, height: bh.toFixed(1), fill: rate >= 0.01 ? "#d92d20" : "#e49b00" },
          sv("title", { text: `${fmtClock(p.t, false)}: ${p.errors} error(s) of ${p.count}` }),
        ),
      );
    }
    body.appendChild(
      el("tr", { "data-testid": `errors-row-${r.name}` }, [
        el("th", { scope: "row" }, regionName(r.name, false)),
        el("td", { class: "num", text: fmtInt(l.count) }),
        el("td", { class: `num${l.errors > 0 ? " nonzero" : ""}`, text: fmtInt(l.errors) }),
        el("td", { class: `num err-rate ${rateCls}`, text: fmtPct(l.errors, l.count) }),
        el("td", null, peak ? spark : el("span", { class: "muted", text: l.count ? "none" : "no calls" })),
      ]),
    );
  }
}

function render(): void {
  colors = new Map();
  if (view) view.regions.forEach((r, i) => colors.set(r.name, SERIES[i % SERIES.length]!));
  byId("main").classList.toggle("outdated", lastFailed && view !== null);
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
function schedule(): void {
  clearTimeout(timer);
  if (!stopped && key) timer = window.setTimeout(() => void refresh(), REFRESH_MS);
}

/** The edge's error envelope ({"error","code","requestId"}) as one line, or the status text. */
async function errorText(res: Response): Promise<string> {
  try {
    const body = (await res.json()) as { error?: unknown; code?: unknown } | null;
    if (body && typeof body.error === "string") return body.error + (typeof body.code === "string" ? ` (${body.code})` : "");
  } catch {
    // not JSON
  }
  return res.statusText || "";
}

const since = (): string => (view ? `; the figures below are from ${fmtClock(lastOkAt, true)}.` : ".");

async function refresh(): Promise<void> {
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
  byId("refresh-state").textContent = "refreshing…";
  try {
    const res = await fetch("/v1/regions", { headers: { Authorization: `Bearer ${key}`, Accept: "application/json" }, cache: "no-store", signal: ctl.signal });
    if (mine !== seq) return;
    if (res.status === 401 || res.status === 403) {
      stopped = true;
      refused = String(res.status);
      view = null;
      lastOkAt = 0;
      if (res.status === 401) {
        showMessage("auth", [el("strong", { text: "401 Unauthorized: " }), "the edge refused this API key (missing, unknown or revoked). Enter a valid key above; refreshing is paused until then."]);
      } else {
        showMessage("forbidden", [el("strong", { text: "403 Forbidden: " }), `this key may not read /v1/regions. ${await errorText(res)}`]);
      }
      render();
      return;
    }
    if (!res.ok) {
      const why = await errorText(res);
      lastFailed = true;
      showMessage("http", [el("strong", { text: `The edge answered ${res.status}. ` }), `${why}${why ? ". " : ""}Retrying every 5 s${since()}`]);
      render();
      return;
    }
    let data: RegionsView | null;
    try {
      data = (await res.json()) as RegionsView | null;
    } catch {
      throw new Error("the answer is not JSON");
    }
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
    const timedOut = e instanceof DOMException && e.name === "AbortError";
    const what = timedOut ? `no answer within ${FETCH_TIMEOUT_MS / 1000} s` : e instanceof TypeError ? `network error: ${e.message}` : e instanceof Error ? e.message : String(e);
    showMessage("network", [el("strong", { text: `Cannot load ${location.origin}/v1/regions. ` }), `(${what}) Retrying every 5 s${since()}`]);
    render();
  } finally {
    clearTimeout(to);
    if (mine === seq) {
      byId("refresh-state").textContent = stopped ? "paused" : "every 5 s";
      schedule();
    }
  }
}

// ---- key handling ----
function useKey(k: string): void {
  key = k.trim();
  store(keyStore, STORE_KEY, key ? key : null);
  byId("key-input", HTMLInputElement).value = key;
  stopped = false;
  refused = "";
  lastFailed = false;
  view = null;
  lastOkAt = 0;
  showMessage(null);
  void refresh();
}

function init(): void {
  scrubKeyFromUrl(STORE_KEY);
  drawStaticMap(byId<SVGSVGElement>("map"), byId<SVGGElement>("map-dots"));
  const input = byId("key-input", HTMLInputElement);
  const logscale = byId("logscale", HTMLInputElement);
  key = (load(keyStore, STORE_KEY) || "").trim();
  input.value = key;
  logscale.checked = load(prefStore, STORE_LOG) === "1";
  byId("key-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    useKey(input.value);
  });
  byId("forget").addEventListener("click", () => useKey(""));
  logscale.addEventListener("change", () => {
    store(prefStore, STORE_LOG, logscale.checked ? "1" : "0");
    renderChart();
  });
  let resizeTimer = 0;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = window.setTimeout(renderChart, 100);
  });
  setInterval(tickUpdated, 1000);
  render();
  void refresh();
}

init();
