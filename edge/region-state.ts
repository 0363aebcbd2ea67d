// What this isolate knows about the regions, refreshed from Redis at most once a second and
// never on the hot path once a first answer came back (stale-while-revalidate): the regions'
// reports, the measured edge-to-region round trips (EWMA per colo and region), and per-call
// latencies counted into per-minute histograms (edge/latency-histogram.ts), added to Redis with
// HINCRBY at each refresh for the latency reports. When Redis is unreachable the edge keeps
// routing on its last known reports for LAST_KNOWN_MAX_MS and says so.
//
// A call the view would refuse (no region may take it) re-reads the reports first when the view
// is older than RECHECK_MS (rankOnFreshView): a router publishes at once when a node joins
// (regions/report-publisher.ts), so after a router restart the view that says "no nodes" may be
// out of date by up to a second. At most one such re-read per RECHECK_MS per isolate, so a real
// outage does not make every refused call a Redis read.

import { REGION_REPORT_STALE_MS, regionReportKey, type RegionReport } from "../protocol/region-report.js";
import type { EdgeConfig } from "./env.js";
import { histogramField, latencyKey, TOTAL_FIELD } from "./latency-histogram.js";
import { log } from "./log.js";
import { redisFor } from "./redis.js";

const REFRESH_MS = 1_000;
/** How old a view that refuses a call may be before the call re-reads the reports (and how often one may). */
export const RECHECK_MS = 250;
const AWAIT_REFRESH_MS = 2 * REFRESH_MS;
/** How long last-known reports keep steering calls after Redis stopped answering. */
export const LAST_KNOWN_MAX_MS = 60_000;
const RTT_KEY = "mesh:rtt";
const RTT_ALPHA = 0.2;
/**
 * The first samples of a colo and region count by their minimum, not the average: a round trip's
 * outliers are upward, and the first call from a cold isolate (its first connection, on a loaded
 * machine) measured hundreds of ms over an 8 ms link, which as the whole average sent the next
 * calls to a region 130 ms away until exploration happened to re-measure (CI: ICN 21/30 in
 * ap-seoul). After these, the EWMA follows the link, up as well as down.
 */
const RTT_EARLY_SAMPLES = 3;
/** Per-minute latency histograms live two hours (the report reads the last one). */
const LATENCY_TTL_S = 2 * 3600;
/**
 * Counts not yet written, at most this many (hash, field) pairs: far above what one second
 * makes (regions x views x colos x buckets touched), a bound only for a long Redis outage.
 */
const PENDING_FIELDS_MAX = 20_000;

export interface RegionState {
  reports: Map<string, RegionReport>;
  /** When Redis last answered (ms since epoch); 0 = never. */
  lastRedisOk: number;
  redis: "ok" | "unreachable" | "not_configured";
}

const state: RegionState = { reports: new Map(), lastRedisOk: 0, redis: "not_configured" };
const rtt = new Map<string, { ms: number; n: number; dirty: boolean }>();
/** Latency counts to add to Redis: hash key -> field -> count. */
let pendingLatency = new Map<string, Map<string, number>>();
let pendingFields = 0;
let fetchedAt = 0;
let refreshing: Promise<void> | null = null;
let recheckedAt = 0;

const rttField = (colo: string, region: string) => `${colo}|${region}`;

async function refresh(config: EdgeConfig): Promise<void> {
  const redis = redisFor(config);
  if (!redis) {
    state.redis = "not_configured";
    return;
  }
  const batch = pendingLatency;
  pendingLatency = new Map();
  pendingFields = 0;
  const dirty = [...rtt].filter(([, v]) => v.dirty);
  try {
    const p = redis.pipeline();
    p.mget(...config.regions.map((r) => regionReportKey(r.name)));
    p.hgetall(RTT_KEY);
    if (dirty.length) p.hset(RTT_KEY, Object.fromEntries(dirty.map(([k, v]) => [k, Math.round(v.ms * 100) / 100])));
    // One HINCRBY per (hash, field) touched since the last refresh, however many calls it
    // counts; the hash's total last, so a reader that sees it sees the counts it sums.
    for (const [key, fields] of batch) {
      let total = 0;
      for (const [field, n] of fields) {
        p.hincrby(key, field, n);
        total += n;
      }
      p.hincrby(key, TOTAL_FIELD, total);
      p.expire(key, LATENCY_TTL_S);
    }
    const [reports, rtts] = (await p.exec()) as [(RegionReport | null)[], Record<string, number> | null, ...unknown[]];
    for (const [, v] of dirty) v.dirty = false;
    const next = new Map<string, RegionReport>();
    reports.forEach((r, i) => {
      if (r && typeof r === "object") next.set(config.regions[i]!.name, r);
    });
    state.reports = next;
    for (const [k, ms] of Object.entries(rtts ?? {})) {
      // Another isolate's measurement fills in what this one has not measured itself.
      if (!rtt.has(k) && typeof ms === "number") rtt.set(k, { ms, n: 1, dirty: false });
    }
    state.lastRedisOk = Date.now();
    state.redis = "ok";
  } catch (err) {
    if (state.redis !== "unreachable") log("warn", "-", "Redis unreachable: routing on last known region reports", { error: String(err) });
    state.redis = "unreachable";
    // Keep what did not get written, bounded, for the next try.
    for (const [key, fields] of batch) for (const [field, n] of fields) countLatency(key, field, n);
  }
}

