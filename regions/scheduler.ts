// Places each call on a node: one that holds the model warm and has the least in flight; else
// one already loading it; else the least busy node, which is asked to load it first. A call
// whose node dies before answering is retried once on another node (inference is idempotent),
// always within the caller's deadline.

import { MeshError } from "../protocol/errors.js";
import type { RegionInferRequest, Timing } from "../protocol/messages.js";
import type { WireTensor } from "../protocol/tensor.js";
import { NodeCallError, type NodeLink } from "./node-link.js";

export interface ScheduledResult {
  outputs: WireTensor[];
  node: string;
  timing: Timing;
}

export class Scheduler {
  readonly nodes = new Map<string, NodeLink>();
  inflight = 0;
  served = 0;
  failed = 0;

  constructor(private readonly maxInflight: number) {}

  pick(key: string, exclude: Set<string>): NodeLink | undefined {
    let best: NodeLink | undefined;
    let bestScore = Infinity;
    for (const n of this.nodes.values()) {
      if (!n.available || exclude.has(n.id)) continue;
      // Warm beats loading beats cold; then fewer in flight.
      const tier = n.warm.has(key) ? 0 : n.isLoading(key) ? 1 : 2;
      const score = tier * 1e6 + n.inflight;
      if (score < bestScore) {
        best = n;
        bestScore = score;
      }
    }
    return best;
  }

  async infer(req: RegionInferRequest, arrivedAt: number): Promise<ScheduledResult> {
    if (this.inflight >= this.maxInflight) {
      throw new MeshError("no_capacity", `region is saturated (${this.inflight} calls in flight)`, { "retry-after": "1" });
    }
    this.inflight++;
    try {
      const result = await this.place(req, arrivedAt);
      this.served++;
      return result;
    } catch (err) {
      this.failed++;
      throw err;
    } finally {
      this.inflight--;
    }
  }

  private async place(req: RegionInferRequest, arrivedAt: number): Promise<ScheduledResult> {
    const tried = new Set<string>();
    const { key, artifactUrl, sha256, size } = req.model;
    let lastError: NodeCallError | undefined;
    for (let attempt = 0; attempt < 2; attempt++) {
      const node = this.pick(key, tried);
      if (!node) break;
      tried.add(node.id);
      let loadMs = 0;
      try {
        if (!node.warm.has(key)) {
          const started = performance.now();
          await withDeadline(node.load(key, artifactUrl, sha256, size), req.deadline, `loading ${req.model.name}`);
          loadMs = performance.now() - started;
        }
        const remaining = req.deadline - Date.now();
        if (remaining <= 0) throw new MeshError("deadline_exceeded", "the call's deadline passed before it could run");
        const dispatchedAt = performance.now();
        const queueMs = Math.max(0, dispatchedAt - arrivedAt - loadMs);
        const { outputs, inferMs } = await node.infer(key, req.inputs, req.outputs, remaining);
        return {
          outputs,
          node: node.id,
          timing: { queueMs, loadMs, inferMs, regionMs: performance.now() - arrivedAt },
        };
      } catch (err) {
        if (err instanceof NodeCallError && err.retryable && Date.now() < req.deadline) {
          lastError = err;
          continue;
        }
        if (err instanceof NodeCallError) throw new MeshError(err.code, err.message);
        throw err;
      }
    }
    if (lastError) throw new MeshError("node_error", lastError.message);
    throw new MeshError("no_capacity", "no node is connected in this region", { "retry-after": "1" });
  }
}

function withDeadline<T>(p: Promise<T>, deadline: number, what: string): Promise<T> {
  const remaining = deadline - Date.now();
  if (remaining <= 0) return Promise.reject(new MeshError("deadline_exceeded", `deadline passed before ${what}`));
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new MeshError("deadline_exceeded", `deadline passed while ${what}`)), remaining);
    }),
  ]).finally(() => clearTimeout(timer));
}
