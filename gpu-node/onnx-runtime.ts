// The node's loaded models, keyed by sha256 (the bytes, not the name a router gives them), each
// run in session child processes (gpu-node/session-process.ts says why processes) so the agent's
// event loop only moves frames. A model has `workersPerModel` children, each running one call at
// a time with `threadsPerWorker` intra-op threads; calls wait here for a free one. A run that is
// aborted (deadline, cancel) or that grows past the memory bound kills its child; a replacement
// is loaded in the background and the model keeps serving from the others meanwhile. A model
// whose replacement fails to load is dropped (onLost), so the router learns from the next
// heartbeat that the node no longer holds it.
//
// Generations of a model all go to one of its children (genWorker), so the decode engine there
// batches them; its KV caches count in the model's memory (SessionProcess.memoryBytes).

import { makeLogger } from "../protocol/log.js";
import type { WireTensor } from "../formats/tensor.js";
import { gpuMemoryOfPid } from "./accelerator.js";
import { SessionProcess, SessionProcessError, type RunOutcome, type SessionOptions, type StopSignal } from "./session-process.js";

export { InferenceError } from "./ort-tensors.js";

export interface RuntimeOptions {
  executionProviders: string[];
  workersPerModel: number;
  threadsPerWorker: number;
  /** Whether onnxruntime's thread pools busy-wait between runs (NODE_ORT_SPINNING; default no). */
  spinning?: boolean;
  loadTimeoutMs: number;
}

interface Waiter {
  resolve: (w: SessionProcess) => void;
  reject: (e: Error) => void;
}

class ModelPool {
  readonly workers: SessionProcess[] = [];
  private readonly idle: SessionProcess[] = [];
  private readonly waiters: Waiter[] = [];
  private readonly replaced = new Set<SessionProcess>();
  lastUsed = Date.now();
  closed = false;

  constructor(
    readonly sha256: string,
    readonly opts: SessionOptions,
    private readonly lost: (why: Error) => void,
    private readonly genTokens: (n: number) => void,
  ) {}

  /** The child that takes this model's generations: the same one while it lives, so they batch. */
  private generator: SessionProcess | null = null;

  private readonly genWaiters: ((w: SessionProcess | undefined) => void)[] = [];

  /**
   * The generation child; while every child is being replaced (they died), the first
   * replacement. Undefined once the model is closed (unloaded, or lost when none would reload).
   */
  genWorker(): Promise<SessionProcess | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    if (!this.generator?.alive) this.generator = this.workers.find((w) => w.alive) ?? null;
    if (this.generator) return Promise.resolve(this.generator);
    return new Promise((resolve) => this.genWaiters.push(resolve));
  }

  get inputNames(): string[] {
    return this.workers[0]?.inputNames ?? [];
  }

  get outputNames(): string[] {
    return this.workers[0]?.outputNames ?? [];
  }

  /** GPU memory of the children, MiB, read after each load (CUDA only). */
  gpuMb = 0;

  get memoryBytes(): number {
    return this.workers.reduce((n, w) => n + w.memoryBytes, 0) + this.gpuMb * 2 ** 20;
  }

  add(w: SessionProcess): void {
    this.workers.push(w);
    w.onGenStats = this.genTokens;
    for (const resolve of this.genWaiters.splice(0)) resolve(w);
    w.onDeath = () => {
      if (!w.busy) this.replace(w); // a busy one is replaced when its run settles
    };
    this.release(w);
  }

  private release(w: SessionProcess): void {
    if (!w.alive) return this.replace(w);
    if (this.closed) return w.kill();
    const next = this.waiters.shift();
    if (next) next.resolve(w);
    else this.idle.push(w);
  }

  private acquire(signal?: StopSignal): Promise<SessionProcess> {
    const w = this.idle.shift();
    if (w) return Promise.resolve(w);
    return new Promise<SessionProcess>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: (got) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(got);
        },
        reject,
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new SessionProcessError("aborted", String(signal?.reason ?? "aborted")));
      };
      if (signal?.aborted) return onAbort();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  async run(inputs: WireTensor[], outputs: string[] | undefined, signal?: StopSignal): Promise<RunOutcome> {
    this.lastUsed = Date.now();
    const w = await this.acquire(signal);
    try {
      return await w.run(inputs, outputs, signal);
    } finally {
      this.release(w);
    }
  }

  /** A dead child is swapped for a fresh one, loaded in the background. */
  private replace(dead: SessionProcess): void {
    if (this.replaced.has(dead)) return;
    this.replaced.add(dead);
    const i = this.workers.indexOf(dead);
    if (i >= 0) this.workers.splice(i, 1);
    const j = this.idle.indexOf(dead);
    if (j >= 0) this.idle.splice(j, 1);
    if (this.closed) return;
    SessionProcess.start(this.opts).then(
      (w) => {
        if (this.closed) return w.kill();
        this.add(w);
      },
      (err: Error) => {
        // Only when no child is left is the model lost; the others keep serving.
        if (this.workers.length > 0 || this.closed) return;
        this.close();
        this.lost(err);
      },
    );
  }

  close(): void {
    this.closed = true;
    for (const w of this.workers) w.kill();
    this.idle.length = 0;
    for (const waiter of this.waiters.splice(0)) waiter.reject(new SessionProcessError("unavailable", "the model was unloaded"));
    for (const resolve of this.genWaiters.splice(0)) resolve(undefined);
  }
}

