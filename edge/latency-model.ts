// The expected time of a call in a region, for one caller location and one model:
//   round trip + queue wait + (cold start if the model is not warm there) + inference.
// The round trip starts from a prior (great-circle distance at fiber speed times a routing
// factor) and is replaced by what the edge measured on real calls (an EWMA per colo and
// region). Queue, warmth and inference come from the region's own report. A request that
// continues a KV cache a region keeps (a follow-up chat turn's conversation key, or a plain
// prompt's prefix keys, in its report's `affinity`) expects that region to skip the prefill the
// cache covers: that saving is taken off its time. Pure functions.

import type { ModelReport, RegionReport } from "../protocol/region-report.js";
import type { RegionConfig } from "./env.js";
import { distanceKm, type CallerLocation } from "./geo.js";

/** Light in fiber covers about 200 km per ms; real routes are longer than great circles. */
const FIBER_KM_PER_MS = 200;
const ROUTING_FACTOR = 1.6;
const BASE_RTT_MS = 2;
/** Used when a region has not measured a cold start yet. */
export const DEFAULT_COLD_START_MS = 2_000;
const DEFAULT_INFER_MS = 5;
/** Unknown location: assume an intercontinental trip so measurements dominate quickly. */
const UNKNOWN_RTT_MS = 150;

// A report lists every model of the region; estimating runs on every call for every region,
// so each report is indexed once (reports are replaced, not mutated, on refresh).
const indexes = new WeakMap<RegionReport, { models: Map<string, ModelReport>; warm: Set<string>; affinity: Map<string, number> | null }>();

function indexOf(report: RegionReport) {
  let ix = indexes.get(report);
  if (!ix) {
    ix = { models: new Map((report.models ?? []).map((m) => [m.key, m])), warm: new Set(report.warm), affinity: null };
    indexes.set(report, ix);
  }
  return ix;
}

/** The prefill ms the first of `keys` (best first) the region keeps saves; 0 when it keeps none. */
function savedPrefillMs(report: RegionReport, keys: readonly string[]): number {
  const ix = indexOf(report);
  if (!ix.affinity) {
    // Built on first use only: most calls are not follow-ups. Reports come from Redis unchecked.
    ix.affinity = new Map();
    if (Array.isArray(report.affinity)) {
      for (const c of report.affinity) if (c && typeof c.key === "string" && typeof c.savedMs === "number" && c.savedMs > 0) ix.affinity.set(c.key, c.savedMs);
    }
  }
  for (const k of keys) {
    const ms = ix.affinity.get(k);
    if (ms !== undefined) return ms;
  }
  return 0;
}

export function priorRttMs(caller: CallerLocation, region: RegionConfig): number {
  if (caller.lat === null || caller.lon === null) return UNKNOWN_RTT_MS;
  const km = distanceKm(caller.lat, caller.lon, region.lat, region.lon);
  return BASE_RTT_MS + ((2 * km) / FIBER_KM_PER_MS) * ROUTING_FACTOR;
}

export interface Estimate {
  region: string;
  totalMs: number;
  rttMs: number;
  queueMs: number;
  coldMs: number;
  inferMs: number;
  warm: boolean;
  /** Prefill time the region's kept cache saves this request (already taken off totalMs). */
  savedMs: number;
}

export function estimate(
  caller: CallerLocation,
  region: RegionConfig,
  report: RegionReport | undefined,
  modelKey: string,
  measuredRttMs: number | undefined,
  /** The keys of a kept cache the request may continue, best first (protocol/conversation-key.ts). */
  affinity?: readonly string[],
): Estimate {
  const rttMs = measuredRttMs ?? priorRttMs(caller, region);
  const ix = report ? indexOf(report) : undefined;
  const model = ix?.models.get(modelKey);
  const warm = !!ix && ix.warm.has(modelKey);
  const inferMs = model && model.inferMs.p50 > 0 ? model.inferMs.p50 : DEFAULT_INFER_MS;
  let queueMs = 0;
  if (model) queueMs = model.queueMs.p50;
  if (report?.capacity && report.capacity.freeSlots === 0) {
    // Every slot busy: the wait grows with the queue in front of us.
    queueMs += ((report.queued + 1) / Math.max(1, report.capacity.slots)) * inferMs;
  }
  const coldMs = warm ? 0 : (report?.coldStartMs ?? DEFAULT_COLD_START_MS);
  // Never more than the inference time it is part of: a saving cannot make a region look free.
  const savedMs = affinity?.length && report && warm ? Math.min(inferMs, savedPrefillMs(report, affinity)) : 0;
  return { region: region.name, totalMs: rttMs + queueMs + coldMs + inferMs - savedMs, rttMs, queueMs, coldMs, inferMs, warm, savedMs };
}
