// What a region publishes about itself to Redis every second, and what the edge routes on.
// The key expires, so a region that dies disappears from the edge's view on its own.

import type { ConversationHeld, DiskUsage } from "./messages.js";
import type { ReportedWire } from "./wire-version.js";

export const REGION_REPORT_PREFIX = "mesh:region:";
export const REGION_REPORT_TTL_S = 5;
/** A report older than this is treated as absent. */
export const REGION_REPORT_STALE_MS = 5_000;

export interface NodeReport {
  id: string;
  accelerator: string;
  executionProvider: string;
  inflight: number;
  slots: number;
  memoryBudgetMb: number;
  memoryUsedMb: number;
  utilisation: number;
  draining: boolean;
  warm: string[];
  /** The node's model cache and disk, from its last heartbeat (null: not reported yet). */
  disk?: DiskUsage | null;
  /** The wire the node announced and the version and features it uses with the router (absent from older routers). */
  wire?: ReportedWire;
}

export interface Percentiles {
  p50: number;
  p95: number;
  p99: number;
}

export interface ModelReport {
  key: string;
  replicas: number;
  loading: number;
  queued: number;
  /** Calls per second (EWMA) and its trend. */
  rate: number;
  trend: number;
  queueMs: Percentiles;
  inferMs: Percentiles;
}

export interface RegionReport {
  region: string;
  updatedAt: number;
  healthy: boolean;
  nodes: NodeReport[];
  /** Model keys warm on at least one node. */
  warm: string[];
  /** Calls queued or running in the region. */
  inflight: number;
  queued: number;
  capacity: { slots: number; freeSlots: number; memoryMb: number; memoryUsedMb: number };
  models: ModelReport[];
  served: number;
  failed: number;
  loads: number;
  evictions: number;
  /** Recent time to make a model warm (download + load), EWMA, ms; null before the first load. */
  coldStartMs: number | null;
  /**
   * Conversation keys whose KV caches the region's nodes keep, with the prefill ms a follow-up
   * saves there (at most MAX_REGION_CONVERSATIONS; absent from older routers). The edge counts
   * the saving in its choice of region for a follow-up turn.
   */
  affinity?: ConversationHeld[];
}

/** Conversation keys one region report names at most (its size stays small). */
export const MAX_REGION_CONVERSATIONS = 1_024;

export function regionReportKey(region: string): string {
  return REGION_REPORT_PREFIX + region;
}

/** Redis hash of keep-warm policies the edge writes and every router reads: field = model key. */
export const MODEL_POLICIES_KEY = "mesh:policies";

export interface ModelPolicyRecord {
  keepWarm: number;
  replicas: number | null;
  /** The owning account (a region keeps each tenant's share by it). */
  account: string;
  name: string;
  version: number;
  sha256: string;
  size: number;
  signature: { inputs: { name: string; datatype: string; shape: number[] }[]; outputs: { name: string; datatype: string; shape: number[] }[] };
  /** The edge origin the artifact is downloaded from (routers sign the URL themselves). */
  artifactBase: string;
  /** A bundle's data files (downloaded from artifactBase by sha256 like the artifact). */
  files?: { name: string; sha256: string; size: number }[];
  /** Regions allowed to hold the model (data residency); null = all. */
  regions: string[] | null;
}

/** A byte count as messages and logs print it (1.5 MiB). */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
