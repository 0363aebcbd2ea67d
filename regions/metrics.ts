// The router's Prometheus metrics (prom-client), in a registry of its own (tests run several
// routers in one process): calls and errors by code, latency histograms per model and phase,
// queue depth, loads, evictions, warm replicas, node memory, nodes by wire version, streams and
// tokens, TCP connections accepted (idle ones closed between calls show as one per call), and
// the default process metrics. Counts the scheduler and the stream relay already keep are read at scrape
// time; what only the answer knows (a call's outcome and timing) is recorded as it happens.
// Per-model series exist only for models the region holds (warm, loading or queued on some
// node); node series only for connected nodes. Account ids are never labels.

import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { ErrorCode } from "../protocol/errors.js";
import { ModelLabels } from "../protocol/metrics-endpoint.js";
import type { Scheduler } from "./scheduler.js";
import type { StreamHub } from "./streams.js";

export type CallKind = "infer" | "stream";
export type Phase = "queue" | "load" | "infer" | "total";

/** Seconds: from a warm call's queue wait (~1 ms) to a cold load of a big model. */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
const MIB = 2 ** 20;

/** A counter whose value is a running count kept elsewhere, read at each scrape. */
function countFrom(registry: Registry, name: string, help: string, read: () => number): Counter {
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(Math.max(0, read()));
    },
  });
}

export class RouterMetrics {
  readonly registry = new Registry();
  private readonly models: ModelLabels;
  private readonly calls: Counter<"kind">;
  private readonly errors: Counter<"kind" | "code">;
  private readonly latency: Histogram<"model" | "phase">;
  private readonly streamsStarted: Counter;
  private readonly tlsFailures: Counter;
  private readonly connections: Counter;
  private readonly connectionsOpen: Gauge;
  private readonly queueDepth: Gauge<"model">;
  private readonly warmReplicas: Gauge<"model">;

  constructor(region: string, private readonly scheduler: Scheduler, hub: StreamHub) {
    const registry = this.registry;
    registry.setDefaultLabels({ region });
    collectDefaultMetrics({ register: registry });
    this.calls = new Counter({ name: "mesh_router_calls_total", help: "Calls answered (infer) and streams ended (stream), whatever the outcome.", labelNames: ["kind"], registers: [registry] });
    this.errors = new Counter({ name: "mesh_router_errors_total", help: "Calls and streams that ended in an error, by error code.", labelNames: ["kind", "code"], registers: [registry] });
    this.latency = new Histogram({
      name: "mesh_router_latency_seconds",
      help: "Served calls and streams per model: queue wait, load wait, run (infer; a stream's generation) and total time in the region.",
      labelNames: ["model", "phase"],
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    });
    this.tlsFailures = new Counter({
      name: "mesh_router_tls_handshake_failures_total",
      help: "TLS handshakes that failed (with ROUTER_TLS_CERT): most often a node or edge that does not trust this router's certificate.",
      registers: [registry],
    });
    this.connections = new Counter({
      name: "mesh_router_http_connections_total",
      help: "TCP connections the router's port accepted (edge calls and probes, node and stream sockets, scrapes): one per call means idle connections are being closed between calls.",
      registers: [registry],
    });
    this.connectionsOpen = new Gauge({ name: "mesh_router_http_connections_open", help: "TCP connections open on the router's port now.", registers: [registry] });
    this.streamsStarted = new Counter({ name: "mesh_router_streams_started_total", help: "Streams the edge opened here (accepted requests).", registers: [registry] });
    this.queueDepth = new Gauge({ name: "mesh_router_queue_depth", help: "Calls and streams waiting for a node, per model.", labelNames: ["model"], registers: [registry] });
    this.warmReplicas = new Gauge({ name: "mesh_router_warm_replicas", help: "Nodes holding the model warm.", labelNames: ["model"], registers: [registry] });
    const remove = (model: string) => {
      this.queueDepth.remove({ model });
      this.warmReplicas.remove({ model });
      for (const phase of ["queue", "load", "infer", "total"] satisfies Phase[]) this.latency.remove({ model, phase });
    };
    this.models = new ModelLabels(remove);

    const g = (name: string, help: string, read: () => number) =>
      new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
    g("mesh_router_queued", "Calls and streams waiting in the region.", () => scheduler.queued);
    g("mesh_router_inflight", "Calls and streams queued or running in the region.", () => scheduler.inflight);
    g("mesh_router_streams_active", "Streams placed on a node and not ended.", () => scheduler.streaming);
    countFrom(registry, "mesh_router_loads_total", "Model loads the router started.", () => scheduler.loads);
    countFrom(registry, "mesh_router_load_failures_total", "Model loads that failed.", () => scheduler.loadFailures);
    countFrom(registry, "mesh_router_evictions_total", "Models unloaded to make room for another.", () => scheduler.evictions);
    countFrom(registry, "mesh_router_idle_unloads_total", "Idle replicas the warm policy unloaded.", () => scheduler.idleUnloads);
    countFrom(registry, "mesh_router_tokens_relayed_total", "Generated tokens relayed to the edge.", () => hub.tokensRelayed);
    new Gauge({
      name: "mesh_router_nodes",
      help: "Nodes connected, and those of them taking work.",
      labelNames: ["state"],
      registers: [registry],
      collect() {
        const open = [...scheduler.nodes.values()].filter((n) => n.open);
        this.set({ state: "connected" }, open.length);
        this.set({ state: "available" }, open.filter((n) => n.available).length);
      },
    });
    new Gauge({
      name: "mesh_router_nodes_by_wire",
      help: "Connected nodes by the wire version and features each uses with this router (a rolling upgrade's progress; GET /v1/status names each node's announced range).",
      labelNames: ["version", "features"],
      registers: [registry],
      collect() {
        // Labels are what this router agreed to, so within its own range and feature names: bounded.
        this.reset();
        for (const n of scheduler.nodes.values()) {
          if (n.open) this.inc({ version: String(n.wire.version), features: [...n.wire.features].sort().join(",") || "none" });
        }
      },
    });
    new Gauge({
      name: "mesh_router_node_memory_bytes",
      help: "Each connected node's memory: its process RSS (from heartbeats) and its models' measured memory.",
      labelNames: ["node", "kind"],
      registers: [registry],
      collect() {
        this.reset(); // nodes that left leave the exposition
        for (const n of scheduler.nodes.values()) {
          if (!n.open) continue;
          if (n.mem) this.set({ node: n.id, kind: "rss" }, n.mem.rssMb * MIB);
          this.set({ node: n.id, kind: "models" }, [...n.warm.values()].reduce((s, w) => s + w.memoryMb, 0) * MIB);
        }
      },
    });
  }

