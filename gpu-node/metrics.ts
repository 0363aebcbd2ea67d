// The node agent's Prometheus metrics (prom-client), in a registry of its own, and the small
// HTTP(S) listener that serves them (GET /metrics, bearer METRICS_TOKEN; NODE_METRICS_PORT turns
// it on, NODE_METRICS_HOST and NODE_METRICS_TLS_CERT/KEY say where and how: config.ts). Calls,
// errors by code, per-model latency (queue, compute, total), loads and their durations, load
// failures, unloads, warm models and their measured memory, streams, tokens, and the default
// process metrics (process_resident_memory_bytes is the node's RSS). What the agent already
// counts is read at scrape time; outcomes are recorded as they happen. Per-model series exist
// only for the models the node holds; they leave with the model.

import { createServer, type RequestListener, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import { ERROR_STATUS, MeshError, errorBody, type ErrorCode } from "../protocol/errors.js";
import type { WarmModel } from "../protocol/messages.js";
import { ModelLabels, refuseMetrics } from "../protocol/metrics-endpoint.js";
import type { MetricsListener } from "./config.js";

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const MIB = 2 ** 20;

/** What the agent knows that the metrics read at each scrape. */
export interface NodeMetricsSource {
  warm(): WarmModel[];
  inflight(): number;
  queued(): number;
  /** Calls started since the node started. */
  runs(): number;
  streamsActive(): number;
  tokens(): number;
}

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly models: ModelLabels;
  private readonly calls: Counter;
  private readonly errors: Counter<"code">;
  private readonly latency: Histogram<"model" | "phase">;
  private readonly loads: Counter;
  private readonly loadFailures: Counter;
  private readonly loadSeconds: Histogram<"phase">;
  private readonly unloads: Counter<"reason">;
  private readonly streamsStarted: Counter;
  private readonly modelMemory: Gauge<"model">;

  constructor(
    nodeId: string,
    private readonly source: NodeMetricsSource,
  ) {
    const registry = this.registry;
    registry.setDefaultLabels({ node: nodeId });
    collectDefaultMetrics({ register: registry });
    const registers = [registry];
    this.calls = new Counter({ name: "mesh_node_calls_total", help: "Calls answered (result or error frame).", registers });
    this.errors = new Counter({ name: "mesh_node_errors_total", help: "Calls answered with an error, by error code.", labelNames: ["code"], registers });
    this.latency = new Histogram({
      name: "mesh_node_latency_seconds",
      help: "Served calls per model: waiting for a session run (queue: batch window, busy workers), session time (compute), and total on the node.",
      labelNames: ["model", "phase"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.loads = new Counter({ name: "mesh_node_loads_total", help: "Model loads that succeeded.", registers });
    this.loadFailures = new Counter({ name: "mesh_node_load_failures_total", help: "Model loads that failed (download, verification, memory, session).", registers });
    this.loadSeconds = new Histogram({ name: "mesh_node_load_seconds", help: "Successful loads: download (0 from the disk cache) and session creation.", labelNames: ["phase"], buckets: LATENCY_BUCKETS, registers });
    this.unloads = new Counter({ name: "mesh_node_unloads_total", help: "Models that left the node: unloaded by the router (eviction, idle) or lost (session died).", labelNames: ["reason"], registers });
    this.streamsStarted = new Counter({ name: "mesh_node_streams_started_total", help: "Generations started.", registers });
    this.modelMemory = new Gauge({ name: "mesh_node_model_memory_bytes", help: "Measured memory of each model held.", labelNames: ["model"], registers });
    this.models = new ModelLabels((model) => {
      this.modelMemory.remove({ model });
      for (const phase of ["queue", "compute", "total"]) this.latency.remove({ model, phase });
    });
    const g = (name: string, help: string, read: () => number) =>
      new Gauge({ name, help, registers, collect() { this.set(read()); } });
    const c = (name: string, help: string, read: () => number) =>
      new Counter({ name, help, registers, collect() { this.reset(); this.inc(Math.max(0, read())); } });
    g("mesh_node_warm_models", "Models held loaded.", () => source.warm().length);
    g("mesh_node_inflight", "Calls running or waiting on the node.", () => source.inflight());
    g("mesh_node_queued", "Calls waiting in a batch window.", () => source.queued());
    g("mesh_node_streams_active", "Generations running.", () => source.streamsActive());
    c("mesh_node_runs_total", "Calls started (what the router's execution counts read).", () => source.runs());
    c("mesh_node_tokens_generated_total", "Tokens generated.", () => source.tokens());
  }

  served(model: string, totalMs: number, computeMs: number): void {
    this.calls.inc();
    const m = this.models.label(model);
    this.latency.observe({ model: m, phase: "queue" }, Math.max(0, totalMs - computeMs) / 1000);
    this.latency.observe({ model: m, phase: "compute" }, computeMs / 1000);
    this.latency.observe({ model: m, phase: "total" }, totalMs / 1000);
  }

  failed(code: ErrorCode): void {
    this.calls.inc();
    this.errors.inc({ code });
  }

  loaded(downloadMs: number, loadMs: number): void {
    this.loads.inc();
    this.loadSeconds.observe({ phase: "download" }, downloadMs / 1000);
    this.loadSeconds.observe({ phase: "session" }, loadMs / 1000);
  }

  loadFailed(): void {
    this.loadFailures.inc();
  }

  unloaded(reason: "router" | "lost"): void {
    this.unloads.inc({ reason });
  }

  streamStarted(): void {
    this.streamsStarted.inc();
  }

  /** The exposition text, per-model series first brought in line with what the node holds. */
  async expose(): Promise<string> {
    const warm = this.source.warm();
    this.models.prune(new Set(warm.map((w) => w.key)));
    this.modelMemory.reset();
    for (const w of warm) this.modelMemory.inc({ model: this.models.label(w.key) }, w.memoryMb * MIB);
    return this.registry.metrics();
  }
}

/** Serves GET /metrics on its own port (token-checked); everything else is a 404 envelope. */
export async function serveMetrics(metrics: NodeMetrics, listen: MetricsListener): Promise<{ url: string; close(): Promise<void> }> {
  const handler: RequestListener = (req, res) => {
    const answer = (status: number, body: string, headers: Record<string, string>) => {
      // Nothing is read from a request: its body (if any) is dropped with the connection.
      res.writeHead(status, { ...headers, "content-length": String(Buffer.byteLength(body)), ...(req.readableEnded ? {} : { connection: "close" }) });
      res.end(body);
    };
    const path = (req.url ?? "").split("?")[0] ?? "";
    const refusal =
      req.method === "GET" && path === "/metrics"
        ? refuseMetrics(req.headers.authorization, listen.token)
        : Promise.resolve(new MeshError("not_found", `no route for ${req.method ?? "?"} ${path.slice(0, 100)}`));
    refusal
      .then(async (refused) => {
        if (refused) {
          answer(ERROR_STATUS[refused.code], JSON.stringify(errorBody(refused.code, refused.message, "-")), { "content-type": "application/json", ...refused.headers });
          return;
        }
        answer(200, await metrics.expose(), { "content-type": metrics.registry.contentType });
      })
      .catch((err: Error) => answer(500, JSON.stringify(errorBody("internal_error", `metrics failed: ${err.message}`, "-")), { "content-type": "application/json" }));
  };
  const server: Server = listen.tls ? createHttpsServer({ cert: listen.tls.cert, key: listen.tls.key }, handler) : createServer(handler);
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${listen.tls ? "https" : "http"}://${listen.host.includes(":") ? `[${listen.host}]` : listen.host}:${port}/metrics`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
