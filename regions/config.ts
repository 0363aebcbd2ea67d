// The region router's configuration, read from the environment once and validated by one zod
// schema (ROUTER_FIELDS, through protocol/config-schema.ts), with the defaults in one place;
// main.ts prints it (secrets masked) at start-up. A new setting is one line in ROUTER_FIELDS.

import { z } from "zod";
import { wireFeaturesSetting } from "../protocol/wire-version.js";
import { computed, ConfigError, configSchema, flag, int, json, matching, readConfig, secret, text, value, type ConfigOf, type EnvVars } from "../protocol/config-schema.js";
import { plaintextAllowed } from "../protocol/plaintext.js";
import { readR2Presign, type R2PresignConfig } from "../protocol/presign.js";
import { readTlsFiles, type TlsFiles } from "../runtime/tls-files.js";

export { ConfigError };

export const ROUTER_DEFAULTS = {
  host: "127.0.0.1",
  port: 8701,
  reportIntervalMs: 1_000,
  maxInflight: 1_024,
  pingIntervalMs: 5_000,
  drainTimeoutMs: 30_000,
  maxQueuePerModel: 256,
  maxQueuedBytes: 512 * 1024 * 1024,
  idleTtlMs: 5 * 60_000,
  warmIntervalMs: 1_000,
  policyIntervalMs: 2_000,
  maxFrameBytes: 64 * 1024 * 1024,
  streamStallTimeoutMs: 60_000,
  maxStreamsPerSocket: 256,
  streamStallWhenContendedMs: 5_000,
  fairShare: true,
  keepAliveTimeoutMs: 120_000,
} as const;

export type RouterTls = TlsFiles;

const HOST = text("HOST", ROUTER_DEFAULTS.host);
const LOCAL_MODE = flag("MESH_LOCAL", false);

/** Both files or neither (runtime/tls-files.ts); neither is refused unless plain HTTP is allowed here. */
function routerTls(env: EnvVars): RouterTls | null {
  const host = value(HOST, env);
  const tls = readTlsFiles(env, "ROUTER_TLS_CERT", "ROUTER_TLS_KEY");
  if (!tls && !plaintextAllowed(host, value(LOCAL_MODE, env))) {
    throw new ConfigError(
      `ROUTER_TLS_CERT and ROUTER_TLS_KEY must be set: a router listening on ${host} serves HTTPS/WSS only ` +
        "(plain HTTP is for a router bound to loopback, or a one-machine mesh with MESH_LOCAL=1; docs/deploy.md, TLS)",
    );
  }
  return tls;
}

