// The node agent's configuration, from the environment, validated once by one zod schema
// (NODE_FIELDS, through protocol/config-schema.ts); main.ts prints it. A new setting is one line
// in NODE_FIELDS.

import { readFileSync } from "node:fs";
import { availableParallelism, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { bytes, computed, ConfigError, configSchema, flag, int, oneOf, readConfig, secret, text, value, type ConfigOf, type EnvVars } from "../protocol/config-schema.js";
import { plaintextAllowed } from "../protocol/plaintext.js";
import { wireFeaturesSetting } from "../protocol/wire-version.js";
import { readTlsFiles, type TlsFiles } from "../runtime/tls-files.js";

export { ConfigError };

/** auto: CUDA when bundled and a GPU is found, else CPU; webgpu only when asked for (gpu-node/accelerator.ts). */
export type ProviderChoice = "auto" | "cpu" | "cuda" | "webgpu";

const LOCAL_MODE = flag("MESH_LOCAL", false);

/** Where and how GET /metrics is served (gpu-node/metrics.ts); null: no listener. */
export interface MetricsListener {
  host: string;
  port: number;
  token: string;
  /** HTTPS with these; null: plain HTTP (loopback, or MESH_LOCAL=1, only). */
  tls: TlsFiles | null;
}

function metricsListener(env: EnvVars): MetricsListener | null {
  const port = value(int("NODE_METRICS_PORT", null, 0), env);
  if (port === null) return null;
  if (port > 65_535) throw new ConfigError("NODE_METRICS_PORT must be a port number (0: any free port)");
  const token = typeof env.METRICS_TOKEN === "string" ? env.METRICS_TOKEN : "";
  if (token.length < 16) throw new ConfigError("NODE_METRICS_PORT needs METRICS_TOKEN (16+ characters): /metrics is never served without credentials");
  const host = (typeof env.NODE_METRICS_HOST === "string" && env.NODE_METRICS_HOST) || "127.0.0.1";
  const tls = readTlsFiles(env, "NODE_METRICS_TLS_CERT", "NODE_METRICS_TLS_KEY");
  // A scrape from another host carries the token over the network: not in clear.
  if (!tls && !plaintextAllowed(host, value(LOCAL_MODE, env))) {
    throw new ConfigError(
      `NODE_METRICS_TLS_CERT and NODE_METRICS_TLS_KEY must be set for metrics on ${host}: a scrape from another host carries METRICS_TOKEN, ` +
        "so /metrics off loopback is served over HTTPS only (or MESH_LOCAL=1 on a one-machine mesh; docs/observability.md)",
    );
  }
  return { host, port, token, tls };
}

const WORKERS_PER_MODEL = int("NODE_WORKERS_PER_MODEL", 1, 1);

/** ROUTER_URL: ws(s)://router/v1/nodes; ws:// only to a loopback router or with MESH_LOCAL=1. */
function routerUrl(env: EnvVars): string {
  const raw = typeof env.ROUTER_URL === "string" ? env.ROUTER_URL : "";
  let parsed: URL | null = null;
  try {
    parsed = new URL(raw);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== "ws:" && parsed.protocol !== "wss:")) throw new ConfigError("ROUTER_URL must be the router's ws:// or wss:// node socket URL");
  if (parsed.protocol === "ws:" && !plaintextAllowed(parsed.hostname, value(LOCAL_MODE, env))) {
    throw new ConfigError(
      `ROUTER_URL must be wss:// for a router on ${parsed.hostname}: ws:// (no TLS) is for a router on this machine (loopback) or a one-machine mesh with MESH_LOCAL=1 (docs/deploy.md, TLS)`,
    );
  }
  return raw;
}

