// The region's scheduler. Calls wait in a queue per model, each with its deadline, and are sent
// to a node that holds the model warm with a free slot (least in flight first). When none can
// take them, a load is planned on the node where the model fits best (evicting the least
// valuable idle models if needed), once per model per node. A call whose node dies before
// answering is retried once on another node (inference is idempotent); otherwise it fails with
// a clear 503 before its deadline. The warm policy runs every second: replicas follow predicted
// traffic and keep-warm floors, idle models are unloaded.

import { MeshError } from "../protocol/errors.js";
import type { ModelRef, RegionInferRequest, Timing } from "../protocol/messages.js";
import type { WireTensor } from "../protocol/tensor.js";
import { ModelStats } from "./model-stats.js";
import { NodeCallError, type NodeLink } from "./node-link.js";
import { estimateMemoryMb, pickWarm, planLoad, type NodeState } from "./placement.js";
import { desiredReplicas, WARM_POLICY_DEFAULTS, type ModelPolicy, type WarmPolicyConfig } from "./warm-policy.js";

export interface ScheduledResult {
  outputs: WireTensor[];
  node: string;
  timing: Timing;
}

export interface SchedulerConfig {
  /** Calls queued or running in the region past this are refused with 503. */
  maxInflight: number;
  /** Calls queued for one model past this are refused with 503. */
  maxQueuePerModel: number;
  warm: WarmPolicyConfig;
}

interface Queued {
  req: RegionInferRequest;
  arrivedAt: number;
  loadMs: number;
  attempts: number;
  exclude: Set<string>;
  timer: ReturnType<typeof setTimeout>;
  resolve: (r: ScheduledResult) => void;
  reject: (e: MeshError) => void;
}