const ROUTER_FIELDS = {
  region: matching("MESH_REGION", /^[a-z0-9-]{1,32}$/, "MESH_REGION must be a short lowercase name such as us-west"),
  host: HOST,
  port: int("PORT", ROUTER_DEFAULTS.port, 0),
  /**
   * ROUTER_TLS_CERT and ROUTER_TLS_KEY (PEM files, read once at start; a renewed certificate
   * needs a restart): the port serves HTTPS and WSS. Null: plain HTTP, which is refused at
   * start unless HOST is a loopback address or MESH_LOCAL=1 (protocol/plaintext.ts).
   */
  tls: computed(routerTls),
  /** MESH_LOCAL=1: part of a one-machine mesh (plain HTTP allowed on any address). */
  localMode: LOCAL_MODE,
  /** This region's own secret (the edge holds one per region): verifies the edge's signed calls and grants, signs this region's keep-warm artifact URLs. */
  meshSecret: secret("MESH_SECRET"),
  /** During a rotation, the secret being replaced: still accepted, and still used for the URLs this router signs until the edge knows the new one. */
  meshSecretPrevious: secret("MESH_SECRET_PREVIOUS", true),
  /** Nodes present this at connect. */
  nodeToken: secret("NODE_TOKEN"),
  redis: computed((env): { url: string; token: string } | null =>
    typeof env.REDIS_URL === "string" && env.REDIS_URL && typeof env.REDIS_TOKEN === "string" && env.REDIS_TOKEN ? { url: env.REDIS_URL, token: env.REDIS_TOKEN } : null,
  ),
  /** How often the region report goes to Redis. */
  reportIntervalMs: int("REPORT_INTERVAL_MS", ROUTER_DEFAULTS.reportIntervalMs, 100),
  /** Calls waiting or running in the region past this are refused with no_capacity. */
  maxInflight: int("MAX_INFLIGHT", ROUTER_DEFAULTS.maxInflight, 1),
  /** A node that does not answer a ping within this is taken out of rotation. */
  pingIntervalMs: int("PING_INTERVAL_MS", ROUTER_DEFAULTS.pingIntervalMs, 100),
  /** Time to finish in-flight calls on SIGTERM. */
  drainTimeoutMs: int("DRAIN_TIMEOUT_MS", ROUTER_DEFAULTS.drainTimeoutMs, 0),
  maxQueuePerModel: int("MAX_QUEUE_PER_MODEL", ROUTER_DEFAULTS.maxQueuePerModel, 1),
  /** Bytes of queued inputs the region holds at most (a model's queue: a quarter); past it, no_capacity. */
  maxQueuedBytes: int("MAX_QUEUED_BYTES", ROUTER_DEFAULTS.maxQueuedBytes, 1024),
  /** A model with no call for this long drops to its keep-warm floor. */
  idleTtlMs: int("IDLE_TTL_MS", ROUTER_DEFAULTS.idleTtlMs, 100),
  warmIntervalMs: int("WARM_INTERVAL_MS", ROUTER_DEFAULTS.warmIntervalMs, 50),
  /** How often keep-warm policies are read from Redis. */
  policyIntervalMs: int("POLICY_INTERVAL_MS", ROUTER_DEFAULTS.policyIntervalMs, 100),
  /** MESH_WIRE_FEATURES: the wire features this router announces and takes (protocol/wire-version.ts; default all). */
  wireFeatures: wireFeaturesSetting,
  /** Largest node frame accepted; larger ones close the socket with 1009. */
  maxFrameBytes: int("MAX_FRAME_BYTES", ROUTER_DEFAULTS.maxFrameBytes, 1024),
  /** A stream whose reader takes no token for this long is cancelled. */
  streamStallTimeoutMs: int("STREAM_STALL_TIMEOUT_MS", ROUTER_DEFAULTS.streamStallTimeoutMs, 100),
  /** Streams one edge stream socket may hold open at once. */
  maxStreamsPerSocket: int("MAX_STREAMS_PER_SOCKET", ROUTER_DEFAULTS.maxStreamsPerSocket, 1),
  /** A stalled stream is cancelled after this instead while other accounts wait for a slot. */
  streamStallWhenContendedMs: int("STREAM_STALL_WHEN_CONTENDED_MS", ROUTER_DEFAULTS.streamStallWhenContendedMs, 100),
  /** Per-account shares of slots and of MAX_INFLIGHT while accounts contend (fairness.ts). */
  fairShare: flag("FAIR_SHARE", ROUTER_DEFAULTS.fairShare),
  /** Account id -> weight in those shares (absent: 1). */
  accountWeights: json(
    "ACCOUNT_WEIGHTS",
    z.record(z.string(), z.number().gt(0).max(1000)),
    {},
    "ACCOUNT_WEIGHTS must be a JSON object of account id -> weight (a number above 0, at most 1000)",
  ),
  /**
   * How long an idle HTTP connection (the edge's calls, probes, scrapes) stays open for its next
   * request. Node's own default is 5 s, after which a region called less often than that (a far
   * one, explored 2% of the time) paid a new TCP and TLS handshake, three round trips, on its
   * next call. Cloudflare keeps idle connections to an origin up to 900 s; 120 s covers the
   * rare caller without holding sockets for long. (headersTimeout stays Node's 60 s: since
   * Node 18 it runs only while a request's headers arrive, not on an idle connection; checked
   * on Node 20, where a connection idle 6 s under a 2 s headersTimeout answered its next call.)
   */
  keepAliveTimeoutMs: int("KEEP_ALIVE_TIMEOUT_MS", ROUTER_DEFAULTS.keepAliveTimeoutMs, 1_000),
  /** Bearer token GET /metrics requires (METRICS_TOKEN); null: /metrics is off (404). */
  metricsToken: secret("METRICS_TOKEN", true),
  /**
   * R2_S3_ENDPOINT, R2_BUCKET, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY (the edge's R2 API token,
   * read-only is enough): keep-warm loads get presigned R2 URLs like the edge's calls do. Null:
   * this router signs edge URLs with its region secret (the edge serves both kinds).
   */
  r2: computed((env): R2PresignConfig | null =>
    // Any origin may be the edge's local stand-in: a router cannot tell, and a wrong one only fails the node's download.
    readR2Presign(env as Record<string, string | undefined>, () => true, (msg) => {
      throw new ConfigError(msg);
    }),
  ),
};

/** The router's configuration: one field of ROUTER_FIELDS per setting. */
export type RouterConfig = ConfigOf<typeof ROUTER_FIELDS>;

const RouterConfigSchema = configSchema(ROUTER_FIELDS);

export function routerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): RouterConfig {
  return readConfig(RouterConfigSchema, env);
}

export function printableConfig(c: RouterConfig): Record<string, unknown> {
  return {
    ...c,
    tls: c.tls ? { certFile: c.tls.certFile, keyFile: c.tls.keyFile } : null,
    meshSecret: "***",
    meshSecretPrevious: c.meshSecretPrevious ? "***" : null,
    nodeToken: "***",
    metricsToken: c.metricsToken ? "***" : null,
    redis: c.redis ? { url: c.redis.url, token: "***" } : null,
    r2: c.r2 ? { endpoint: c.r2.endpoint.href, bucket: c.r2.bucket, accessKeyId: c.r2.credentials.accessKeyId, secretAccessKey: "***" } : null,
  };
}
