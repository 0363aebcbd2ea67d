// GET /v1/regions: per region, what callers actually got and what the region says about
// itself; GET /status: the page a person reads at a glance, drawn from the same JSON.
// Tenants are hostile, so what a key sees is its own account's view: its own warm models, the
// latency of its own calls (per colo), its own queued calls, and nothing summed over every
// account (no region-wide load, warm count, or other callers' colos). The global view is the
// operator's (admin token). Latencies come from per-minute histograms (edge/latency-histogram.ts),
// so percentiles are within about 2% of the exact ones and a report reads the same amount of
// data at any traffic.

import { eq } from "drizzle-orm";
import { z } from "zod";
import { REGION_REPORT_STALE_MS, type RegionReport } from "../../protocol/region-report.js";
import { models } from "../../schema/schema.js";
import type { AppContext } from "../context.js";
import { authorize, bearer, isAdminToken } from "../middleware.js";
import { redisFor } from "../redis.js";
import { histogramsByColo, LatencyHistogram, latencyKey, TOTAL_FIELD, type SparseHistogram } from "../latency-histogram.js";
import { allRtts, regionState, usableReport } from "../region-state.js";
import { MAX_WIRE_NODES, type LatencySummary, type MinutePoint, type NodeWireView, type RegionView, type RegionsView } from "../regions-view.js";
import { parseReportedWire } from "../../protocol/wire-version.js";
import { MeshError } from "../../protocol/errors.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { registerPage } from "./pages.js";

const HOUR_MINUTES = 60;
/**
 * What an isolate keeps of the views it reported (the operator's, accounts'), the least recent
 * going first: at most this many views, and this many occupied buckets in all (~10 bytes each,
 * so ~10 MB; an hour of 2 regions with callers in 50 colos, ~100 buckets in use each, is 600,000).
 */
const VIEWS_CACHED = 32;
const BUCKETS_CACHED = 1_000_000;

/** One region's minute as this isolate last read it: its total, its point, its colos' histograms. */
interface Minute {
  /** Calls counted in what was read (errors included): re-read when the hash's total differs. */
  n: number;
  /** Occupied buckets held, over all colos (the cache's measure). */
  size: number;
  point: LatencySummary;
  byColo: Map<string, SparseHistogram>;
}

/** view ("*" or an account) -> hash key -> minute; bounded by VIEWS_CACHED and BUCKETS_CACHED. */
const minuteCache = new Map<string, Map<string, Minute>>();

function readMinute(hash: Record<string, unknown> | null): Minute | null {
  const byColo = histogramsByColo(hash);
  const all = new LatencyHistogram();
  for (const h of byColo.values()) all.merge(h);
  const point = all.summary();
  if (point.count === 0) return null;
  const sparse = new Map([...byColo].map(([colo, h]) => [colo, h.toSparse()]));
  let size = 0;
  for (const h of sparse.values()) size += h.buckets.length + 1;
  return { n: point.count, size, point, byColo: sparse };
}

/**
 * Per region and minute of the last hour, what this view may see: the account's own calls'
 * hash, or everyone's (operator). A report asks Redis for each hash's total (one HGET each) and
 * reads whole only the hashes that changed since this isolate last read them (the current
 * minute, mostly): its cost does not grow with traffic. Each hash is itself bounded by colos x
 * buckets, so even a first read of the hour is bounded.
 */
async function latencyHistory(c: AppContext, regions: string[], now: number, account: string | null) {
  const redis = redisFor(c.get("config"));
  const minuteNow = now - (now % 60_000);
  const minutes = Array.from({ length: HOUR_MINUTES }, (_, i) => minuteNow - (HOUR_MINUTES - 1 - i) * 60_000);
  const out = new Map<string, Map<number, Minute>>();
  if (!redis) return { minutes, out, ok: false };
  const view = account ?? "*";
  // Shared by concurrent reports of the same view: each only adds what it read.
  const cached = minuteCache.get(view) ?? new Map<string, Minute>();
  try {
    const keys = regions.flatMap((r) => minutes.map((m) => latencyKey(r, m, account)));
    const totals = redis.pipeline();
    for (const k of keys) totals.hget(k, TOTAL_FIELD);
    const ns = (await totals.exec()) as unknown[];
    const changed = keys.filter((k, i) => {
      const n = Number(ns[i] ?? 0) || 0;
      if (n <= 0) cached.delete(k);
      return n > 0 && cached.get(k)?.n !== n;
    });
    if (changed.length) {
      const reads = redis.pipeline();
      for (const k of changed) reads.hgetall(k);
      const hashes = (await reads.exec()) as (Record<string, unknown> | null)[];
      changed.forEach((k, i) => {
        const minute = readMinute(hashes[i] ?? null);
        if (minute) cached.set(k, minute);
        else cached.delete(k);
      });
    }
    // What fell out of the hour goes.
    const live = new Set(keys);
    for (const k of cached.keys()) if (!live.has(k)) cached.delete(k);
    let i = 0;
    for (const r of regions) {
      const byMinute = new Map<number, Minute>();
      for (const m of minutes) {
        const minute = cached.get(keys[i++]!);
        if (minute) byMinute.set(m, minute);
      }
      out.set(r, byMinute);
    }
    return { minutes, out, ok: true };
  } catch {
    return { minutes, out, ok: false };
  } finally {
    minuteCache.delete(view); // re-inserted as the most recent
    minuteCache.set(view, cached);
    let held = 0;
    for (const minutes of minuteCache.values()) for (const m of minutes.values()) held += m.size;
    for (const [v, minutes] of minuteCache) {
      if (v === view || (minuteCache.size <= VIEWS_CACHED && held <= BUCKETS_CACHED)) break;
      for (const m of minutes.values()) held -= m.size;
      minuteCache.delete(v);
    }
  }
}

