// GET /v1/regions: per region, what callers actually got and what the region says about
// itself; GET /status: the page a person reads at a glance, drawn from the same JSON.
// Tenants are hostile, so what a key sees is its own account's view: its own warm models, the
// latency of its own calls (per colo), its own queued calls, and nothing summed over every
// account (no region-wide load, warm count, or other callers' colos). The global view is the
// operator's (admin token). Latencies come from per-minute histograms (edge/latency-histogram.ts),
// so percentiles are within about 2% of the exact ones and a report reads the same amount of
// data at any traffic.

import { eq } from "drizzle-orm";
import type { Hono } from "hono";
import { REGION_REPORT_STALE_MS } from "../../protocol/region-report.js";
import { models } from "../../schema/schema.js";
import type { AppContext, AppEnv } from "../context.js";
import { authorize, bearer, isAdminToken } from "../middleware.js";
import { redisFor } from "../redis.js";
import { histogramsByColo, LatencyHistogram, latencyKey } from "../latency-histogram.js";
import { allRtts, regionState, usableReport } from "../region-state.js";
import type { LatencySummary, MinutePoint, RegionView, RegionsView } from "../regions-view.js";
import { MeshError } from "../../protocol/errors.js";
import { htmlPage } from "../page-security.js";
import { statusPageHtml } from "../status-page.js";

const HOUR_MINUTES = 60;

/**
 * Per region and minute, the histograms per caller colo this view may see: the account's own
 * calls' hash, or everyone's (operator). One HGETALL per region and minute, each hash bounded
 * by colos x buckets, so the report costs the same at any traffic.
 */
async function latencyHistory(c: AppContext, regions: string[], now: number, account: string | null) {
  const redis = redisFor(c.get("config"));
  const minuteNow = now - (now % 60_000);
  const minutes = Array.from({ length: HOUR_MINUTES }, (_, i) => minuteNow - (HOUR_MINUTES - 1 - i) * 60_000);
  const out = new Map<string, Map<number, Map<string, LatencyHistogram>>>();
  if (!redis) return { minutes, out, ok: false };
  try {
    const p = redis.pipeline();
    for (const r of regions) for (const m of minutes) p.hgetall(latencyKey(r, m, account));
    const hashes = (await p.exec()) as (Record<string, unknown> | null)[];
    let i = 0;
    for (const r of regions) {
      const byMinute = new Map<number, Map<string, LatencyHistogram>>();
      for (const m of minutes) {
        const byColo = histogramsByColo(hashes[i++]);
        if (byColo.size) byMinute.set(m, byColo);
      }
      out.set(r, byMinute);
    }
    return { minutes, out, ok: true };
  } catch {
    return { minutes, out, ok: false };
  }
}

const mergeAll = (hs: Iterable<LatencyHistogram>) => {
  const sum = new LatencyHistogram();
  for (const h of hs) sum.merge(h);
  return sum;
};

/** The view for one account (`account` set) or the operator's global one (null). */
async function buildView(c: AppContext, account: string | null): Promise<RegionsView> {
  const config = c.get("config");
  const now = Date.now();
  const state = await regionState(config, (p) => c.executionCtx.waitUntil(p));
  const names = config.regions.map((r) => r.name);
  const [history, mine] = await Promise.all([
    latencyHistory(c, names, now, account),
    account === null
      ? Promise.resolve([])
      : c.get("db").select({ id: models.id, name: models.name }).from(models).where(eq(models.accountId, account)),
  ]);
  const myModels = new Map(mine.map((m) => [m.id, m.name]));
  // The colos this account called from: the only round trips it may see (others' colos
  // would tell it where other tenants' callers are).
  const myColos = new Set<string>();
  for (const byMinute of history.out.values()) for (const byColo of byMinute.values()) for (const colo of byColo.keys()) myColos.add(colo);
  const rtts = allRtts();
  let stale = state.redis !== "ok";
  const regions: RegionView[] = config.regions.map((region) => {
    const report = state.reports.get(region.name);
    const usable = usableReport(state, region.name, now);
    const health: RegionView["health"] = !report
      ? "unknown"
      : !usable
        ? "stale"
        : usable.healthy && usable.nodes.length > 0
          ? "healthy"
          : "unhealthy";
    if (health === "stale" || (report && now - report.updatedAt > REGION_REPORT_STALE_MS)) stale = true;
    const byMinute = history.out.get(region.name) ?? new Map();
    const coloHours = new Map<string, LatencyHistogram>();
    const points: MinutePoint[] = [];
    for (const [t, minuteByColo] of byMinute) {
      points.push({ t, ...mergeAll(minuteByColo.values()).summary() });
      for (const [colo, h] of minuteByColo) {
        const hour = coloHours.get(colo);
        if (hour) hour.merge(h);
        else coloHours.set(colo, new LatencyHistogram().merge(h));
      }
    }
    const byColo: Record<string, LatencySummary> = {};
    for (const [colo, h] of coloHours) byColo[colo] = h.summary();
    const own = (report?.models ?? []).filter((m) => myModels.has(m.key.split("@")[0] ?? ""));
    const warmModels = own
      .filter((m) => m.replicas > 0)
      .map((m) => {
        const [id, version] = m.key.split("@");
        return { model: myModels.get(id ?? "")!, version: Number(version), replicas: m.replicas };
      });
    const regionRtts = rtts[region.name] ?? {};
    const common = {
      name: region.name,
      lat: region.lat,
      lon: region.lon,
      health,
      measuredAt: report?.updatedAt ?? null,
      nodes: report?.nodes.length ?? 0,
      latency: { ...mergeAll(coloHours.values()).summary(), byColo },
      history: points,
    };
    if (account === null) {
      return {
        ...common,
        capacity: report?.capacity ?? null,
        queue: report?.queued ?? 0,
        inflight: report?.inflight ?? 0,
        warmModels: [],
        warmModelCount: report?.warm.length ?? 0,
        rttMs: regionRtts,
      };
    }
    return {
      ...common,
      capacity: null,
      queue: own.reduce((n, m) => n + m.queued, 0),
      inflight: null,
      warmModels,
      warmModelCount: warmModels.length,
      rttMs: Object.fromEntries(Object.entries(regionRtts).filter(([colo]) => myColos.has(colo))),
    };
  });
  return { generatedAt: now, scope: account === null ? "operator" : "account", stale, redis: state.redis, regions };
}

export function registerV1Regions(app: Hono<AppEnv>): void {
  app.get("/v1/regions", async (c) => {
    const token = bearer(c.req.header("authorization"));
    if (!token) throw new MeshError("unauthorized", "missing API key: send 'Authorization: Bearer <key>'");
    if (isAdminToken(c, token)) return c.json(await buildView(c, null));
    const { key, limit, remaining } = await authorize(c, token, "infer");
    c.header("x-ratelimit-limit", String(limit));
    c.header("x-ratelimit-remaining", String(remaining));
    return c.json(await buildView(c, key.accountId));
  });
  // The page itself holds no data; it asks /v1/regions with the key the person gives it.
  app.get("/status", () => htmlPage(statusPageHtml));
}
