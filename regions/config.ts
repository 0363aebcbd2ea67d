// The region router's configuration, read from the environment once and validated, with the
// defaults in one place; main.ts prints it (secrets masked) at start-up.

import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { plaintextAllowed } from "../protocol/plaintext.js";
import { readR2Presign, type R2PresignConfig } from "../protocol/presign.js";

export interface RouterConfig {
  region: string;
  host: string;
  port: number;
  /**
   * ROUTER_TLS_CERT and ROUTER_TLS_KEY (PEM files, read once at start; a renewed certificate
   * needs a restart): the port serves HTTPS and WSS. Null: plain HTTP, which is refused at
   * start unless HOST is a loopback address or MESH_LOCAL=1 (protocol/plaintext.ts).
   */
  tls: RouterTls | null;
  /** MESH_LOCAL=1: part of a one-machine mesh (plain HTTP allowed on any address). */
  localMode: boolean;
  /** This region's own secret (the edge holds one per region): verifies the edge's signed calls and grants, signs this region's keep-warm artifact URLs. */
  meshSecret: string;
  /** During a rotation, the secret being replaced: still accepted, and still used for the URLs this router signs until the edge knows the new one. */
  meshSecretPrevious: string | null;
  /** Nodes present this at connect. */
  nodeToken: string;
  redis: { url: string; token: string } | null;
  /** How often the region report goes to Redis. */
  reportIntervalMs: number;
  /** Calls waiting or running in the region past this are refused with no_capacity. */
  maxInflight: number;
  /** A node that does not answer a ping within this is taken out of rotation. */
  pingIntervalMs: number;
  /** Time to finish in-flight calls on SIGTERM. */
  drainTimeoutMs: number;
  maxQueuePerModel: number;
  /** Bytes of queued inputs the region holds at most (a model's queue: a quarter); past it, no_capacity. */
  maxQueuedBytes: number;
  /** A model with no call for this long drops to its keep-warm floor. */
  idleTtlMs: number;
  warmIntervalMs: number;
  /** How often keep-warm policies are read from Redis. */
  policyIntervalMs: number;
  /** Largest node frame accepted; larger ones close the socket with 1009. */
  maxFrameBytes: number;
  /** A stream whose reader takes no token for this long is cancelled. */
  streamStallTimeoutMs: number;
  /** Streams one edge stream socket may hold open at once. */
  maxStreamsPerSocket: number;
  /** A stalled stream is cancelled after this instead while other accounts wait for a slot. */
  streamStallWhenContendedMs: number;
  /** Per-account shares of slots and of MAX_INFLIGHT while accounts contend (fairness.ts). */
  fairShare: boolean;
  /** Account id -> weight in those shares (absent: 1). */
  accountWeights: Record<string, number>;
  /** Bearer token GET /metrics requires (METRICS_TOKEN); null: /metrics is off (404). */
  metricsToken: string | null;
  /**
   * R2_S3_ENDPOINT, R2_BUCKET, R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY (the edge's R2 API token,
   * read-only is enough): keep-warm loads get presigned R2 URLs like the edge's calls do. Null:
   * this router signs edge URLs with its region secret (the edge serves both kinds).
   */
  r2: R2PresignConfig | null;
}

export interface RouterTls {
  certFile: string;
  keyFile: string;
  /** PEM: the certificate chain (leaf first) and its private key. */
  cert: string;
  key: string;
}

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
} as const;

export class ConfigError extends Error {}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min} (got '${raw}')`);
  return n;
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if (raw !== "0" && raw !== "1") throw new ConfigError(`${name} must be 0 or 1 (got '${raw}')`);
  return raw === "1";
}

function weights(env: NodeJS.ProcessEnv, name: string): Record<string, number> {
  const raw = env[name];
  if (raw === undefined || raw === "") return {};
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    v = null;
  }
  const ok =
    typeof v === "object" && v !== null && !Array.isArray(v) &&
    Object.values(v).every((w) => typeof w === "number" && Number.isFinite(w) && w > 0 && w <= 1000);
  if (!ok) throw new ConfigError(`${name} must be a JSON object of account id -> weight (a number above 0, at most 1000)`);
  return v as Record<string, number>;
}

function secret(env: NodeJS.ProcessEnv, name: string): string {
  const v = env[name];
  if (!v || v.length < 16) throw new ConfigError(`${name} must be set (16+ characters)`);
  return v;
}

function readPem(name: string, path: string, what: RegExp): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`${name}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!what.test(text)) throw new ConfigError(`${name}: ${path} is not a PEM file of the expected kind`);
  return text;
}