/**
 * Which wire a region's nodes speak (operator view). The report comes from a router of any
 * release through Redis, so each node's wire is checked as a peer's announcement is, and the
 * list is bounded; a node without a valid one counts as unreported.
 */
function wireView(report: RegionReport): NonNullable<RegionView["wire"]> {
  const byVersion: Record<string, number> = {};
  const nodes: NodeWireView[] = [];
  let unreported = 0;
  for (const n of report.nodes) {
    const w = parseReportedWire(n.wire);
    if (!w) {
      unreported++;
      continue;
    }
    byVersion[w.version] = (byVersion[w.version] ?? 0) + 1;
    if (nodes.length < MAX_WIRE_NODES) nodes.push({ id: typeof n.id === "string" ? n.id.slice(0, 128) : "?", ...w });
  }
  return { byVersion, unreported, nodes };
}

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
  for (const byMinute of history.out.values()) for (const minute of byMinute.values()) for (const colo of minute.byColo.keys()) myColos.add(colo);
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
    const byMinute = history.out.get(region.name) ?? new Map<number, Minute>();
    const coloHours = new Map<string, LatencyHistogram>();
    const points: MinutePoint[] = [];
    for (const [t, minute] of byMinute) {
      points.push({ t, ...minute.point });
      for (const [colo, h] of minute.byColo) {
        let hour = coloHours.get(colo);
        if (!hour) coloHours.set(colo, (hour = new LatencyHistogram()));
        hour.addSparse(h);
      }
    }
    const hour = new LatencyHistogram();
    const byColo: Record<string, LatencySummary> = {};
    for (const [colo, h] of coloHours) {
      byColo[colo] = h.summary();
      hour.merge(h);
    }
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
      latency: { ...hour.summary(), byColo },
      history: points,
    };
    if (account === null) {
      return {
        ...common,
        capacity: report?.capacity ?? null,
        wire: report && Array.isArray(report.nodes) ? wireView(report) : null,
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
      wire: null,
      queue: own.reduce((n, m) => n + m.queued, 0),
      inflight: null,
      warmModels,
      warmModelCount: warmModels.length,
      rttMs: Object.fromEntries(Object.entries(regionRtts).filter(([colo]) => myColos.has(colo))),
    };
  });
  return { generatedAt: now, scope: account === null ? "operator" : "account", stale, redis: state.redis, regions };
}

const RegionsViewSchema = z.object({
  generatedAt: z.number(),
  scope: z.enum(["account", "operator"]),
  stale: z.boolean(),
  redis: z.enum(["ok", "unreachable", "not_configured"]),
  regions: z.array(z.object({ name: z.string(), health: z.enum(["healthy", "unhealthy", "stale", "unknown"]) }).loose()),
});

export function registerV1Regions(app: MeshApp): void {
  app.openapi(
    meshRoute({
      method: "get",
      path: "/v1/regions",
      tag: "Regions",
      auth: "infer",
      summary: "Per region: health, warm models and the latency callers got (a key: its own account's; the admin token: everyone's)",
      description:
        "With an API key, the account's own view (`scope: account`): its own warm models, the latency of its own calls per colo, its own queued calls; " +
        "nothing counted over every account (`capacity` and `inflight` are null). With the operator's admin token, the global view (`scope: operator`).",
      responses: { 200: { description: "See edge/regions-view.ts for every field.", schema: RegionsViewSchema } },
    }),
    // Its own authentication: the admin token or a key (requireKey takes only keys).
    async (c) => {
      const token = bearer(c.req.header("authorization"));
      if (!token) throw new MeshError("unauthorized", "missing API key: send 'Authorization: Bearer <key>'");
      if (await isAdminToken(c, token)) return c.json(await buildView(c, null));
      const { key, limit, remaining } = await authorize(c, token, "infer");
      c.header("x-ratelimit-limit", String(limit));
      c.header("x-ratelimit-remaining", String(remaining));
      return c.json(await buildView(c, key.accountId));
    },
  );
  // The page itself holds no data; it asks /v1/regions with the key the person gives it.
  registerPage(app, "status", { path: "/status", tag: "Regions", summary: "The status page (asks /v1/regions with a key the reader types in; never from the URL)" });
}
