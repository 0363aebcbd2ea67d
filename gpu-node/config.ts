// The node agent's configuration, from the environment, validated once; main.ts prints it.

import { readFileSync } from "node:fs";
import { availableParallelism, hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { plaintextAllowed } from "../protocol/plaintext.js";

export type ProviderChoice = "auto" | "cpu" | "cuda";

export interface NodeConfig {
  nodeId: string;
  /** ws(s)://router/v1/nodes; ws:// only to a loopback router or with MESH_LOCAL=1. */
  routerUrl: string;
  /**
   * MESH_CA_FILE: a PEM CA (bundle) trusted besides the public CAs, for the router's wss://
   * certificate and https artifact downloads; null: public CAs only.
   */
  ca: { file: string; pem: string } | null;
  /** MESH_LOCAL=1: part of a one-machine mesh (ws:// allowed to any address). */
  localMode: boolean;
  nodeToken: string;
  cacheDir: string;
  /** Disk bytes the model cache may hold (MODEL_CACHE_BYTES); null: what is cached at start plus 80% of the disk's free space. */
  modelCacheBytes: number | null;
  /** Memory the node may fill with models; read from the GPU when there is one. */
  memoryBudgetMb: number | null;
  /** Most memory one model's session may take (measured, at load and while running); null: the budget. */
  modelMemoryLimitMb: number | null;
  /** A load (session creation) that takes longer is killed and fails. */
  loadTimeoutMs: number;
  /** Session child processes per loaded model (calls of one model run in parallel up to this). */
  workersPerModel: number;
  /** onnxruntime intra-op threads in each child; default: the cores shared by the workers of a model. */
  threadsPerWorker: number;
  executionProvider: ProviderChoice;
  heartbeatMs: number;
  /** Calls run at once; the router never sends more. */
  slots: number;
  /** Generations (streams) run at once, besides the call slots; the router never sends more. */
  streamSlots: number;
  /** Models held at once: 1 pins one model to the GPU at a time (0 = memory decides). */
  maxModels: number;
  /** Dynamic batching window and cap (rows); maxBatch 1 turns batching off. */
  batchWindowMs: number;
  batchMax: number;
  /** Frame encoding on the router socket: msgpack (default) or json (benchmarks only). */
  framing: "msgpack" | "json";
  /** Local mode only: extra time added to every model load, to simulate big models. */
  simulatedLoadMs: number;
  /** Local mode only: extra time per generated token, to simulate a bigger generative model. */
  simulatedTokenMs: number;
  /** Reconnect back-off bounds. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  drainTimeoutMs: number;
  /**
   * The metrics listener (GET /metrics): NODE_METRICS_PORT unset or empty = off, 0 = a free
   * port (logged), else that port; on NODE_METRICS_HOST (default 127.0.0.1). It needs
   * METRICS_TOKEN, the bearer token a scrape must present.
   */
  metrics: { host: string; port: number; token: string } | null;
}

export class ConfigError extends Error {}

/** A byte count: an integer, optionally with a binary unit (K, M, G, T; KiB ... TiB). */
function bytes(env: NodeJS.ProcessEnv, name: string, min: number): number | null {
  const raw = env[name];
  if (raw === undefined || raw === "") return null;
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGT])(?:i?B)?)?$/i.exec(raw.trim());
  const n = m ? Math.floor(Number(m[1]) * 1024 ** (m[2] ? "KMGT".indexOf(m[2].toUpperCase()) + 1 : 0)) : NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new ConfigError(`${name} must be a byte count >= ${min} such as 53687091200 or 50GiB (got '${raw}')`);
  return n;
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new ConfigError(`${name} must be an integer >= ${min} (got '${raw}')`);
  return n;
}

function metricsListener(env: NodeJS.ProcessEnv): NodeConfig["metrics"] {
  if (env.NODE_METRICS_PORT === undefined || env.NODE_METRICS_PORT === "") return null;
  const port = int(env, "NODE_METRICS_PORT", 0, 0);
  if (port > 65_535) throw new ConfigError("NODE_METRICS_PORT must be a port number (0: any free port)");
  const token = env.METRICS_TOKEN ?? "";
  if (token.length < 16) throw new ConfigError("NODE_METRICS_PORT needs METRICS_TOKEN (16+ characters): /metrics is never served without credentials");
  return { host: env.NODE_METRICS_HOST || "127.0.0.1", port, token };
}

