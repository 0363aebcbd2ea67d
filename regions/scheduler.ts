// The region's scheduler. Calls wait in a queue per model, each with its deadline, and are sent
// to a node that holds the model warm with a free slot (least in flight first). When none can
// take them, a load is planned on the node where the model fits best (evicting the least
// valuable idle models if needed), once per model per node. A call whose node dies before
// answering is retried once on another node (inference is idempotent); otherwise it fails with
// a clear 503 before its deadline. The warm policy runs every second: replicas follow predicted
// traffic and keep-warm floors, idle models are unloaded.
//
// Streams (generations) wait in the same queues and are placed the same way, on a node's stream
// slots instead of its call slots; while they wait they are told why (their place in the queue,
// the progress of the load they wait for), and once placed the stream relay (streams.ts) runs
// them. Within a queue each kind keeps its order; one kind waiting does not hold up the other.
//
// Tenants share the region fairly (fairness.ts keeps the ledger). Every free slot goes to the
// waiting account that holds the fewest slots of that kind (per weight), and while another
// account waits, no account takes a slot past its weighted share of the node's or the region's
// slots (unless no one within their share can use that slot); an account alone may use them
// all. A full region still admits an account under its share of MAX_INFLIGHT.
//
// A call's slot (its count in `running` and its account's hold in the ledger) is freed when the
// node says the call ended, not when its caller is answered: a call answered at its deadline
// still holds the slot while the node stops it. Queues are bounded in bytes of inputs as well as
// in calls (MAX_QUEUED_BYTES for the region, a quarter of it per model); a call alone in an
// empty queue is always let in, so no call is refused forever for its size. A call that failed
// after it ran carries what it cost on the node (CallFailed.computeMs), so usage bills it.

import { MeshError } from "../protocol/errors.js";
import { formatBytes } from "../protocol/region-report.js";
import type { ModelRef, ProgressStage, RegionInferRequest, Timing } from "../protocol/messages.js";
import { isPacked, type CarriedTensor } from "../formats/binary-tensors.js";
import { keepValue, ModelStats } from "./model-stats.js";
import { NodeCallError, type NodeLink } from "./node-link.js";
import { FairShare, slotsOf, type SlotKind } from "./fairness.js";
import { estimateMemoryMb, LOAD_PATIENCE_MS, pickWarm, pickWarmForStream, planLoad, waitForCheaperPlace, type NodeState } from "./placement.js";
import { WARM_POLICY_DEFAULTS, warmAction, type ModelPolicy, type WarmPolicyConfig } from "./warm-policy.js";

const FORGET_AFTER_MS = 60 * 60_000;

/** A call that failed after it ran on a node: the error, and the compute it cost there. */
export class CallFailed extends MeshError {
  constructor(
    code: MeshError["code"],
    message: string,
    readonly computeMs: number,
  ) {
    super(code, message);
  }
}

/** The compute a failed call cost, for the region's answer; absent when it never ran. */
export function computeMsOf(err: unknown): { computeMs: number } | Record<string, never> {
  return err instanceof CallFailed ? { computeMs: err.computeMs } : {};
}

/** Bytes of a call's inputs, as the queue's bound counts them. */
export function inputBytes(inputs: readonly CarriedTensor[]): number {
  let n = 0;
  for (const t of inputs) {
    if (isPacked(t)) n += t.bytes.byteLength;
    else if (Array.isArray(t.data)) for (const v of t.data as string[]) n += Buffer.byteLength(v);
    else n += (t.data as ArrayBufferView).byteLength;
  }
  return n;
}

export interface ScheduledResult {
  outputs: CarriedTensor[];
  node: string;
  timing: Timing;
  /** The node's span (W3C traceparent) when it echoed one. */
  nodeTraceparent?: string;
}

