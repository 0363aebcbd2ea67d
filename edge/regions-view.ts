// The shape of GET /v1/regions: per region, what callers actually got (end-to-end latency as
// the edge measured it, overall and per caller colo, over the last hour), the region's own
// report (health, nodes, capacity, queue, warm models), and how fresh all of it is. The status
// page draws exactly this. A key gets its account's view (scope "account": its own calls, models
// and queue; nothing counted over every account); the admin token gets the global one.

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

/** A node's wire as its router reported it (protocol/wire-version.ts ReportedWire). */
export interface NodeWireView {
  id: string;
  /** The range and features the node announced (1-1 and none: a node from before versions). */
  min: number;
  max: number;
  features: string[];
  /** The version and features it uses with its router. */
  version: number;
  agreed: string[];
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
  /**
   * Which wire its nodes speak, for a rolling upgrade (operator view; null in an account's view or
   * with no report): nodes counted by the version they use, nodes whose router reported none (a
   * router from before this field), and each node's wire (the first MAX_WIRE_NODES).
   */
  wire: { byVersion: Record<string, number>; unreported: number; nodes: NodeWireView[] } | null;
  /** The region's slots and memory (operator view; null in an account's view or with no report). */
  capacity: { slots: number; freeSlots: number; memoryMb: number; memoryUsedMb: number } | null;
  /** Calls queued: the account's own (account view), or all (operator). */
  queue: number;
  /** Calls queued or running in the region (operator view; null in an account's view). */
  inflight: number | null;
  /** The caller's own models warm there (empty in the operator view). */
  warmModels: { model: string; version: number; replicas: number }[];
  /** Warm models counted: the account's own (account view), or of all accounts (operator). */
  warmModelCount: number;
  /** End-to-end latency the callers of this view (the account's, or all) saw over the last hour. */
  latency: LatencySummary & { byColo: Record<string, LatencySummary> };
  /** Edge-to-region round trip, EWMA per caller colo, ms (account view: only colos it called from). */
  rttMs: Record<string, number>;
  /** Per-minute latency over the last hour, oldest first. */
  history: MinutePoint[];
}

/** Nodes a region's `wire.nodes` lists at most (the counts cover all of them). */
export const MAX_WIRE_NODES = 256;

export interface RegionsView {
  generatedAt: number;
  /** "account": what one key's account may see; "operator": the global view (admin token). */
  scope: "account" | "operator";
  /** True when any figure comes from last-known state rather than fresh reports. */
  stale: boolean;
  redis: "ok" | "unreachable" | "not_configured";
  regions: RegionView[];
}
