// Readiness from real state: the edge is ready when at least one region's fresh report says it
// is healthy (it has a node that takes calls), and a model is ready when one of the regions it
// may run in is. Load balancers and OIP clients poll these, so they must not say "ready" while
// every call would fail with no_capacity.

import type { EdgeConfig } from "./env.js";
import { usableReport, type RegionState } from "./region-state.js";

/** Regions that can take a call now, limited to `allowed` (a model's residency) when given. */
export function readyRegions(config: EdgeConfig, state: RegionState, allowed: string[] | null = null, now = Date.now()): string[] {
  return config.regions
    .filter((r) => (allowed === null || allowed.includes(r.name)) && usableReport(state, r.name, now)?.healthy === true)
    .map((r) => r.name);
}
