// The Worker's bindings and its configuration, validated once per isolate: a misconfigured
// deployment fails every call with one clear log line instead of failing oddly deep inside.

import { plaintextAllowed } from "../protocol/plaintext.js";
import { readR2Presign, type R2PresignConfig } from "../protocol/presign.js";

export interface Env {
  DB: D1Database;
  ARTIFACTS: R2Bucket;
  /** The static assets (wrangler.toml [assets]): the browser pages scripts/build-pages.ts built. */
  ASSETS: Fetcher;
  /** Operator token for POST /v1/accounts. */
  ADMIN_TOKEN: string;
  /**
   * JSON {"us-west": "<secret>", ...}: one secret per region, each shared with that region's
   * router only. Signs every call, stream request and artifact URL the edge sends that region.
   */
  REGION_SECRETS: string;
  /** During a rotation: JSON {"<region>": "<the secret being replaced>"}, still accepted on URLs. */
  REGION_SECRETS_PREVIOUS?: string;
  /** The edge's public origin (https://api.example.com): nodes download artifacts and tokenizers from it. Never taken from a request. */
  PUBLIC_ORIGIN: string;
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
  /** Default rate limit of an account (shared by all its keys): sustained requests per second, and the burst on top. */
  KEY_RATE_PER_SECOND?: string;
  KEY_RATE_BURST?: string;
  /** Failed authentications allowed per client address (per isolate): sustained per second, and at once. */
  AUTH_FAILURES_PER_SECOND?: string;
  AUTH_FAILURES_BURST?: string;
  /** Multipart uploads: the largest file (bytes, default 50 GiB) and how many an account may have open (default 8). */
  MAX_UPLOAD_BYTES?: string;
  MAX_OPEN_UPLOADS?: string;
  /**
   * R2's S3-compatible API, for presigned artifact URLs (nodes then download straight from R2):
   * the account endpoint (https://<account>.r2.cloudflarestorage.com), the bucket the ARTIFACTS
   * binding names, and an R2 API token's key pair (secrets; Object Read only is enough). All
   * four or none; none keeps the edge-served /internal/artifacts route. Local mode only: an
   * endpoint of PUBLIC_ORIGIN + "/r2" makes the edge the stand-in that serves those URLs.
   */
  R2_S3_ENDPOINT?: string;
  R2_BUCKET?: string;
  R2_ACCESS_KEY_ID?: string;
  R2_SECRET_ACCESS_KEY?: string;
}

export interface RegionConfig {
  name: string;
  url: string;
  lat: number;
  lon: number;
}

export interface RegionSecrets {
  /** Signs what the edge sends the region; verifies URLs. */
  current: string;
  /** Verifies URLs during a rotation (URLs the region's router signed before it switched). */
  previous: string | null;
}

export interface EdgeConfig {
  adminToken: string;
  /** By region name; every region in `regions` has one, and no two regions share one. */
  regionSecrets: Record<string, RegionSecrets>;
  /** Origin of the artifact and tokenizer URLs handed to nodes. */
  publicOrigin: string;
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
  /** Presigned R2 URLs for artifacts (download-urls.ts); null: the region-signed edge route. */
  r2: R2PresignConfig | null;
}


export class ConfigError extends Error {}

let cached: { source: Env; config: EdgeConfig } | null = null;