function caFile(env: EnvVars): { file: string; pem: string } | null {
  const file = typeof env.MESH_CA_FILE === "string" ? env.MESH_CA_FILE : "";
  if (!file) return null;
  let pem: string;
  try {
    pem = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(`MESH_CA_FILE: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) throw new ConfigError(`MESH_CA_FILE: ${file} holds no PEM certificate`);
  return { file, pem };
}

const NODE_FIELDS = {
  nodeId: computed((env) => (typeof env.NODE_ID === "string" && env.NODE_ID ? env.NODE_ID : `${hostname()}-${process.pid}`)),
  /** ws(s)://router/v1/nodes; ws:// only to a loopback router or with MESH_LOCAL=1. */
  routerUrl: computed(routerUrl),
  /**
   * MESH_CA_FILE: a PEM CA (bundle) trusted besides the public CAs, for the router's wss://
   * certificate and https artifact downloads; null: public CAs only.
   */
  ca: computed(caFile),
  /** MESH_LOCAL=1: part of a one-machine mesh (ws:// allowed to any address). */
  localMode: LOCAL_MODE,
  nodeToken: secret("NODE_TOKEN"),
  cacheDir: text("MODEL_CACHE_DIR", join(tmpdir(), "inference-mesh-cache")),
  /** Disk bytes the model cache may hold (MODEL_CACHE_BYTES); null: what is cached at start plus 80% of the disk's free space. */
  modelCacheBytes: bytes("MODEL_CACHE_BYTES", 1024 * 1024),
  /** Memory the node may fill with models; read from the GPU when there is one. */
  memoryBudgetMb: int("MEMORY_BUDGET_MB", null, 1),
  /** Most memory one model's session may take (measured, at load and while running); null: the budget. */
  modelMemoryLimitMb: int("MODEL_MEMORY_LIMIT_MB", null, 1),
  /** A load (session creation) that takes longer is killed and fails. */
  loadTimeoutMs: int("LOAD_TIMEOUT_MS", 120_000, 100),
  /** Session child processes per loaded model (calls of one model run in parallel up to this). */
  workersPerModel: WORKERS_PER_MODEL,
  /** onnxruntime intra-op threads in each child; default: the cores shared by the workers of a model. */
  threadsPerWorker: computed((env) =>
    value(int("NODE_THREADS_PER_WORKER", Math.max(1, Math.floor(availableParallelism() / value(WORKERS_PER_MODEL, env))), 1), env),
  ),
  /**
   * onnxruntime's intra-op threads busy-wait for the next piece of work after each run (its
   * default) instead of sleeping. Between calls that spinning burns whole cores: a [64,1024]
   * matmul with 2 threads cost its child ~6 ms of CPU per call at one call every 5 ms, against
   * 0.4 ms without (docs/benchmarks.md), CPU that the agent, other models' children and, on a
   * shared host, the router then lack. Off by default; on trades that for a few tens of µs less
   * wake-up per run of a model that keeps its threads busy.
   */
  ortSpinning: flag("NODE_ORT_SPINNING", false),
  executionProvider: oneOf("MESH_EXECUTION_PROVIDER", ["auto", "cpu", "cuda", "webgpu"], "auto"),
  heartbeatMs: int("HEARTBEAT_MS", 1_000, 50),
  /** Calls run at once; the router never sends more. */
  slots: int("NODE_SLOTS", 8, 1),
  /** Generations (streams) run at once, besides the call slots; the router never sends more. */
  streamSlots: int("NODE_STREAMS", 64, 0),
  /** Models held at once: 1 pins one model to the GPU at a time (0 = memory decides). */
  maxModels: computed((env) => value(int("MAX_MODELS", env.GPU_EXCLUSIVE === "1" ? 1 : 0, 0), env)),
  /** Dynamic batching window and cap (rows); maxBatch 1 turns batching off. */
  batchWindowMs: int("BATCH_WINDOW_MS", 0, 0),
  batchMax: int("BATCH_MAX", 32, 1),
  /** MESH_WIRE_FEATURES: the wire features this node announces and takes (protocol/wire-version.ts; default all). */
  wireFeatures: wireFeaturesSetting,
  /** Frame encoding on the router socket: msgpack (default) or json (benchmarks only). */
  framing: computed((env): "msgpack" | "json" => (env.MESH_FRAMING === "json" ? "json" : "msgpack")),
  /** Local mode only: extra time added to every model load, to simulate big models. */
  simulatedLoadMs: int("MESH_SIMULATED_LOAD_MS", 0, 0),
  /** Local mode only: extra time per generated token, to simulate a bigger generative model. */
  simulatedTokenMs: int("MESH_SIMULATED_TOKEN_MS", 0, 0),
  /** Reconnect back-off bounds. */
  reconnectMinMs: int("RECONNECT_MIN_MS", 250, 1),
  reconnectMaxMs: int("RECONNECT_MAX_MS", 10_000, 1),
  drainTimeoutMs: int("DRAIN_TIMEOUT_MS", 30_000, 0),
  /**
   * The metrics listener (GET /metrics): NODE_METRICS_PORT unset or empty = off, 0 = a free
   * port (logged), else that port; on NODE_METRICS_HOST (default 127.0.0.1; 0.0.0.0 or the
   * host's address for a scraper on another host). It needs METRICS_TOKEN, the bearer token a
   * scrape must present, and off loopback NODE_METRICS_TLS_CERT/KEY (HTTPS), unless MESH_LOCAL=1.
   */
  metrics: computed(metricsListener),
};

/** The node's configuration: one field of NODE_FIELDS per setting. */
export type NodeConfig = ConfigOf<typeof NODE_FIELDS>;

const NodeConfigSchema = configSchema(NODE_FIELDS);

export function nodeConfigFromEnv(env: NodeJS.ProcessEnv = process.env): NodeConfig {
  return readConfig(NodeConfigSchema, env);
}

export function printableConfig(c: NodeConfig): Record<string, unknown> {
  return { ...c, ca: c.ca?.file ?? null, nodeToken: "***", metrics: c.metrics ? { ...c.metrics, token: "***", tls: c.metrics.tls ? { certFile: c.metrics.tls.certFile, keyFile: c.metrics.tls.keyFile } : null } : null };
}