export class OnnxRuntime {
  private readonly models = new Map<string, ModelPool>();
  /** Loads under way: two keys naming the same bytes share one load (and one set of children). */
  private readonly loading = new Map<string, Promise<{ memoryMb: number }>>();
  private readonly log = makeLogger("node");
  /** A model the node could not keep (its sessions died and would not reload). */
  onLost: (sha256: string, why: Error) => void = () => undefined;
  /** Tokens computed by generations in any child (the node's token counter). */
  onGenTokens: (n: number) => void = () => undefined;

  constructor(private readonly opts: RuntimeOptions) {}

  has(sha256: string): boolean {
    return this.models.has(sha256);
  }

  /** The model's measured memory (every child's RSS above its own before the load, plus what the children hold on the GPU), MiB. */
  memoryMb(sha256: string): number {
    const m = this.models.get(sha256);
    return m ? Math.max(1, Math.ceil(m.memoryBytes / 2 ** 20)) : 0;
  }

  lastUsed(sha256: string): number {
    return this.models.get(sha256)?.lastUsed ?? 0;
  }

  /** Memory of every loaded model but `except`, MiB. */
  usedMb(except?: string): number {
    let n = 0;
    for (const sha of this.models.keys()) if (sha !== except) n += this.memoryMb(sha);
    return n;
  }

  /** Conversation keys whose caches the children keep, for the heartbeat (most recent first per child). */
  conversations(limit: number): { key: string; savedMs: number }[] {
    const out: { key: string; savedMs: number }[] = [];
    for (const m of this.models.values()) for (const w of m.workers) if (w.alive) out.push(...w.conversations);
    return out.slice(0, limit);
  }

  /** pids of a model's session children (tests and logs). */
  pids(sha256: string): number[] {
    return this.models.get(sha256)?.workers.map((w) => w.pid) ?? [];
  }

  /**
   * Loads a model from its own directory (`path` is the file in it) into its session children.
   * A child whose memory passes `memoryLimitMb` is killed and the load fails with kind too_big.
   */
  load(sha256: string, path: string, memoryLimitMb: number): Promise<{ memoryMb: number }> {
    if (this.models.has(sha256)) return Promise.resolve({ memoryMb: this.memoryMb(sha256) });
    let p = this.loading.get(sha256);
    if (!p) {
      p = this.loadOnce(sha256, path, memoryLimitMb).finally(() => this.loading.delete(sha256));
      this.loading.set(sha256, p);
    }
    return p;
  }

  private async loadOnce(sha256: string, path: string, memoryLimitMb: number): Promise<{ memoryMb: number }> {
    const opts: SessionOptions = {
      path,
      threads: this.opts.threadsPerWorker,
      spinning: this.opts.spinning,
      executionProviders: this.opts.executionProviders,
      memoryLimitBytes: memoryLimitMb * 2 ** 20,
      loadTimeoutMs: this.opts.loadTimeoutMs,
      env: { MESH_SESSION_SHA256: sha256 },
    };
    // The first child alone measures the session; the others follow once it is known to fit.
    const first = await SessionProcess.start(opts);
    const rest = await Promise.allSettled(Array.from({ length: this.opts.workersPerModel - 1 }, () => SessionProcess.start(opts)));
    const pool = new ModelPool(sha256, opts, (why) => {
      if (this.models.get(sha256) !== pool) return;
      this.models.delete(sha256);
      this.log("warn", "model lost: its session would not reload", { sha256, error: why.message });
      this.onLost(sha256, why);
    }, (n) => this.onGenTokens(n));
    pool.add(first);
    for (const r of rest) if (r.status === "fulfilled") pool.add(r.value);
    if (this.opts.executionProviders.includes("cuda") || this.opts.executionProviders.includes("webgpu")) {
      // The weights live on the GPU: count what each child holds there as well (nvidia-smi lists
      // CUDA processes; a Vulkan one it may not, and then counts nothing).
      const gpu = await Promise.all(pool.workers.map((w) => gpuMemoryOfPid(w.pid)));
      pool.gpuMb = gpu.reduce<number>((n, m) => n + (m ?? 0), 0);
    }
    this.models.set(sha256, pool);
    return { memoryMb: this.memoryMb(sha256) };
  }

  run(sha256: string, inputs: WireTensor[], outputs: string[] | undefined, signal?: StopSignal): Promise<RunOutcome> {
    const m = this.models.get(sha256);
    if (!m) return Promise.reject(new SessionProcessError("unavailable", "the model is not loaded on this node"));
    return m.run(inputs, outputs, signal);
  }

  /** The child that runs a model's generations (they run inside it: child-generations.ts). */
  generator(sha256: string): Promise<SessionProcess | undefined> {
    const m = this.models.get(sha256);
    if (!m) return Promise.resolve(undefined);
    m.lastUsed = Date.now();
    return m.genWorker();
  }

  async unload(sha256: string): Promise<void> {
    const m = this.models.get(sha256);
    this.models.delete(sha256);
    m?.close();
  }

  async releaseAll(): Promise<void> {
    for (const sha of [...this.models.keys()]) await this.unload(sha);
  }
}