export function loadConfig(env: Env): EdgeConfig {
  if (cached && cached.source === env) return cached.config;
  const fail = (msg: string): never => {
    throw new ConfigError(`edge configuration: ${msg}`);
  };
  if (!env.ADMIN_TOKEN || env.ADMIN_TOKEN.length < 16) fail("ADMIN_TOKEN must be set (16+ characters)");
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
    // The Worker verifies an https router's certificate (public CAs in production); plain http
    // would carry signed calls in clear, so only a router on this machine or a one-machine mesh may.
    if ((o.url as string).startsWith("http://") && !plaintextAllowed(new URL(o.url as string).hostname, env.MESH_LOCAL === "1")) {
      fail(`REGIONS[${i}].url must be https:// (http:// only for a router on this machine or with MESH_LOCAL=1)`);
    }
    const lat = Number(o.lat ?? 0);
    const lon = Number(o.lon ?? 0);
    return { name: o.name as string, url: (o.url as string).replace(/\/$/, ""), lat, lon };
  });
  const regionSecrets = readRegionSecrets(env, list, fail);
  let publicOrigin = "";
  try {
    const u = new URL(env.PUBLIC_ORIGIN ?? "");
    if ((u.protocol !== "https:" && u.protocol !== "http:") || u.origin !== env.PUBLIC_ORIGIN.replace(/\/$/, "")) throw new Error();
    publicOrigin = u.origin;
  } catch {
    fail("PUBLIC_ORIGIN must be the edge's public origin, like https://api.example.com (no path)");
  }
  const timeout = Number(env.INFER_TIMEOUT_MS ?? 30_000);
  if (!Number.isFinite(timeout) || timeout < 100) fail("INFER_TIMEOUT_MS must be a number of ms >= 100");
  const localMode = env.MESH_LOCAL === "1";
  let simulatedRtt: Record<string, Record<string, number>> = {};
  if (env.SIMULATED_RTT) {
    if (!localMode) fail("SIMULATED_RTT is for the one-machine local mode only (MESH_LOCAL=1): across real hosts the network's own delay is what the edge measures");
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
    regionSecrets,
    publicOrigin,
    regions: list,
    redis: env.REDIS_URL && env.REDIS_TOKEN ? { url: env.REDIS_URL, token: env.REDIS_TOKEN } : null,
    inferTimeoutMs: timeout,
    localMode,
    simulatedRtt,
    explorationShare,
    defaultRateLimit: { perSecond: ratePerSecond, burst: rateBurst },
    authFailureLimit: { perSecond: failPerSecond, burst: failBurst },
    // The stand-in is for local mode only: in production the bytes must not go through the Worker.
    r2: readR2Presign(env, (origin) => localMode && origin === publicOrigin, fail),
  };
  cached = { source: env, config };
  return config;
}

function secretMap(raw: string | undefined, name: string, fail: (msg: string) => never): Record<string, string> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw ?? "");
  } catch {
    fail(`${name} must be JSON like {"us-west": "<secret>", "ap-seoul": "<secret>"}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) fail(`${name} must be a JSON object of region name to secret`);
  return parsed as Record<string, string>;
}

/** Every region has its own secret (16+ characters), no secret serves two regions, and no secret names an unknown region. */
function readRegionSecrets(env: Env, regions: RegionConfig[], fail: (msg: string) => never): Record<string, RegionSecrets> {
  const current = secretMap(env.REGION_SECRETS, "REGION_SECRETS", fail);
  const previous = env.REGION_SECRETS_PREVIOUS ? secretMap(env.REGION_SECRETS_PREVIOUS, "REGION_SECRETS_PREVIOUS", fail) : {};
  const names = new Set(regions.map((r) => r.name));
  for (const [map, name] of [[current, "REGION_SECRETS"], [previous, "REGION_SECRETS_PREVIOUS"]] as const) {
    for (const [region, secret] of Object.entries(map)) {
      if (!names.has(region)) fail(`${name} names region '${region}', which is not in REGIONS`);
      if (typeof secret !== "string" || secret.length < 16) fail(`${name}['${region}'] must be a secret of 16+ characters`);
    }
  }
  const out: Record<string, RegionSecrets> = {};
  const owner = new Map<string, string>();
  for (const r of regions) {
    const secret = current[r.name];
    if (!secret) fail(`REGION_SECRETS has no secret for region '${r.name}'`);
    // One secret for two regions would let either sign for the other: the point of per-region secrets.
    for (const s of [secret!, previous[r.name]]) {
      if (!s) continue;
      const other = owner.get(s);
      if (other && other !== r.name) fail(`regions '${other}' and '${r.name}' share a secret; each region needs its own`);
      owner.set(s, r.name);
    }
    out[r.name] = { current: secret!, previous: previous[r.name] ?? null };
  }
  return out;
}

/** The secret the edge signs with for `region` (a configured region: loadConfig checked it has one). */
export function signingSecret(config: EdgeConfig, region: string): string {
  const s = config.regionSecrets[region];
  if (!s) throw new ConfigError(`edge configuration: no secret for region '${region}'`);
  return s.current;
}

/** The secrets a URL issued for `region` may be signed with (none for an unknown region). */
export function verifyingSecrets(config: EdgeConfig, region: string | null): string[] {
  const s = region !== null && Object.prototype.hasOwnProperty.call(config.regionSecrets, region) ? config.regionSecrets[region] : undefined;
  return s ? (s.previous ? [s.current, s.previous] : [s.current]) : [];
}