export interface SchedulerConfig {
  /** Calls queued or running in the region past this are refused with 503. */
  maxInflight: number;
  /** Calls queued for one model past this are refused with 503. */
  maxQueuePerModel: number;
  /** Bytes of queued inputs the region holds at most, a model's queue a quarter (default none). */
  maxQueuedBytes?: number;
  warm: WarmPolicyConfig;
  /** Per-account shares of slots and admission while accounts contend (default on). */
  fairShare?: boolean;
  /** An account's weight in the shares (default 1): twice the weight, twice the share. */
  accountWeights?: Readonly<Record<string, number>>;
}

export interface StreamProgress {
  stage: ProgressStage;
  position?: number;
  bytes?: number;
  total?: number;
  node?: string;
}

/** A stream waiting for a node: what the scheduler tells it. */
export interface StreamWaiter {
  /** Why it waits: its place in the queue, then the load it waits for; `running` once placed. */
  progress(p: StreamProgress): void;
  /** A node with the model warm and a free stream slot took it: run it there. */
  start(node: NodeLink, timing: { queueMs: number; loadMs: number }): void;
  /** It could not be placed before its deadline, or its model does not load. */
  fail(err: MeshError): void;
}

interface Queued {
  key: string;
  account: string;
  deadline: number;
  arrivedAt: number;
  loadMs: number;
  attempts: number;
  /** Bytes of its inputs, counted against the queue's byte bound while it waits. */
  bytes: number;
  exclude: Set<string>;
  timer: ReturnType<typeof setTimeout>;
  reject: (e: MeshError) => void;
  /** A call (infer) ... */
  req?: RegionInferRequest;
  /** ... with the router's span for it (W3C traceparent), passed to the node ... */
  traceparent?: string;
  resolve?: (r: ScheduledResult) => void;
  /** ... or a stream, with whether it has been told it waits, and the keys of a kept cache it continues, best first. */
  stream?: { waiter: StreamWaiter; announced: boolean; affinity?: readonly string[] };
}

export class Scheduler {
  readonly nodes = new Map<string, NodeLink>();
  readonly stats = new Map<string, ModelStats>();
  readonly policies = new Map<string, ModelPolicy & { ref?: ModelRef }>();
  private readonly queues = new Map<string, Queued[]>();
  /** The newest reference seen per model, so the warm policy can load without a call. */
  private readonly refs = new Map<string, ModelRef>();
  queued = 0;
  /** Bytes of inputs waiting, in the region and per model. */
  queuedBytes = 0;
  private readonly modelBytes = new Map<string, number>();
  running = 0;
  /** Streams placed on a node and not ended yet. */
  streaming = 0;
  /** Which account holds which slots, and who waits: the fair-share ledger. */
  readonly fair: FairShare;
  /** The latest download progress of loads under way, by model. */
  private readonly loadProgress = new Map<string, { bytes: number; total: number; node: string }>();
  served = 0;
  failed = 0;
  loads = 0;
  /** Loads that failed, and idle replicas the warm policy unloaded (metrics.ts reads these). */
  loadFailures = 0;
  idleUnloads = 0;
  evictions = 0;
  /** EWMA of load durations: what the edge expects a cold start here to cost. */
  coldStartMs: number | null = null;
  private warmTimer: ReturnType<typeof setInterval> | null = null;
  /**
   * Called when what the region report tells the edges to route by may have changed: a node
   * joined or left, a model became warm on a node or was unloaded from one. The router publishes
   * its report soon after (report-publisher.ts), instead of at the next interval.
   */
  onReportChange: () => void = () => undefined;

  constructor(
    private readonly config: SchedulerConfig,
    private readonly log: (level: "info" | "warn", msg: string, extra?: Record<string, unknown>) => void = () => undefined,
  ) {
    this.fair = new FairShare(config.fairShare ?? true, config.accountWeights ?? {});
  }

