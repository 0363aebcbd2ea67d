// The Worker's bindings and its configuration, validated once per isolate: a misconfigured
// deployment fails every call with one clear log line instead of failing oddly deep inside.
// `Env` is what `wrangler types` generates from wrangler.toml and deploy/edge.env.example
// (edge/worker-configuration.d.ts; a test checks it is current); EDGE_FIELDS is the one zod
// schema that turns it into EdgeConfig (protocol/config-schema.ts), a setting per line.

import { z } from "zod";
import {
  computed,
  ConfigError,
  configSchema,
  int,
  json,
  num,
  readConfig,
  secret,
  value,
  type ConfigOf,
  type EnvVars,
} from "../protocol/config-schema.js";
import { plaintextAllowed } from "../protocol/plaintext.js";
import { readR2Presign } from "../protocol/presign.js";
import { wireFeaturesSetting } from "../protocol/wire-version.js";
import { DEFAULT_MAX_OPEN_UPLOADS, DEFAULT_MAX_UPLOAD_BYTES } from "./uploads.js";
import type { UsageWriteMode } from "./usage.js";

export { ConfigError };

/**
 * The bindings and variables (generated: `npx wrangler types`). Every variable may be unset at
 * run time whatever the generated type says (secrets and optional vars): EDGE_FIELDS decides.
 */
export type Env = Cloudflare.Env;

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

const PREFIX = "edge configuration: ";
const fail = (msg: string): never => {
  throw new ConfigError(msg);
};
const str = (env: EnvVars, name: string): string | undefined => (typeof env[name] === "string" && env[name] !== "" ? (env[name] as string) : undefined);

const localMode = (env: EnvVars) => env.MESH_LOCAL === "1";

const RegionSchema = z.object({
  name: z.string().regex(/^[a-z0-9-]{1,32}$/),
  url: z.string().regex(/^https?:\/\//),
  lat: z.unknown().optional(),
  lon: z.unknown().optional(),
});

/** REGIONS: JSON array of regions, [{"name": "us-west", "url": "http://...", "lat": 37.3, "lon": -121.9}]. */
function readRegions(env: EnvVars): RegionConfig[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(str(env, "REGIONS") ?? "");
  } catch {
    fail("REGIONS must be a JSON array of {name, url, lat, lon}");
  }
  if (!Array.isArray(parsed) || parsed.length === 0) fail("REGIONS must list at least one region");
  return (parsed as unknown[]).map((r, i): RegionConfig => {
    const got = RegionSchema.safeParse(r ?? {});
    if (!got.success) {
      fail(got.error.issues[0]?.path[0] === "name" ? `REGIONS[${i}].name must be a short lowercase name` : `REGIONS[${i}].url must be an http(s) URL`);
    }
    const o = got.data!;
    // The Worker verifies an https router's certificate (public CAs in production); plain http
    // would carry signed calls in clear, so only a router on this machine or a one-machine mesh may.
    if (o.url.startsWith("http://") && !plaintextAllowed(new URL(o.url).hostname, localMode(env))) {
      fail(`REGIONS[${i}].url must be https:// (http:// only for a router on this machine or with MESH_LOCAL=1)`);
    }
    return { name: o.name, url: o.url.replace(/\/$/, ""), lat: Number(o.lat ?? 0), lon: Number(o.lon ?? 0) };
  });
}

/** PUBLIC_ORIGIN: the edge's public origin (https://api.example.com); nodes download artifacts and tokenizers from it. Never taken from a request. */
function readPublicOrigin(env: EnvVars): string {
  const raw = str(env, "PUBLIC_ORIGIN") ?? "";
  try {
    const u = new URL(raw);
    if ((u.protocol === "https:" || u.protocol === "http:") && u.origin === raw.replace(/\/$/, "")) return u.origin;
  } catch {
    /* said below */
  }
  return fail("PUBLIC_ORIGIN must be the edge's public origin, like https://api.example.com (no path)");
}

const RttSchema = z.record(z.string(), z.record(z.string(), z.number()));

