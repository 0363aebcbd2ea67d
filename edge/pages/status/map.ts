// The status page's world map: an equirectangular projection, very coarse land outlines drawn
// once (only there so the dots read as places), and per refresh a dot per region coloured by
// health, with its label placed where it overlaps no other label or dot.

import type { RegionView } from "../../regions-view.js";
import { clear, sv } from "../dom.js";

const LAT_TOP = 80;
const LAT_BOTTOM = -60;
const SCALE = 2; // SVG units per degree
export const MAP_W = 360 * SCALE;
export const MAP_H = (LAT_TOP - LAT_BOTTOM) * SCALE;

function mapX(lon: number): number {
  return (Math.max(-180, Math.min(180, lon)) + 180) * SCALE;
}
function mapY(lat: number): number {
  return (LAT_TOP - Math.max(LAT_BOTTOM, Math.min(LAT_TOP, lat))) * SCALE;
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

/** Sea, land and graticule into the map's <svg>, once. */
export function drawStaticMap(svg: SVGSVGElement, dotsLayer: SVGGElement): void {
  svg.setAttribute("viewBox", `0 0 ${MAP_W} ${MAP_H}`);
  const parts: SVGElement[] = [sv("rect", { class: "sea", x: 0, y: 0, width: MAP_W, height: MAP_H, rx: 6 })];
  for (const shape of LAND) {
    parts.push(sv("polygon", { class: "land", points: shape.map(([lon, lat]) => `${mapX(lon).toFixed(0)},${mapY(lat).toFixed(0)}`).join(" ") }));
  }
  for (let lon = -150; lon <= 150; lon += 30) {
    const x = mapX(lon);
    parts.push(sv("line", { class: `graticule${lon === 0 ? " equator" : ""}`, x1: x, y1: 0, x2: x, y2: MAP_H }));
    const label = lon === 0 ? "0°" : `${Math.abs(lon)}°${lon < 0 ? "W" : "E"}`;
    parts.push(sv("text", { class: "grat-label", x: x + 3, y: MAP_H - 5, text: label }));
  }
  for (let lat = -30; lat <= 60; lat += 30) {
    const y = mapY(lat);
    parts.push(sv("line", { class: `graticule${lat === 0 ? " equator" : ""}`, x1: 0, y1: y, x2: MAP_W, y2: y }));
    const label = lat === 0 ? "0°" : `${Math.abs(lat)}°${lat < 0 ? "S" : "N"}`;
    parts.push(sv("text", { class: "grat-label", x: 4, y: y - 4, text: label }));
  }
  // Below the dots' layer, which the page's HTML holds.
  for (const p of parts) svg.insertBefore(p, dotsLayer);
}

export interface Marker {
  region: RegionView;
  health: RegionView["health"];
  /** The health word shown under the name. */
  healthText: string;
  /** The second line of the label (health, and p50 when there were calls). */
  sub: string;
}

interface Box {
  x0: number;
  x1: number;
  y0: number;
  y1: number;
}
const overlaps = (a: Box, b: Box): boolean => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;

/** One dot per region into `layer` (cleared first), labels beside them. */
export function drawMarkers(layer: SVGGElement, markers: Marker[]): void {
  clear(layer);
  const placed = markers.map((m) => ({ m, x: mapX(m.region.lon), y: mapY(m.region.lat) }));
  // Labels go beside their dot, on whichever side (and at whatever row) overlaps no other label
  // and no dot; one moved off its row gets a leader line. Text widths are estimated.
  const boxes: Box[] = placed.map((p) => ({ x0: p.x - 9, x1: p.x + 9, y0: p.y - 9, y1: p.y + 9 }));
  const dots = sv("g");
  const labels = sv("g");
  for (const { m, x, y } of placed.slice().sort((a, b) => a.y - b.y || a.x - b.x)) {
    const name = m.region.name;
    const w = Math.max(name.length * 7.8, m.sub.length * 6.2) + 4;
    const gap = m.health === "healthy" ? 12 : 17;
    let best: { dy: number; right: boolean; box: Box | null } | null = null;
    search: for (const dy of [0, 30, -30, 60, -60, 90, -90]) {
      for (const right of [true, false]) {
        const box = right
          ? { x0: x + gap - 2, x1: x + gap + w, y0: y - 14 + dy, y1: y + 18 + dy }
          : { x0: x - gap - w, x1: x - gap + 2, y0: y - 14 + dy, y1: y + 18 + dy };
        if (box.x0 < 0 || box.x1 > MAP_W || box.y0 < 0 || box.y1 > MAP_H) continue;
        if (boxes.some((b) => overlaps(b, box))) continue;
        best = { dy, right, box };
        break search;
      }
    }
    best ??= { dy: 0, right: x < MAP_W / 2, box: null };
    if (best.box) boxes.push(best.box);
    const { dy } = best;
    const tx = best.right ? gap : -gap;
    const anchor = best.right ? "start" : "end";
    const at = `translate(${x.toFixed(1)} ${y.toFixed(1)})`;
    dots.appendChild(
      sv("g", { class: "region-marker", transform: at, "data-testid": `region-marker-${name}` }, [
        dy ? sv("line", { x1: 0, y1: 0, x2: tx, y2: dy - 4, stroke: "#6b7280", "stroke-width": 1 }) : null,
        m.health === "healthy" ? null : sv("circle", { class: `halo stroke-${m.health}`, r: 12 }),
        sv("circle", { class: `region-dot fill-${m.health}`, r: 7, "data-testid": `region-dot-${name}`, "data-health": m.health }, sv("title", { text: `${name}: ${m.healthText}` })),
      ]),
    );
    labels.appendChild(
      sv("g", { transform: at, "aria-hidden": "true" }, [
        sv("text", { class: "map-label", x: tx, y: -1 + dy, "text-anchor": anchor, text: name }),
        sv("text", { class: "map-sub", x: tx, y: 13 + dy, "text-anchor": anchor, text: m.sub }),
      ]),
    );
  }
  layer.appendChild(dots);
  layer.appendChild(labels);
}