  get inflight(): number {
    return this.queued + this.running + this.streaming;
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

  /** Throws no_capacity when the region or the model's queue is full (in calls or in bytes). */
  private admit(ref: ModelRef, bytes = 0): Queued[] {
    const key = ref.key;
    // A full region still lets in an account under its share of MAX_INFLIGHT, so a hog that
    // filled it cannot shut the others out (at most twice MAX_INFLIGHT in all).
    const max = this.config.maxInflight;
    if (this.inflight >= max && !(this.fair.enabled && this.inflight < 2 * max && this.fair.underInflightShare(ref.account, max))) {
      throw new MeshError("no_capacity", `region is saturated (${this.inflight} calls queued or running)`, { "retry-after": "1" });
    }
    const queue = this.queues.get(key) ?? [];
    if (queue.length >= this.config.maxQueuePerModel) {
      throw new MeshError("no_capacity", `too many calls queued for this model (${queue.length})`, { "retry-after": "1" });
    }
    const maxBytes = this.config.maxQueuedBytes;
    if (maxBytes !== undefined && bytes > 0) {
      const mine = this.modelBytes.get(key) ?? 0;
      // Only when something already waits: a call alone is let in whatever its size.
      if (this.queuedBytes > 0 && this.queuedBytes + bytes > maxBytes) {
        throw new MeshError("no_capacity", `region's queue is full (${this.queuedBytes} bytes of inputs waiting)`, { "retry-after": "1" });
      }
      if (mine > 0 && mine + bytes > Math.floor(maxBytes / 4)) {
        throw new MeshError("no_capacity", `too many bytes queued for this model (${mine})`, { "retry-after": "1" });
      }
    }
    this.queues.set(key, queue);
    this.refs.set(key, ref);
    this.statsFor(key).arrival(Date.now());
    return queue;
  }

  submit(req: RegionInferRequest, arrivedAt: number, traceparent?: string): Promise<ScheduledResult> {
    const key = req.model.key;
    let queue: Queued[];
    const bytes = inputBytes(req.inputs);
    try {
      queue = this.admit(req.model, bytes);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<ScheduledResult>((resolve, reject) => {
      const item: Queued = {
        key,
        account: req.model.account,
        deadline: req.deadline,
        req,
        ...(traceparent ? { traceparent } : {}),
        arrivedAt,
        loadMs: 0,
        attempts: 0,
        bytes,
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
      this.enqueue(queue, item);
      this.pump(key);
    });
  }

  /**
   * Queues a stream for a node of `ref`'s model (throws no_capacity when full). The waiter is
   * told of progress while it waits and gets start() once placed, or fail() at the deadline.
   * `exclude` names nodes not to use (a retry after one failed before its first token).
   */
  submitStream(ref: ModelRef, deadline: number, arrivedAt: number, waiter: StreamWaiter, exclude?: Iterable<string>, affinity?: readonly string[]): { cancel(): void } {
    const key = ref.key;
    const queue = this.admit(ref);
    const item: Queued = {
      key,
      account: ref.account,
      deadline,
      arrivedAt,
      loadMs: 0,
      attempts: 0,
      bytes: 0,
      exclude: new Set(exclude),
      stream: { waiter, announced: false, ...(affinity?.length ? { affinity } : {}) },
      reject: (e) => {
        this.failed++;
        waiter.fail(e);
      },
      timer: setTimeout(() => {
        if (this.dequeue(key, item)) item.reject(new MeshError("deadline_exceeded", "the stream waited in the queue past its deadline"));
      }, Math.max(1, deadline - Date.now())),
    };
    this.enqueue(queue, item);
    this.pump(key);
    // Still waiting, and not yet told so by a load it started: say why.
    if (this.queues.get(key)?.includes(item) && !item.stream!.announced) {
      this.announce(item);
      const p = this.loadProgress.get(key);
      if (p) waiter.progress({ stage: "loading", ...p });
    }
    return {
      cancel: () => {
        if (this.dequeue(key, item)) clearTimeout(item.timer);
      },
    };
  }

  /**
   * A placed stream ended (the relay calls this once per start()): served, failed, cancelled by
   * its caller (neither), or about to be placed again (neither: it counts when it ends). `node`
   * is the one start() named; `yielded` when it had been asked to give its slot back.
   */
  streamEnded(
    ref: Pick<ModelRef, "key" | "account">,
    node: string,
    outcome: "served" | "failed" | "cancelled" | "retried",
    queueMs: number,
    serviceMs: number,
    yielded = false,
  ): void {
    const key = ref.key;
    this.streaming = Math.max(0, this.streaming - 1);
    this.fair.hold("stream", ref.account, node, -1);
    if (yielded) this.fair.yielded(ref.account);
    if (outcome === "served") {
      this.served++;
      this.statsFor(key).completed(queueMs, serviceMs);
    } else if (outcome === "failed") {
      this.failed++;
    }
  }

  /**
   * Should a running stream of `account` on `node`, whose reader has stalled, end now to give
   * its slot to another account's waiting stream? A yes is counted until streamEnded(yielded).
   */
  shouldYieldStream(account: string, node: string): boolean {
    const n = this.nodes.get(node);
    if (!n) return false;
    let regionSlots = 0;
    let free = 0;
    for (const x of this.nodes.values()) {
      if (!x.available) continue;
      regionSlots += slotsOf("stream", x);
      free += Math.max(0, slotsOf("stream", x) - x.streams);
    }
    return this.fair.shouldYield(account, n, regionSlots, free);
  }

  /** Tells a waiting stream, once, that it waits and where it stands. */
  private announce(item: Queued): void {
    if (!item.stream || item.stream.announced) return;
    item.stream.announced = true;
    const position = (this.queues.get(item.key)?.filter((i) => i.stream).indexOf(item) ?? 0) + 1;
    item.stream.waiter.progress({ stage: "queued", position });
  }

  /** A node reported download progress of `key`: streams waiting for it hear it. */
  noteLoadProgress(key: string, bytes: number, total: number, node: string): void {
    if (!this.loadProgress.has(key)) return; // not a load this scheduler started (or it ended)
    const p = { bytes, total, node };
    this.loadProgress.set(key, p);
    for (const item of this.queues.get(key) ?? []) {
      if (!item.stream) continue;
      this.announce(item);
      item.stream.waiter.progress({ stage: "loading", ...p });
    }
  }

  private enqueue(q: Queued[], item: Queued, front = false): void {
    if (front) q.unshift(item);
    else q.push(item);
    this.queued++;
    this.queuedBytes += item.bytes;
    this.modelBytes.set(item.key, (this.modelBytes.get(item.key) ?? 0) + item.bytes);
    this.fair.wait(item.stream ? "stream" : "call", item.account, 1);
  }

  private dequeue(key: string, item: Queued): boolean {
    const q = this.queues.get(key);
    const i = q?.indexOf(item) ?? -1;
    if (!q || i < 0) return false;
    q.splice(i, 1);
    this.queued--;
    this.queuedBytes -= item.bytes;
    const left = (this.modelBytes.get(key) ?? 0) - item.bytes;
    if (left > 0) this.modelBytes.set(key, left);
    else this.modelBytes.delete(key);
    this.fair.wait(item.stream ? "stream" : "call", item.account, -1);
    if (q.length === 0) this.queues.delete(key);
    return true;
  }

  /**
   * Sends waiting calls and streams to warm nodes with free slots, fairly between accounts, and
   * plans a load for models still waiting. `key` is the model that changed; since a slot one
   * account frees may be another account's turn, every queue is considered.
   */
  pump(_key?: string): void {
    this.place();
    for (const key of [...this.queues.keys()]) this.ensureLoad(key);
  }

  /** Re-pumps every model with waiting calls: capacity freed somewhere. */
  pumpAll(): void {
    this.pump();
  }

  /**
   * One placement at a time: of each queue's oldest placeable call and stream, the one whose
   * account holds the fewest slots of that kind (per weight) goes first; oldest on a tie.
   * Within a queue each kind keeps its order; one kind waiting does not hold up the other.
   */
  private place(): void {
    for (;;) {
      const regionSlots = { call: 0, stream: 0 };
      for (const n of this.nodes.values()) {
        if (!n.available) continue;
        regionSlots.call += slotsOf("call", n);
        regionSlots.stream += slotsOf("stream", n);
      }
      // Within the shares first; a slot that nobody within its shares can use goes to the
      // fewest-holding account that can, rather than idle (unless it is being kept for another
      // account's model that is loading on that node).
      const best = this.bestPlacement(regionSlots, true) ?? this.bestPlacement(regionSlots, false);
      if (!best) return;
      this.dequeue(best.item.key, best.item);
      this.dispatch(best.item, best.node);
    }
  }

  private bestPlacement(regionSlots: Record<SlotKind, number>, withinShares: boolean): { item: Queued; node: NodeLink } | null {
    let best: { item: Queued; node: NodeLink; rank: number } | null = null;
    for (const [key, q] of this.queues) {
      const tried = { call: false, stream: false };
      for (const item of q) {
        const kind: SlotKind = item.stream ? "stream" : "call";
        if (tried[kind]) continue;
        tried[kind] = true;
        const fits = [...this.nodes.values()].filter((n) =>
          withinShares ? this.fair.allows(kind, item.account, n, regionSlots[kind]) : !this.loadingForOthers(n, item.account),
        );
        const node = item.stream ? pickWarmForStream(fits, key, item.exclude, item.stream.affinity) : (pickWarm(fits, key, item.exclude) ?? pickWarm(fits, key));
        if (node) {
          const rank = this.fair.rank(kind, item.account);
          if (!best || rank < best.rank || (rank === best.rank && item.arrivedAt < best.item.arrivedAt)) best = { item, node: node as NodeLink, rank };
        }
        if (tried.call && tried.stream) break;
      }
    }
    return best;
  }

  /** Is `node` loading a model that another account's requests wait for? */
  private loadingForOthers(node: NodeLink, account: string): boolean {
    if (!this.fair.enabled) return false;
    for (const key of node.loading.keys()) {
      const q = this.queues.get(key);
      if (q && q.length > 0 && q[0]!.account !== account) return true;
    }
    return false;
  }

  private valueOf = (key: string): number => keepValue(this.stats.get(key), this.queueDepth(key), Date.now());

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
    const q = this.queues.get(key) ?? [];
    const streams = q.filter((i) => i.stream).length;
    const calls = q.length - streams;
    const callSlots = warm.reduce((s, n) => s + n.slots, 0);
    const streamSlots = warm.reduce((s, n) => s + n.streamSlots, 0);
    if (warm.length > 0 && calls <= callSlots && streams <= streamSlots) return;
    this.startLoad(key, ref, Infinity, q.length > 0 ? performance.now() - q[0]!.arrivedAt : 0);
  }

  /** `waitedMs`: a load for waiting calls (how long the oldest has waited), which may wait for a cheaper place. */
  private startLoad(key: string, ref: ModelRef, maxEvictValue = Infinity, waitedMs?: number): boolean {
    // A bundle's weights are mostly in its data files: they count as much as the graph.
    const bytes = ref.size + (ref.files ?? []).reduce((n, f) => n + f.size, 0);
    const memoryMb = estimateMemoryMb(bytes);
    const plan = planLoad(this.nodes.values(), key, memoryMb, this.valueOf, this.protect, undefined, maxEvictValue, bytes);
    if (!plan) {
      this.failIfNoDiskEverFits(key, bytes);
      return false;
    }
    const now = Date.now();
    const worth = (k: string) => this.stats.get(k)?.longRate(now) ?? 0;
    if (waitedMs !== undefined && waitForCheaperPlace(this.nodes.values(), plan, key, memoryMb, worth, waitedMs, this.coldStartMs ?? LOAD_PATIENCE_MS)) return false;
    const node = plan.node as NodeLink;
    for (const victim of plan.evict) {
      node.unload(victim);
      this.evictions++;
      this.log("info", "evicted model to make room", { node: node.id, evicted: victim, for: key });
    }
    if (plan.evict.length > 0) this.onReportChange();
    this.loads++;
    const started = performance.now();
    this.loadProgress.set(key, { bytes: 0, total: bytes, node: node.id });
    this.noteLoadProgress(key, 0, bytes, node.id);
    node.load(key, ref.artifactUrl, ref.sha256, ref.size, ref.signature, memoryMb, ref.tokenizer, ref.files).then(
      () => {
        if (this.loadProgress.get(key)?.node === node.id) this.loadProgress.delete(key);
        const loadMs = performance.now() - started;
        this.coldStartMs = this.coldStartMs === null ? loadMs : this.coldStartMs + 0.3 * (loadMs - this.coldStartMs);
        this.log("info", "model warm", { node: node.id, key, loadMs: Math.round(loadMs) });
        this.onReportChange();
        // Calls that waited for this load carry its time in their Server-Timing.
        for (const item of this.queues.get(key) ?? []) item.loadMs = Math.max(item.loadMs, loadMs);
        this.pumpAll();
      },
      (err: NodeCallError) => {
        if (this.loadProgress.get(key)?.node === node.id) this.loadProgress.delete(key);
        this.loadFailures++;
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

  /**
   * When the model's files are larger than the model cache of every node in the region that
   * reported one, no eviction will ever make room: the waiting calls fail now with why, instead
   * of at their deadline. A node not yet reporting its disk keeps the calls waiting.
   */
  private failIfNoDiskEverFits(key: string, bytes: number): void {
    const usable = [...this.nodes.values()].filter((n) => n.available);
    if (usable.length === 0 || usable.some((n) => !n.disk || n.disk.cacheBudgetBytes >= bytes)) return;
    const largest = Math.max(...usable.map((n) => n.disk!.cacheBudgetBytes));
    const message = `the model's files take ${formatBytes(bytes)}, more than the model cache of any node in this region (MODEL_CACHE_BYTES, ${formatBytes(largest)} at most)`;
    this.log("warn", "model larger than every node's disk cache", { key, bytes, largestCacheBytes: largest });
    for (const item of [...(this.queues.get(key) ?? [])]) {
      this.dequeue(key, item);
      clearTimeout(item.timer);
      item.reject(new MeshError("inference_failed", message));
    }
  }

  private dispatch(item: Queued, node: NodeLink): void {
    const key = item.key;
    const remaining = item.deadline - Date.now();
    if (remaining <= 0) {
      clearTimeout(item.timer);
      item.reject(new MeshError("deadline_exceeded", "the call's deadline passed before it could run"));
      return;
    }
    const dispatchedAt = performance.now();
    const queueMs = Math.max(0, dispatchedAt - item.arrivedAt - item.loadMs);
    if (item.stream) {
      clearTimeout(item.timer);
      this.streaming++;
      this.fair.hold("stream", item.account, node.id, 1);
      if (item.stream.announced) item.stream.waiter.progress({ stage: "running", node: node.id });
      item.stream.waiter.start(node, { queueMs, loadMs: item.loadMs });
      return;
    }
    const req = item.req!;
    this.running++;
    this.fair.hold("call", item.account, node.id, 1);
    // The slot is the node's until it says the call ended: a caller answered at the deadline
    // does not free it (the NodeLink calls this once, on the node's frame or its socket's close).
    const onEnd = () => {
      this.running--;
      this.fair.hold("call", item.account, node.id, -1);
    };
    node.infer(key, req.inputs, req.outputs, remaining, { sha256: req.model.sha256, requestId: req.requestId, ...(item.traceparent ? { traceparent: item.traceparent } : {}), onEnd }).then(
      ({ outputs, inferMs, computeMs, traceparent }) => {
        clearTimeout(item.timer);
        this.statsFor(key).completed(queueMs, inferMs);
        item.resolve!({
          outputs,
          node: node.id,
          timing: { queueMs, loadMs: item.loadMs, inferMs, regionMs: performance.now() - item.arrivedAt, ...(computeMs !== undefined ? { computeMs } : {}) },
          ...(traceparent ? { nodeTraceparent: traceparent } : {}),
        });
        this.pump(key);
      },
      (err: NodeCallError) => {
        // Retry while any node can take it: another one, or this one when it is still up (it
        // answered that it lacked the model, e.g. just after an eviction it had not yet reported).
        const canRetry = [...this.nodes.values()].some((n) => n.available);
        if (err.retryable && item.attempts === 0 && canRetry && Date.now() < req.deadline) {
          // The node said it did not have the model: nothing ran there; try another once. (A node
          // that went away mid-call is not retryable: it may have run it.)
          item.attempts++;
          item.exclude.add(node.id);
          const q = this.queues.get(key) ?? [];
          this.queues.set(key, q);
          this.enqueue(q, item, true);
          this.pump(key);
          return;
        }
        clearTimeout(item.timer);
        if (err.retryable) {
          item.reject(new MeshError("no_capacity", `the call could not be completed: ${err.message}`, { "retry-after": "1" }));
        } else if (err.computeMs !== undefined) {
          item.reject(new CallFailed(err.code, err.message, err.computeMs));
        } else {
          item.reject(new MeshError(err.code, err.message));
        }
        this.pumpAll();
      },
    );
  }

  /**
   * Nodes that joined or left: the placement of waiting calls may change. With no node left
   * at all, waiting calls fail now with no_capacity (they never ran, so the edge can take them
   * to another region) instead of sitting out their deadline.
   */
  nodesChanged(): void {
    this.onReportChange();
    if (![...this.nodes.values()].some((n) => n.available)) {
      for (const [key, q] of [...this.queues]) {
        for (const item of [...q]) {
          this.dequeue(key, item);
          clearTimeout(item.timer);
          item.reject(new MeshError("no_capacity", "region has no node available", { "retry-after": "1" }));
        }
      }
      return;
    }
    this.pumpAll();
  }

  /** The warm policy: add replicas for predicted traffic and floors, unload what idles. */
  warmTick(now = Date.now()): void {
    const nodes = [...this.nodes.values()];
    for (const key of this.knownModels()) {
      const stats = this.stats.get(key);
      stats?.tick(now);
      const policy = this.policies.get(key);
      if (!policy && stats && now - stats.lastCall > FORGET_AFTER_MS && !nodes.some((n) => n.warm.has(key) || n.loading.has(key))) {
        // Nobody has called it for long and no node holds it: forget it, bounded memory.
        this.stats.delete(key);
        this.refs.delete(key);
        continue;
      }
      const action = warmAction(key, nodes, stats?.view(), policy, now, this.valueOf(key), this.config.warm);
      if (action.kind === "load") {
        const ref = this.refFor(key);
        if (ref && this.startLoad(key, ref, action.maxEvictValue)) {
          this.log("info", "pre-warming replica", { key, rate: stats?.rate, trend: stats?.trend(), floor: policy?.keepWarm ?? 0 });
        }
      } else if (action.kind === "unload") {
        const node = this.nodes.get(action.nodeId);
        if (node) {
          node.unload(key);
          this.idleUnloads++;
          this.onReportChange();
          this.log("info", "unloaded idle replica", { key, node: node.id });
        }
      }
    }
  }
}

export const SCHEDULER_DEFAULTS: SchedulerConfig = {
  maxInflight: 1_024,
  maxQueuePerModel: 256,
  maxQueuedBytes: 512 * 1024 * 1024,
  warm: WARM_POLICY_DEFAULTS,
};