/** Both files or neither; the key must match the certificate (checked now, not at the first client). */
function routerTls(env: NodeJS.ProcessEnv, host: string, localMode: boolean): RouterTls | null {
  const certFile = env.ROUTER_TLS_CERT ?? "";
  const keyFile = env.ROUTER_TLS_KEY ?? "";
  if (!certFile && !keyFile) {
    if (!plaintextAllowed(host, localMode)) {
      throw new ConfigError(
        `ROUTER_TLS_CERT and ROUTER_TLS_KEY must be set: a router listening on ${host} serves HTTPS/WSS only ` +
          "(plain HTTP is for a router bound to loopback, or a one-machine mesh with MESH_LOCAL=1; docs/deploy.md, TLS)",
      );
    }
    return null;
  }
  if (!certFile || !keyFile) throw new ConfigError("ROUTER_TLS_CERT and ROUTER_TLS_KEY go together: set both PEM file paths, or neither");
  const cert = readPem("ROUTER_TLS_CERT", certFile, /-----BEGIN CERTIFICATE-----/);
  const key = readPem("ROUTER_TLS_KEY", keyFile, /-----BEGIN [A-Z ]*PRIVATE KEY-----/);
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError(`ROUTER_TLS_CERT/ROUTER_TLS_KEY: ${(err as Error).message} (does the key belong to the certificate?)`);
  }
  return { certFile, keyFile, cert, key };
}

export function routerConfigFromEnv(env: NodeJS.ProcessEnv = process.env): RouterConfig {
  const region = env.MESH_REGION ?? "";
  if (!/^[a-z0-9-]{1,32}$/.test(region)) throw new ConfigError("MESH_REGION must be a short lowercase name such as us-west");
  const host = env.HOST || ROUTER_DEFAULTS.host;
  const localMode = flag(env, "MESH_LOCAL", false);
  return {
    region,
    host,
    port: int(env, "PORT", ROUTER_DEFAULTS.port, 0),
    tls: routerTls(env, host, localMode),
    localMode,
    meshSecret: secret(env, "MESH_SECRET"),
    meshSecretPrevious: env.MESH_SECRET_PREVIOUS ? secret(env, "MESH_SECRET_PREVIOUS") : null,
    nodeToken: secret(env, "NODE_TOKEN"),
    redis: env.REDIS_URL && env.REDIS_TOKEN ? { url: env.REDIS_URL, token: env.REDIS_TOKEN } : null,
    reportIntervalMs: int(env, "REPORT_INTERVAL_MS", ROUTER_DEFAULTS.reportIntervalMs, 100),
    maxInflight: int(env, "MAX_INFLIGHT", ROUTER_DEFAULTS.maxInflight, 1),
    pingIntervalMs: int(env, "PING_INTERVAL_MS", ROUTER_DEFAULTS.pingIntervalMs, 100),
    drainTimeoutMs: int(env, "DRAIN_TIMEOUT_MS", ROUTER_DEFAULTS.drainTimeoutMs, 0),
    maxQueuePerModel: int(env, "MAX_QUEUE_PER_MODEL", ROUTER_DEFAULTS.maxQueuePerModel, 1),
    maxQueuedBytes: int(env, "MAX_QUEUED_BYTES", ROUTER_DEFAULTS.maxQueuedBytes, 1024),
    idleTtlMs: int(env, "IDLE_TTL_MS", ROUTER_DEFAULTS.idleTtlMs, 100),
    warmIntervalMs: int(env, "WARM_INTERVAL_MS", ROUTER_DEFAULTS.warmIntervalMs, 50),
    policyIntervalMs: int(env, "POLICY_INTERVAL_MS", ROUTER_DEFAULTS.policyIntervalMs, 100),
    maxFrameBytes: int(env, "MAX_FRAME_BYTES", ROUTER_DEFAULTS.maxFrameBytes, 1024),
    streamStallTimeoutMs: int(env, "STREAM_STALL_TIMEOUT_MS", ROUTER_DEFAULTS.streamStallTimeoutMs, 100),
    maxStreamsPerSocket: int(env, "MAX_STREAMS_PER_SOCKET", ROUTER_DEFAULTS.maxStreamsPerSocket, 1),
    streamStallWhenContendedMs: int(env, "STREAM_STALL_WHEN_CONTENDED_MS", ROUTER_DEFAULTS.streamStallWhenContendedMs, 100),
    fairShare: flag(env, "FAIR_SHARE", ROUTER_DEFAULTS.fairShare),
    accountWeights: weights(env, "ACCOUNT_WEIGHTS"),
    metricsToken: env.METRICS_TOKEN ? secret(env, "METRICS_TOKEN") : null,
    // Any origin may be the edge's local stand-in: a router cannot tell, and a wrong one only fails the node's download.
    r2: readR2Presign(env, () => true, (msg) => {
      throw new ConfigError(msg);
    }),
  };
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