const EDGE_FIELDS = {
  /** Operator token for POST /v1/accounts (ADMIN_TOKEN). */
  adminToken: secret("ADMIN_TOKEN"),
  /** REGIONS. */
  regions: computed(readRegions),
  /**
   * REGION_SECRETS (JSON {"us-west": "<secret>", ...}: one per region, each shared with that
   * region's router only) and, during a rotation, REGION_SECRETS_PREVIOUS. By region name; every
   * region has one, and no two regions share one.
   */
  regionSecrets: computed((env) => readRegionSecrets(env, readRegions(env))),
  /** Origin of the artifact and tokenizer URLs handed to nodes (PUBLIC_ORIGIN). */
  publicOrigin: computed(readPublicOrigin),
  /** Upstash REST endpoint (locally: our stand-in in front of redis-server). Optional. */
  redis: computed((env): { url: string; token: string } | null => {
    const url = str(env, "REDIS_URL");
    const token = str(env, "REDIS_TOKEN");
    return url && token ? { url, token } : null;
  }),
  /** Default and maximum deadline for an inference call, ms. */
  inferTimeoutMs: num("INFER_TIMEOUT_MS", 30_000, 100, Number.MAX_SAFE_INTEGER, "INFER_TIMEOUT_MS must be a number of ms >= 100"),
  /**
   * An SSE reader that takes nothing for this long while the edge holds events for it ends, its
   * generation cancelled on the node (generations.ts); the same bound, and the same name, as a
   * router's for a stream whose reader gives no credit (what ends a stalled WebSocket reader).
   */
  streamStallTimeoutMs: int("STREAM_STALL_TIMEOUT_MS", 60_000, 100),
  /** MESH_LOCAL=1: callers may name their colo (x-mesh-colo) and SIMULATED_RTT applies. */
  localMode: computed(localMode),
  /** Local mode: JSON {"ICN": {"ap-seoul": 8, "us-west": 130}} round trips added as real delay. */
  simulatedRtt: computed((env) => {
    if (str(env, "SIMULATED_RTT") !== undefined && !localMode(env)) fail("SIMULATED_RTT is for the one-machine local mode only (MESH_LOCAL=1): across real hosts the network's own delay is what the edge measures");
    return value(json("SIMULATED_RTT", RttSchema, {}, 'SIMULATED_RTT must be JSON like {"ICN": {"ap-seoul": 8}}'), env);
  }),
  /** MESH_WIRE_FEATURES: the wire features the edge announces to regions and takes (protocol/wire-version.ts; default all). */
  wireFeatures: wireFeaturesSetting,
  /**
   * Local mode only, a bench's baseline (bench/usage-write.ts): USAGE_WRITE=drizzle writes usage
   * rows through drizzle's query builder on every flush, as before issue 14; otherwise "prepared".
   */
  usageWrite: computed((env): UsageWriteMode => {
    const v = str(env, "USAGE_WRITE");
    if (v === undefined || v === "prepared") return "prepared";
    if (v !== "drizzle") fail('USAGE_WRITE must be "prepared" or "drizzle"');
    if (!localMode(env)) fail("USAGE_WRITE is a bench baseline for the one-machine local mode only (MESH_LOCAL=1)");
    return "drizzle";
  }),
  /** Share of calls sent to the second-best region to keep its estimate fresh (0..0.5). */
  explorationShare: num("EXPLORATION_SHARE", 0.02, 0, 0.5, "EXPLORATION_SHARE must be between 0 and 0.5"),
  /** Default rate limit of an account (shared by all its keys): sustained requests per second, and the burst on top. */
  defaultRateLimit: computed((env) => ({
    perSecond: value(int("KEY_RATE_PER_SECOND", 100, 1), env),
    burst: value(int("KEY_RATE_BURST", 200, 1), env),
  })),
  /** Failed authentications allowed per client address (per isolate) before 429 (middleware.ts): sustained per second, and at once. */
  authFailureLimit: computed((env) => ({
    perSecond: value(num("AUTH_FAILURES_PER_SECOND", 10, Number.MIN_VALUE, Number.MAX_VALUE, "AUTH_FAILURES_PER_SECOND must be a number > 0"), env),
    burst: value(int("AUTH_FAILURES_BURST", 200, 1), env),
  })),
  /** Multipart uploads: the largest file (bytes, default 50 GiB) and how many an account may have open (default 8). */
  uploads: computed((env) => ({
    maxUploadBytes: value(int("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES, 1), env),
    maxOpenUploads: value(int("MAX_OPEN_UPLOADS", DEFAULT_MAX_OPEN_UPLOADS, 1), env),
  })),
  /**
   * R2's S3-compatible API, for presigned artifact URLs (download-urls.ts): R2_S3_ENDPOINT,
   * R2_BUCKET, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY, all four or none; null: the region-signed
   * edge route. Local mode only: an endpoint of PUBLIC_ORIGIN + "/r2" makes the edge the
   * stand-in that serves those URLs (in production the bytes must not go through the Worker).
   */
  r2: computed((env) =>
    readR2Presign(env as Record<string, string | undefined>, (origin) => localMode(env) && origin === readPublicOrigin(env), fail),
  ),
};

export type EdgeConfig = ConfigOf<typeof EDGE_FIELDS>;

const EdgeConfigSchema = configSchema(EDGE_FIELDS);

let cached: { source: Env; config: EdgeConfig } | null = null;

export function loadConfig(env: Env): EdgeConfig {
  if (cached && cached.source === env) return cached.config;
  const config = readConfig(EdgeConfigSchema, env as unknown as EnvVars, PREFIX);
  cached = { source: env, config };
  return config;
}

function secretMap(raw: string | undefined, name: string): Record<string, string> {
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
function readRegionSecrets(env: EnvVars, regions: RegionConfig[]): Record<string, RegionSecrets> {
  const current = secretMap(str(env, "REGION_SECRETS"), "REGION_SECRETS");
  const previousRaw = str(env, "REGION_SECRETS_PREVIOUS");
  const previous = previousRaw ? secretMap(previousRaw, "REGION_SECRETS_PREVIOUS") : {};
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