function caFile(env: NodeJS.ProcessEnv): NodeConfig["ca"] {
  const file = env.MESH_CA_FILE ?? "";
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

export function nodeConfigFromEnv(env: NodeJS.ProcessEnv = process.env): NodeConfig {
  const routerUrl = env.ROUTER_URL ?? "";
  let parsed: URL | null = null;
  try {
    parsed = new URL(routerUrl);
  } catch {
    parsed = null;
  }
  if (!parsed || (parsed.protocol !== "ws:" && parsed.protocol !== "wss:")) throw new ConfigError("ROUTER_URL must be the router's ws:// or wss:// node socket URL");
  if (env.MESH_LOCAL !== undefined && env.MESH_LOCAL !== "" && env.MESH_LOCAL !== "0" && env.MESH_LOCAL !== "1") throw new ConfigError("MESH_LOCAL must be 0 or 1");
  const localMode = env.MESH_LOCAL === "1";
  if (parsed.protocol === "ws:" && !plaintextAllowed(parsed.hostname, localMode)) {
    throw new ConfigError(
      `ROUTER_URL must be wss:// for a router on ${parsed.hostname}: ws:// (no TLS) is for a router on this machine (loopback) or a one-machine mesh with MESH_LOCAL=1 (docs/deploy.md, TLS)`,
    );
  }
  const nodeToken = env.NODE_TOKEN ?? "";
  if (nodeToken.length < 16) throw new ConfigError("NODE_TOKEN must be set (16+ characters)");
  const ep = (env.MESH_EXECUTION_PROVIDER ?? "auto").toLowerCase();
  if (ep !== "auto" && ep !== "cpu" && ep !== "cuda") throw new ConfigError("MESH_EXECUTION_PROVIDER must be auto, cpu or cuda");
  const budget = env.MEMORY_BUDGET_MB ? int(env, "MEMORY_BUDGET_MB", 0, 1) : null;
  const workersPerModel = int(env, "NODE_WORKERS_PER_MODEL", 1, 1);
  return {
    nodeId: env.NODE_ID ?? `${hostname()}-${process.pid}`,
    routerUrl,
    ca: caFile(env),
    localMode,
    nodeToken,
    cacheDir: env.MODEL_CACHE_DIR ?? join(tmpdir(), "inference-mesh-cache"),
    modelCacheBytes: bytes(env, "MODEL_CACHE_BYTES", 1024 * 1024),
    memoryBudgetMb: budget,
    modelMemoryLimitMb: env.MODEL_MEMORY_LIMIT_MB ? int(env, "MODEL_MEMORY_LIMIT_MB", 0, 1) : null,
    loadTimeoutMs: int(env, "LOAD_TIMEOUT_MS", 120_000, 100),
    workersPerModel,
    threadsPerWorker: int(env, "NODE_THREADS_PER_WORKER", Math.max(1, Math.floor(availableParallelism() / workersPerModel)), 1),
    executionProvider: ep,
    heartbeatMs: int(env, "HEARTBEAT_MS", 1_000, 50),
    slots: int(env, "NODE_SLOTS", 8, 1),
    streamSlots: int(env, "NODE_STREAMS", 64, 0),
    maxModels: int(env, "MAX_MODELS", env.GPU_EXCLUSIVE === "1" ? 1 : 0, 0),
    batchWindowMs: int(env, "BATCH_WINDOW_MS", 0, 0),
    batchMax: int(env, "BATCH_MAX", 32, 1),
    framing: env.MESH_FRAMING === "json" ? "json" : "msgpack",
    simulatedLoadMs: int(env, "MESH_SIMULATED_LOAD_MS", 0, 0),
    simulatedTokenMs: int(env, "MESH_SIMULATED_TOKEN_MS", 0, 0),
    reconnectMinMs: int(env, "RECONNECT_MIN_MS", 250, 1),
    reconnectMaxMs: int(env, "RECONNECT_MAX_MS", 10_000, 1),
    drainTimeoutMs: int(env, "DRAIN_TIMEOUT_MS", 30_000, 0),
    metrics: metricsListener(env),
  };
}

export function printableConfig(c: NodeConfig): Record<string, unknown> {
  return { ...c, ca: c.ca?.file ?? null, nodeToken: "***", metrics: c.metrics ? { ...c.metrics, token: "***" } : null };
}
