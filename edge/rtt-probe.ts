// Active round-trip probes of regions that look slower than their distance says. The latency
// model learns a colo's round trip to a region from the calls it sends there, and a region
// ranked behind another gets only the exploration share of calls (2%): after a slow link
// recovered, its estimate came down only as fast as those few calls re-measured it (38-44 s in
// the multi-host test, docs/multi-host.md). So while a call is out, the edge also sends a cheap
// GET /healthz to each other region whose measured round trip is well above its prior, and
// whose prior is below the call's expected time (at most one probe per colo and region every
// PROBE_INTERVAL_MS, per isolate); the probe's round trip refines the same average calls do.
//
// A probe is two requests, one after the other, and the shorter counts: the first may open a
// new TCP and TLS connection (workerd closes an idle outbound connection after about 5 s), two
// round trips that are not the link's. It is not awaited and not kept alive past the call
// (no waitUntil here): when the call ends first, workerd cancels it and nothing is recorded.
// That is the point: a region that cannot answer a probe within the time the chosen region took
// for a whole call is still the slower one, and its high estimate stays.
// Not for a silent region (suspect: its own probe is one real call at a time, region-client.ts),
// and not with a simulated distance (one-machine mode), which a probe over loopback would undo.

import type { EdgeConfig, RegionConfig } from "./env.js";
import { COLOS } from "./geo.js";
import { priorRttMs } from "./latency-model.js";
import { measuredRtt, recordRtt } from "./region-state.js";

/** At most one probe per colo and region this often (per isolate). */
export const PROBE_INTERVAL_MS = 500;
/** Slow: a measured round trip above SLOW_FACTOR x the prior + SLOW_MARGIN_MS. */
export const SLOW_FACTOR = 2;
export const SLOW_MARGIN_MS = 20;

/** Colo|region -> when its last probe started. */
const lastProbe = new Map<string, number>();

/**
 * Whether `region` is worth a probe from `colo` while a call expected to take `callMs` is out
 * elsewhere: it was measured slower than its distance explains, yet by that distance it could
 * answer within the call. A region farther than that (ICN's 130 ms link to us-west while calls
 * to ap-seoul take 20 ms) could only be cancelled mid-handshake with every call, for nothing.
 */
export function worthProbing(colo: string, region: RegionConfig, callMs: number): boolean {
  const measured = measuredRtt(colo, region.name);
  if (measured === undefined) return false;
  const prior = priorOf(colo, region);
  return prior < callMs && measured > SLOW_FACTOR * prior + SLOW_MARGIN_MS;
}

/** Region -> colo -> its prior round trip: fixed by their coordinates, so not recomputed on every call. */
const priors = new WeakMap<RegionConfig, Map<string, number>>();

function priorOf(colo: string, region: RegionConfig): number {
  let byColo = priors.get(region);
  if (!byColo) priors.set(region, (byColo = new Map()));
  let prior = byColo.get(colo);
  if (prior === undefined) {
    const at = COLOS[colo];
    byColo.set(colo, (prior = priorRttMs({ colo, lat: at?.[0] ?? null, lon: at?.[1] ?? null }, region)));
  }
  return prior;
}

/**
 * Starts probes of the regions other than `chosen` (where a call expected to take `callMs` goes)
 * that are worth one from `colo` and are due; returns them (tests await them; the edge does not).
 * Never throws.
 */
export function probeSlowRegions(config: EdgeConfig, chosen: string, callMs: number, colo: string, now = Date.now()): Promise<void>[] {
  const started: Promise<void>[] = [];
  for (const region of config.regions) {
    if (region.name === chosen || (config.localMode && config.simulatedRtt[colo]?.[region.name])) continue;
    const key = `${colo}|${region.name}`;
    if (now - (lastProbe.get(key) ?? 0) < PROBE_INTERVAL_MS || !worthProbing(colo, region, callMs)) continue;
    lastProbe.set(key, now);
    started.push(probe(region).then((ms) => (ms === null ? undefined : recordRtt(colo, region.name, ms))));
  }
  return started;
}

/** The shorter round trip of two GET /healthz in a row; null when either failed. */
async function probe(region: RegionConfig): Promise<number | null> {
  try {
    let best = Infinity;
    for (let i = 0; i < 2; i++) {
      const t = Date.now();
      const res = await fetch(region.url + "/healthz", { headers: { "x-request-id": "rtt-probe" } });
      await res.arrayBuffer();
      if (!res.ok) return null;
      best = Math.min(best, Date.now() - t);
    }
    return best;
  } catch {
    return null;
  }
}

/** Tests: forget when regions were probed. */
export function resetProbes(): void {
  lastProbe.clear();
}
