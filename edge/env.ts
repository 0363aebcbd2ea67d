// The Worker's bindings and its configuration, validated once per isolate: a misconfigured
// deployment fails every call with one clear log line instead of failing oddly deep inside.

export interface Env {
  DB: D1Database;
  ARTIFACTS: R2Bucket;
  /** Operator token for POST /v1/accounts. */
  ADMIN_TOKEN: string;
  /** Shared with the region routers: signs edge -> region calls and artifact URLs. */
  MESH_SECRET: string;
  /** JSON array of regions: [{"name": "us-west", "url": "http://...", "lat": 37.3, "lon": -121.9}]. */
  REGIONS: string;
  /** Upstash REST endpoint (locally: our stand-in in front of redis-server). Optional. */
  REDIS_URL?: string;
  REDIS_TOKEN?: string;
  /** Default and maximum deadline for an inference call, ms. */
  INFER_TIMEOUT_MS?: string;
  /** "1" in local mode: callers may name their colo (x-mesh-colo) and SIMULATED_RTT applies. */
  MESH_LOCAL?: string;
  /** Local mode: JSON {"ICN": {"ap-seoul": 8, "us-west": 130}} round trips added as real delay. */
  SIMULATED_RTT?: string;
  /** Share of calls sent to the second-best region to keep its estimate fresh (0..0.5). */
  EXPLORATION_SHARE?: string;
  /** Default per-key rate limit: sustained requests per second, and the burst on top. */
  KEY_RATE_PER_SECOND?: string;
  KEY_RATE_BURST?: string;
  /** Failed authentications allowed per client address (per isolate): sustained per second, and at once. */
  AUTH_FAILURES_PER_SECOND?: string;
  AUTH_FAILURES_BURST?: string;
}

export interface RegionConfig {
  name: string;
  url: string;
  lat: number;
  lon: number;
}

export interface EdgeConfig {
  adminToken: string;
  meshSecret: string;
  regions: RegionConfig[];
  redis: { url: string; token: string } | null;
  inferTimeoutMs: number;
  localMode: boolean;
  simulatedRtt: Record<string, Record<string, number>>;
  explorationShare: number;
  /** Per-key rate limit for keys and accounts that set none. */
  defaultRateLimit: { perSecond: number; burst: number };
  /** Failed authentications per client address before 429 (middleware.ts). */
  authFailureLimit: { perSecond: number; burst: number };
}

export class ConfigError extends Error {}

let cached: { source: Env; config: EdgeConfig } | null = null;

export function loadConfig(env: Env): EdgeConfig {
  if (cached && cached.source === env) return cached.config;
  const fail = (msg: string): never => {
    throw new ConfigError(`edge configuration: ${msg}`);
  };
  if (!env.ADMIN_TOKEN || env.ADMIN_TOKEN.length < 16) fail("ADMIN_TOKEN must be set (16+ characters)");
  if (!env.MESH_SECRET || env.MESH_SECRET.length < 16) fail("MESH_SECRET must be set (16+ characters)");
  let regions: unknown;
  try {
    regions = JSON.parse(env.REGIONS ?? "");
  } catch {
    fail("REGIONS must be a JSON array of {name, url, lat, lon}");
  }
  if (!Array.isArray(regions) || regions.length === 0) fail("REGIONS must list at least one region");
  const list = (regions as unknown[]).map((r, i): RegionConfig => {
    const o = (r ?? {}) as Record<string, unknown>;
    if (typeof o.name !== "string" || !/^[a-z0-9-]{1,32}$/.test(o.name)) fail(`REGIONS[${i}].name must be a short lowercase name`);
    if (typeof o.url !== "string" || !/^https?:\/\//.test(o.url)) fail(`REGIONS[${i}].url must be an http(s) URL`);
    const lat = Number(o.lat ?? 0);
    const lon = Number(o.lon ?? 0);
    return { name: o.name as string, url: (o.url as string).replace(/\/$/, ""), lat, lon };
  });
  const timeout = Number(env.INFER_TIMEOUT_MS ?? 30_000);
  if (!Number.isFinite(timeout) || timeout < 100) fail("INFER_TIMEOUT_MS must be a number of ms >= 100");
  const localMode = env.MESH_LOCAL === "1";
  let simulatedRtt: Record<string, Record<string, number>> = {};
  if (env.SIMULATED_RTT) {
    if (!localMode) fail("SIMULATED_RTT is for local mode only (MESH_LOCAL=1)");
    try {
      simulatedRtt = JSON.parse(env.SIMULATED_RTT);
    } catch {
      fail("SIMULATED_RTT must be JSON like {\"ICN\": {\"ap-seoul\": 8}}");
    }
  }
  const explorationShare = Number(env.EXPLORATION_SHARE ?? 0.02);
  if (!(explorationShare >= 0 && explorationShare <= 0.5)) fail("EXPLORATION_SHARE must be between 0 and 0.5");
  const ratePerSecond = Number(env.KEY_RATE_PER_SECOND ?? 100);
  const rateBurst = Number(env.KEY_RATE_BURST ?? 200);
  if (!Number.isInteger(ratePerSecond) || ratePerSecond < 1) fail("KEY_RATE_PER_SECOND must be a whole number >= 1");
  if (!Number.isInteger(rateBurst) || rateBurst < 1) fail("KEY_RATE_BURST must be a whole number >= 1");
  const failPerSecond = Number(env.AUTH_FAILURES_PER_SECOND ?? 10);
  const failBurst = Number(env.AUTH_FAILURES_BURST ?? 200);
  if (!(failPerSecond > 0) || !Number.isInteger(failBurst) || failBurst < 1) fail("AUTH_FAILURES_PER_SECOND must be > 0 and AUTH_FAILURES_BURST a whole number >= 1");
  const config: EdgeConfig = {
    adminToken: env.ADMIN_TOKEN,
    meshSecret: env.MESH_SECRET,
    regions: list,
    redis: env.REDIS_URL && env.REDIS_TOKEN ? { url: env.REDIS_URL, token: env.REDIS_TOKEN } : null,
    inferTimeoutMs: timeout,
    localMode,
    simulatedRtt,
    explorationShare,
    defaultRateLimit: { perSecond: ratePerSecond, burst: rateBurst },
    authFailureLimit: { perSecond: failPerSecond, burst: failBurst },
  };
  cached = { source: env, config };
  return config;
}