  /** The port accepted a TCP connection (before any TLS handshake); counted open until it closes. */
  connectionAccepted(socket: { once(event: "close", listener: () => void): unknown }): void {
    this.connections.inc();
    this.connectionsOpen.inc();
    socket.once("close", () => this.connectionsOpen.dec());
  }

  tlsHandshakeFailed(): void {
    this.tlsFailures.inc();
  }

  /** A stream was accepted into the region (calls are counted at their answer). */
  streamStarted(): void {
    this.streamsStarted.inc();
  }

  /** A call or stream was served: its timing, per model. */
  served(kind: CallKind, model: string, t: { queueMs: number; loadMs: number; inferMs: number; totalMs: number }): void {
    this.calls.inc({ kind });
    const m = this.models.label(model);
    this.latency.observe({ model: m, phase: "queue" }, t.queueMs / 1000);
    this.latency.observe({ model: m, phase: "load" }, t.loadMs / 1000);
    this.latency.observe({ model: m, phase: "infer" }, t.inferMs / 1000);
    this.latency.observe({ model: m, phase: "total" }, t.totalMs / 1000);
  }

  /** A call or stream ended in an error (a stream cancelled by its caller is neither). */
  failed(kind: CallKind, code: ErrorCode): void {
    this.calls.inc({ kind });
    this.errors.inc({ kind, code });
  }

  /** The exposition text: per-model series first brought in line with what the region holds. */
  async expose(): Promise<string> {
    const held = new Set<string>();
    for (const n of this.scheduler.nodes.values()) {
      if (!n.open) continue;
      for (const k of n.warm.keys()) held.add(k);
      for (const k of n.loading.keys()) held.add(k);
    }
    for (const k of this.scheduler.knownModels()) if (this.scheduler.queueDepth(k) > 0) held.add(k);
    this.models.prune(held);
    this.queueDepth.reset();
    this.warmReplicas.reset();
    for (const k of held) {
      const m = this.models.label(k);
      this.queueDepth.inc({ model: m }, this.scheduler.queueDepth(k));
      this.warmReplicas.inc({ model: m }, [...this.scheduler.nodes.values()].filter((n) => n.open && n.warm.has(k)).length);
    }
    return this.registry.metrics();
  }
}