/** The current view, refreshed in the background when older than a second. */
export async function regionState(config: EdgeConfig, waitUntil: (p: Promise<unknown>) => void): Promise<RegionState> {
  if (Date.now() - fetchedAt > REFRESH_MS && !refreshing) {
    const age = Date.now() - fetchedAt;
    fetchedAt = Date.now();
    refreshing = refresh(config).finally(() => {
      refreshing = null;
    });
    // A view older than AWAIT_REFRESH_MS (an isolate that sat idle) may still show a region that
    // has stopped since, and a call sent to a closed port is lost, not re-sent (at most once):
    // such a call waits for the fresh view. A stopping router answers "draining" for longer
    // than that (regions/server.ts), so every edge learns of it before its port closes.
    if ((state.lastRedisOk === 0 || age > AWAIT_REFRESH_MS) && state.redis !== "unreachable") await refreshing;
    else waitUntil(refreshing);
  }
  return state;
}

/**
 * Whether a call its view refuses may re-read the reports: the view (read at `viewAt`) is older
 * than RECHECK_MS, and this isolate's last such re-read (at `lastRecheck`) is too.
 */
export function mayRecheck(now: number, viewAt: number, lastRecheck: number): boolean {
  return now - viewAt >= RECHECK_MS && now - lastRecheck >= RECHECK_MS;
}

/**
 * Ranks on the current view (`rank`); when that ranks no region and Redis answered the last
 * read, ranks again on the reports read now: the read already under way if there is one, else a
 * new one when mayRecheck allows it.
 */
export async function rankOnFreshView<T>(config: EdgeConfig, waitUntil: (p: Promise<unknown>) => void, rank: (s: RegionState) => T[]): Promise<T[]> {
  const ranked = rank(await regionState(config, waitUntil));
  // Not while Redis is down: the refusal would wait on a read that is likely to time out.
  if (ranked.length > 0 || state.redis !== "ok") return ranked;
  if (!refreshing) {
    const now = Date.now();
    if (!mayRecheck(now, fetchedAt, recheckedAt)) return ranked;
    recheckedAt = fetchedAt = now;
    refreshing = refresh(config).finally(() => {
      refreshing = null;
    });
  }
  await refreshing;
  return rank(state);
}

/**
 * A report the router may steer by: recent enough, judged against when Redis last answered
 * while Redis is down (last-known state), and not at all once that is over LAST_KNOWN_MAX_MS.
 */
export function usableReport(s: RegionState, region: string, now = Date.now()): RegionReport | undefined {
  const r = s.reports.get(region);
  if (!r) return undefined;
  if (s.redis === "unreachable") {
    if (now - s.lastRedisOk > LAST_KNOWN_MAX_MS) return undefined;
    return s.lastRedisOk - r.updatedAt < REGION_REPORT_STALE_MS ? r : undefined;
  }
  return now - r.updatedAt < REGION_REPORT_STALE_MS ? r : undefined;
}

export function measuredRtt(colo: string, region: string): number | undefined {
  return rtt.get(rttField(colo, region))?.ms;
}

export function allRtts(): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [k, v] of rtt) {
    const [colo, region] = k.split("|") as [string, string];
    (out[region] ??= {})[colo] = Math.round(v.ms * 10) / 10;
  }
  return out;
}

function countLatency(key: string, field: string, n: number): void {
  let fields = pendingLatency.get(key);
  const cur = fields?.get(field);
  if (fields && cur !== undefined) {
    fields.set(field, cur + n);
    return;
  }
  if (pendingFields >= PENDING_FIELDS_MAX) return;
  if (!fields) pendingLatency.set(key, (fields = new Map()));
  fields.set(field, n);
  pendingFields++;
}

/** One round trip measured from `colo` to `region` (a call's network time, or a probe's: edge/rtt-probe.ts). */
export function recordRtt(colo: string, region: string, rttMs: number): void {
  if (!(rttMs >= 0)) return;
  const k = rttField(colo, region);
  const cur = rtt.get(k);
  if (!cur) rtt.set(k, { ms: rttMs, n: 1, dirty: true });
  else if (cur.n < RTT_EARLY_SAMPLES) {
    cur.ms = Math.min(cur.ms, rttMs);
    cur.n++;
    cur.dirty = true;
  } else {
    cur.ms += RTT_ALPHA * (rttMs - cur.ms);
    cur.n++;
    cur.dirty = true;
  }
}

/**
 * One finished call: its round trip refines the estimate; its latency is counted in the
 * minute's histograms, everyone's and its account's, so GET /v1/regions can show a key only
 * its own account's calls.
 */
export function recordCall(region: string, colo: string, totalMs: number, rttMs: number | null, status: number, account = ""): void {
  if (rttMs !== null) recordRtt(colo, region, rttMs);
  const now = Date.now();
  const minute = now - (now % 60_000);
  const field = histogramField(colo, totalMs, status < 500);
  countLatency(latencyKey(region, minute, null), field, 1);
  if (account) countLatency(latencyKey(region, minute, account), field, 1);
}
