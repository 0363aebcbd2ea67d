// GET /v1/regions: per region, what callers actually got and what the region says about
// itself; GET /status: the page a person reads at a glance, drawn from the same JSON.

import { eq } from "drizzle-orm";
import type { Hono } from "hono";
import { REGION_REPORT_STALE_MS } from "../../protocol/region-report.js";
import { models } from "../../schema/schema.js";
import type { AppContext, AppEnv } from "../context.js";
import { requireKey } from "../middleware.js";
import { redisFor } from "../redis.js";
import { allRtts, latencyKey, regionState, usableReport } from "../region-state.js";
import type { LatencySummary, MinutePoint, RegionView, RegionsView } from "../regions-view.js";
import { statusPageHtml } from "../status-page.js";

const HOUR_MINUTES = 60;

function summarize(samples: { ms: number; status: number }[]): LatencySummary {
  const ok = samples.filter((s) => s.status < 500).map((s) => s.ms).sort((a, b) => a - b);
  const pct = (p: number) => (ok.length ? ok[Math.min(ok.length - 1, Math.max(0, Math.ceil((p / 100) * ok.length) - 1))]! : 0);
  return { p50: pct(50), p95: pct(95), p99: pct(99), count: samples.length, errors: samples.length - ok.length };
}

async function latencyHistory(c: AppContext, regions: string[], now: number) {
  const redis = redisFor(c.get("config"));
  const minuteNow = now - (now % 60_000);
  const minutes = Array.from({ length: HOUR_MINUTES }, (_, i) => minuteNow - (HOUR_MINUTES - 1 - i) * 60_000);
  const out = new Map<string, Map<number, { colo: string; ms: number; status: number }[]>>();
  if (!redis) return { minutes, out, ok: false };
  try {
    const p = redis.pipeline();
    for (const r of regions) for (const m of minutes) p.lrange(latencyKey(r, m), 0, -1);
    const lists = (await p.exec()) as unknown[][];
    let i = 0;
    for (const r of regions) {
      const byMinute = new Map<number, { colo: string; ms: number; status: number }[]>();
      for (const m of minutes) {
        const entries = (lists[i++] ?? []).map((e) => {
          const [colo, ms, status] = String(e).split("|");
          return { colo: colo ?? "XXX", ms: Number(ms), status: Number(status) };
        });
        if (entries.length) byMinute.set(m, entries);
      }
      out.set(r, byMinute);
    }
    return { minutes, out, ok: true };
  } catch {
    return { minutes, out, ok: false };
  }
}

async function buildView(c: AppContext): Promise<RegionsView> {
  const config = c.get("config");
  const now = Date.now();
  const state = await regionState(config, (p) => c.executionCtx.waitUntil(p));
  const names = config.regions.map((r) => r.name);
  const [history, mine] = await Promise.all([
    latencyHistory(c, names, now),
    c.get("db").select({ id: models.id, name: models.name }).from(models).where(eq(models.accountId, c.get("key").accountId)),
  ]);
  const myModels = new Map(mine.map((m) => [m.id, m.name]));
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
    const all = [...byMinute.values()].flat();
    const byColo: Record<string, LatencySummary> = {};
    for (const colo of new Set(all.map((s) => s.colo))) byColo[colo] = summarize(all.filter((s) => s.colo === colo));
    const points: MinutePoint[] = [...byMinute].map(([t, samples]) => ({ t, ...summarize(samples) }));
    const warmModels = (report?.models ?? [])
      .filter((m) => m.replicas > 0)
      .flatMap((m) => {
        const [id, version] = m.key.split("@");
        const name = myModels.get(id ?? "");
        return name ? [{ model: name, version: Number(version), replicas: m.replicas }] : [];
      });
    return {
      name: region.name,
      lat: region.lat,
      lon: region.lon,
      health,
      measuredAt: report?.updatedAt ?? null,
      nodes: report?.nodes.length ?? 0,
      capacity: report?.capacity ?? null,
      queue: report?.queued ?? 0,
      inflight: report?.inflight ?? 0,
      warmModels,
      warmModelCount: report?.warm.length ?? 0,
      latency: { ...summarize(all), byColo },
      rttMs: rtts[region.name] ?? {},
      history: points,
    };
  });
  return { generatedAt: now, stale, redis: state.redis, regions };
}

export function registerV1Regions(app: Hono<AppEnv>): void {
  app.get("/v1/regions", requireKey("infer"), async (c) => c.json(await buildView(c)));
  // The page itself holds no data; it asks /v1/regions with the key the person gives it.
  app.get("/status", (c) => c.html(statusPageHtml()));
}