export class Scheduler {
  readonly nodes = new Map<string, NodeLink>();
  readonly stats = new Map<string, ModelStats>();
  readonly policies = new Map<string, ModelPolicy & { ref?: ModelRef }>();
  private readonly queues = new Map<string, Queued[]>();
  /** The newest reference seen per model, so the warm policy can load without a call. */
  private readonly refs = new Map<string, ModelRef>();
  queued = 0;
  running = 0;
  served = 0;
  failed = 0;
  loads = 0;
  evictions = 0;
  /** EWMA of load durations: what the edge expects a cold start here to cost. */
  coldStartMs: number | null = null;
  private warmTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private readonly config: SchedulerConfig,
    private readonly log: (level: "info" | "warn", msg: string, extra?: Record<string, unknown>) => void = () => undefined,
  ) {}

  get inflight(): number {
    return this.queued + this.running;
  }

  start(intervalMs = 1_000): void {
    this.warmTimer = setInterval(() => this.warmTick(), intervalMs);
    this.warmTimer.unref();
  }

  stop(): void {
    if (this.warmTimer) clearInterval(this.warmTimer);
  }

  queueDepth(key: string): number {
    return this.queues.get(key)?.length ?? 0;
  }

  knownModels(): string[] {
    return [...new Set([...this.stats.keys(), ...this.policies.keys()])];
  }

  refFor(key: string): ModelRef | undefined {
    return this.refs.get(key) ?? this.policies.get(key)?.ref;
  }

  private statsFor(key: string): ModelStats {
    let s = this.stats.get(key);
    if (!s) {
      s = new ModelStats();
      this.stats.set(key, s);
    }
    return s;
  }

  submit(req: RegionInferRequest, arrivedAt: number): Promise<ScheduledResult> {
    const key = req.model.key;
    if (this.inflight >= this.config.maxInflight) {
      return Promise.reject(new MeshError("no_capacity", `region is saturated (${this.inflight} calls queued or running)`, { "retry-after": "1" }));
    }
    const queue = this.queues.get(key) ?? [];
    if (queue.length >= this.config.maxQueuePerModel) {
      return Promise.reject(new MeshError("no_capacity", `too many calls queued for this model (${queue.length})`, { "retry-after": "1" }));
    }
    this.queues.set(key, queue);
    this.refs.set(key, req.model);
    this.statsFor(key).arrival(Date.now());
    return new Promise<ScheduledResult>((resolve, reject) => {
      const item: Queued = {
        req,
        arrivedAt,
        loadMs: 0,
        attempts: 0,
        exclude: new Set(),
        resolve: (r) => {
          this.served++;
          resolve(r);
        },
        reject: (e) => {
          this.failed++;
          reject(e);
        },
        timer: setTimeout(() => {
          if (this.dequeue(key, item)) item.reject(new MeshError("deadline_exceeded", "the call waited in the queue past its deadline"));
        }, Math.max(1, req.deadline - Date.now())),
      };
      queue.push(item);
      this.queued++;
      this.pump(key);
    });
  }

  private dequeue(key: string, item: Queued): boolean {
    const q = this.queues.get(key);
    const i = q?.indexOf(item) ?? -1;
    if (!q || i < 0) return false;
    q.splice(i, 1);
    this.queued--;
    if (q.length === 0) this.queues.delete(key);
    return true;
  }

  /** Sends queued calls of `key` to warm nodes with free slots; plans a load when none can. */
  pump(key: string): void {
    const q = this.queues.get(key);
    while (q && q.length > 0) {
      const item = q[0]!;
      const node = pickWarm(this.nodes.values(), key, item.exclude) ?? pickWarm(this.nodes.values(), key);
      if (!node) break;
      this.dequeue(key, item);
      this.dispatch(item, node as NodeLink);
    }
    if (this.queues.get(key)?.length) this.ensureLoad(key);
  }

  /** Re-pumps every model with waiting calls: capacity freed somewhere. */
  pumpAll(): void {
    for (const key of [...this.queues.keys()]) this.pump(key);
  }

  private valueOf = (key: string): number => {
    const s = this.stats.get(key);
    return (s?.rate ?? 0) + this.queueDepth(key) * 10;
  };

  private protect = (node: NodeState, key: string): boolean => {
    const floor = this.policies.get(key)?.keepWarm ?? 0;
    if (floor === 0) return false;
    const replicas = [...this.nodes.values()].filter((n) => n.open && n.warm.has(key)).length;
    return replicas <= floor && node.warm.has(key);
  };

  private ensureLoad(key: string): void {
    const ref = this.refFor(key);
    if (!ref) return;
    const nodes = [...this.nodes.values()];
    // One load at a time per model is enough while calls queue; the warm policy adds replicas.
    if (nodes.some((n) => n.open && n.loading.has(key))) return;
    // A warm node that is merely busy will free a slot soon, unless the queue outgrows it.
    const warm = nodes.filter((n) => n.available && n.warm.has(key));
    if (warm.length > 0 && this.queueDepth(key) <= warm.reduce((s, n) => s + n.slots, 0)) return;
    this.startLoad(key, ref);
  }

  private startLoad(key: string, ref: ModelRef): boolean {
    const memoryMb = estimateMemoryMb(ref.size);
    const plan = planLoad(this.nodes.values(), key, memoryMb, this.valueOf, this.protect);
    if (!plan) return false;
    const node = plan.node as NodeLink;
    for (const victim of plan.evict) {
      node.unload(victim);
      this.evictions++;
      this.log("info", "evicted model to make room", { node: node.id, evicted: victim, for: key });
    }
    this.loads++;
    const started = performance.now();
    node.load(key, ref.artifactUrl, ref.sha256, ref.size, ref.signature, memoryMb).then(
      () => {
        const loadMs = performance.now() - started;
        this.coldStartMs = this.coldStartMs === null ? loadMs : this.coldStartMs + 0.3 * (loadMs - this.coldStartMs);
        this.log("info", "model warm", { node: node.id, key, loadMs: Math.round(loadMs) });
        // Calls that waited for this load carry its time in their Server-Timing.
        for (const item of this.queues.get(key) ?? []) item.loadMs = Math.max(item.loadMs, loadMs);
        this.pumpAll();
      },
      (err: NodeCallError) => {
        this.log("warn", "model load failed", { node: node.id, key, error: err.message });
        if (!err.retryable) {
          // The file itself does not load: fail the waiting calls now instead of at their deadline.
          for (const item of [...(this.queues.get(key) ?? [])]) {
            this.dequeue(key, item);
            clearTimeout(item.timer);
            item.reject(new MeshError("inference_failed", err.message));
          }
        }
        this.pumpAll();
      },
    );
    return true;
  }

  private dispatch(item: Queued, node: NodeLink): void {
    const { req } = item;
    const key = req.model.key;
    const remaining = req.deadline - Date.now();
    if (remaining <= 0) {
      clearTimeout(item.timer);
      item.reject(new MeshError("deadline_exceeded", "the call's deadline passed before it could run"));
      return;
    }
    this.running++;
    const dispatchedAt = performance.now();
    const queueMs = Math.max(0, dispatchedAt - item.arrivedAt - item.loadMs);
    node.infer(key, req.inputs, req.outputs, remaining).then(
      ({ outputs, inferMs }) => {
        this.running--;
        clearTimeout(item.timer);
        this.statsFor(key).completed(queueMs, inferMs);
        item.resolve({
          outputs,
          node: node.id,
          timing: { queueMs, loadMs: item.loadMs, inferMs, regionMs: performance.now() - item.arrivedAt },
        });
        this.pump(key);
      },
      (err: NodeCallError) => {
        this.running--;
        if (err.retryable && item.attempts === 0 && Date.now() < req.deadline) {
          // The node went away (or never had the model): nothing ran there; try another once.
          item.attempts++;
          item.exclude.add(node.id);
          const q = this.queues.get(key) ?? [];
          this.queues.set(key, q);
          q.unshift(item);
          this.queued++;
          this.pump(key);
          return;
        }
        clearTimeout(item.timer);
        if (err.retryable) {
          item.reject(new MeshError("no_capacity", `the call could not be completed: ${err.message}`, { "retry-after": "1" }));
        } else {
          item.reject(new MeshError(err.code, err.message));
        }
        this.pumpAll();
      },
    );
  }

  /** Nodes that joined or left: the placement of waiting calls may change. */
  nodesChanged(): void {
    this.pumpAll();
  }

  /** The warm policy: add replicas for predicted traffic and floors, unload what idles. */
  warmTick(now = Date.now()): void {
    const nodes = [...this.nodes.values()].filter((n) => n.available);
    if (nodes.length === 0) return;
    const slots = Math.max(1, Math.round(nodes.reduce((s, n) => s + n.slots, 0) / nodes.length));
    for (const key of this.knownModels()) {
      const stats = this.stats.get(key);
      stats?.tick(now);
      const policy = this.policies.get(key);
      const want = Math.min(nodes.length, desiredReplicas(stats?.view(), policy, slots, now, this.config.warm));
      const holding = nodes.filter((n) => n.warm.has(key));
      const loading = nodes.filter((n) => n.loading.has(key));
      const have = holding.length + loading.length;
      if (have < want) {
        const ref = this.refFor(key);
        if (ref && this.startLoad(key, ref)) {
          this.log("info", "pre-warming replica", { key, have, want, rate: stats?.rate, trend: stats?.trend() });
        }
      } else if (have > want && loading.length === 0) {
        // Scale down one replica per tick, the least recently used one with nothing running.
        const victim = holding
          .filter((n) => (n.modelInflight.get(key) ?? 0) === 0)
          .sort((a, b) => a.warm.get(key)!.lastUsed - b.warm.get(key)!.lastUsed)[0];
        const idleFor = now - Math.max(stats?.lastCall ?? 0, victim?.warm.get(key)?.lastUsed ?? 0);
        if (victim && (want === 0 ? idleFor > this.config.warm.idleTtlMs : idleFor > 30_000)) {
          victim.unload(key);
          this.log("info", "unloaded idle replica", { key, node: victim.id, idleMs: idleFor, want });
        }
      }
      if (!stats && !policy) this.stats.delete(key);
    }
  }
}

export const SCHEDULER_DEFAULTS: SchedulerConfig = {
  maxInflight: 1_024,
  maxQueuePerModel: 256,
  warm: WARM_POLICY_DEFAULTS,
};
