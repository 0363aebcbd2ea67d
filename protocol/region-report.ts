// What a region publishes about itself to Redis every second, and what the edge routes on.
// The key expires, so a region that dies disappears from the edge's view on its own.

export const REGION_REPORT_PREFIX = "mesh:region:";
export const REGION_REPORT_TTL_S = 5;
/** A report older than this is treated as absent. */
export const REGION_REPORT_STALE_MS = 5_000;

export interface NodeReport {
  id: string;
  accelerator: string;
  executionProvider: string;
  inflight: number;
  warm: string[];
}

export interface RegionReport {
  region: string;
  updatedAt: number;
  healthy: boolean;
  nodes: NodeReport[];
  /** Model keys warm on at least one node. */
  warm: string[];
  inflight: number;
  served: number;
  failed: number;
}

export function regionReportKey(region: string): string {
  return REGION_REPORT_PREFIX + region;
}
