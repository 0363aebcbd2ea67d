// The shape of GET /v1/regions: per region, what callers actually got (end-to-end latency as
// the edge measured it, overall and per caller colo, over the last hour), the region's own
// report (health, nodes, capacity, queue, warm models), and how fresh all of it is. The status
// page draws exactly this.

export interface LatencySummary {
  p50: number;
  p95: number;
  p99: number;
  count: number;
  errors: number;
}

export interface MinutePoint extends LatencySummary {
  /** Start of the minute, ms since epoch. */
  t: number;
}

export interface RegionView {
  name: string;
  lat: number;
  lon: number;
  /** healthy: fresh report, nodes up; unhealthy: the region says so; stale: report too old; unknown: none. */
  health: "healthy" | "unhealthy" | "stale" | "unknown";
  /** When the region last reported, ms since epoch (null: never). */
  measuredAt: number | null;
  nodes: number;
  capacity: { slots: number; freeSlots: number; memoryMb: number; memoryUsedMb: number } | null;
  queue: number;
  inflight: number;
  /** The caller's own models warm there. */
  warmModels: { model: string; version: number; replicas: number }[];
  /** Warm models of all accounts, counted. */
  warmModelCount: number;
  /** End-to-end latency callers saw over the last hour. */
  latency: LatencySummary & { byColo: Record<string, LatencySummary> };
  /** Edge-to-region round trip, EWMA per caller colo, ms. */
  rttMs: Record<string, number>;
  /** Per-minute latency over the last hour, oldest first. */
  history: MinutePoint[];
}

export interface RegionsView {
  generatedAt: number;
  /** True when any figure comes from last-known state rather than fresh reports. */
  stale: boolean;
  redis: "ok" | "unreachable" | "not_configured";
  regions: RegionView[];
}
