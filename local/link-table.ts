// The mesh's geography in one table: the round trip (and jitter, loss) between each caller colo
// and each region. Both local modes read it: the one-machine mode (`npm start`) hands it to the
// edge as SIMULATED_RTT, so the edge-to-region hop is delayed by it and the latency model
// measures it; the multi-host mode (local/topology.ts) turns each row into a real link between
// the colo's namespace and the region's, so the edge measures it from packets instead.

export interface LinkSpec {
  /** Round trip, ms (half each way). */
  rttMs: number;
  /** Each packet's one-way delay varies by up to ± this, ms (multi-host mode only). */
  jitterMs: number;
  /** Share of packets dropped on each way, 0..1 (multi-host mode only). */
  loss: number;
}

/** Colo (IATA code, edge/geo.ts) → region → link. Regions are those of local/mesh.ts DEFAULT_REGIONS. */
export const LINK_TABLE: Readonly<Record<string, Readonly<Record<string, LinkSpec>>>> = {
  ICN: { "ap-seoul": { rttMs: 8, jitterMs: 1, loss: 0 }, "us-west": { rttMs: 130, jitterMs: 3, loss: 0 } },
  NRT: { "ap-seoul": { rttMs: 34, jitterMs: 2, loss: 0 }, "us-west": { rttMs: 110, jitterMs: 3, loss: 0 } },
  SJC: { "us-west": { rttMs: 8, jitterMs: 1, loss: 0 }, "ap-seoul": { rttMs: 130, jitterMs: 3, loss: 0 } },
  LAX: { "us-west": { rttMs: 14, jitterMs: 1, loss: 0 }, "ap-seoul": { rttMs: 140, jitterMs: 3, loss: 0 } },
  FRA: { "us-west": { rttMs: 150, jitterMs: 3, loss: 0 }, "ap-seoul": { rttMs: 250, jitterMs: 4, loss: 0 } },
};

/** The colos the multi-host mode gives a namespace (and an edge) by default: one near each region. */
export const DEFAULT_HOST_COLOS = ["ICN", "SJC"] as const;

/** The region with the shortest round trip from `colo` among `regions` (null: colo not in the table). */
export function nearestRegion(colo: string, regions: readonly string[] = Object.keys(LINK_TABLE[colo] ?? {})): string | null {
  const row = LINK_TABLE[colo];
  if (!row) return null;
  let best: string | null = null;
  for (const r of regions) if (row[r] && (best === null || row[r]!.rttMs < row[best]!.rttMs)) best = r;
  return best;
}

/** The edge's SIMULATED_RTT for the one-machine mode: colo → region → round trip in ms. */
export function simulatedRttVar(regions: readonly string[], table = LINK_TABLE): string {
  const out: Record<string, Record<string, number>> = {};
  for (const [colo, row] of Object.entries(table)) {
    out[colo] = {};
    for (const r of regions) if (row[r]) out[colo]![r] = row[r]!.rttMs;
  }
  return JSON.stringify(out);
}
