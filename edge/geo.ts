// Where a caller is: the Worker's `request.cf` (colo and coordinates), or in local mode a colo
// the caller names with `x-mesh-colo`. The table gives coordinates of common Cloudflare colos
// (IATA codes) for when `cf` carries no coordinates.

export interface CallerLocation {
  colo: string;
  lat: number | null;
  lon: number | null;
}

export const COLOS: Readonly<Record<string, [number, number]>> = {
  SJC: [37.36, -121.93],
  SFO: [37.62, -122.38],
  LAX: [33.94, -118.41],
  SEA: [47.45, -122.31],
  DFW: [32.9, -97.04],
  ORD: [41.98, -87.9],
  IAD: [38.95, -77.46],
  EWR: [40.69, -74.17],
  YYZ: [43.68, -79.63],
  GRU: [-23.43, -46.47],
  LHR: [51.47, -0.45],
  FRA: [50.03, 8.56],
  AMS: [52.31, 4.76],
  CDG: [49.01, 2.55],
  ICN: [37.46, 126.44],
  NRT: [35.77, 140.39],
  KIX: [34.43, 135.24],
  HKG: [22.31, 113.92],
  SIN: [1.36, 103.99],
  SYD: [-33.94, 151.18],
  BOM: [19.09, 72.87],
};

const COLO_RE = /^[A-Z]{3}$/;

export function callerLocation(req: Request, localMode: boolean): CallerLocation {
  const named = req.headers.get("x-mesh-colo")?.toUpperCase();
  if (localMode && named && COLO_RE.test(named)) {
    const c = COLOS[named];
    return { colo: named, lat: c?.[0] ?? null, lon: c?.[1] ?? null };
  }
  const cf = (req as Request & { cf?: { colo?: string; latitude?: string; longitude?: string } }).cf;
  const colo = cf?.colo && COLO_RE.test(cf.colo) ? cf.colo : "XXX";
  const lat = cf?.latitude !== undefined ? Number(cf.latitude) : (COLOS[colo]?.[0] ?? null);
  const lon = cf?.longitude !== undefined ? Number(cf.longitude) : (COLOS[colo]?.[1] ?? null);
  return { colo, lat: Number.isFinite(lat) ? lat : null, lon: Number.isFinite(lon) ? lon : null };
}

/** Great-circle distance in km (haversine). */
export function distanceKm(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6371 * Math.asin(Math.min(1, Math.sqrt(a)));
}
