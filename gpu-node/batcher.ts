// Dynamic batching on the node, continuous style: a call to an idle model runs at once (no
// window, so a lone call pays nothing); calls that arrive while the model is busy wait and run
// together as one onnxruntime call when it frees up (up to a maximum batch), and the outputs
// are split back by rows. An optional window holds calls a little longer to fill batches.
// Calls share a batch only when the rest of their shapes and their requested outputs match.
// If a batched run does not give one output row per input row, the calls run one by one
// instead: correctness over speed.

import type { ModelSignature } from "../protocol/datatypes.js";
import { elementCount, type TensorData, type WireTensor } from "../protocol/tensor.js";

export interface BatchOptions {
  /** Extra wait to fill a batch while the model is busy anyway; 0 = none. */
  windowMs: number;
  /** Rows per batch; 1 turns batching off (calls then run concurrently as they come). */
  maxBatch: number;
  /** onnxruntime runs of this model at once. */
  maxRuns?: number;
}

type Run = (inputs: WireTensor[], outputs?: string[]) => Promise<WireTensor[]>;

interface Pending {
  id: string;
  group: string;
  inputs: WireTensor[];
  outputs?: string[];
  rows: number;
  resolve: (outputs: WireTensor[]) => void;
  reject: (err: Error) => void;
}

export class CancelledError extends Error {
  constructor() {
    super("cancelled");
    this.name = "CancelledError";
  }
}

export function isBatchable(sig: ModelSignature): boolean {
  const all = [...sig.inputs, ...sig.outputs];
  return all.length > 0 && all.every((t) => t.shape.length >= 1 && t.shape[0] === -1);
}

function concat(parts: TensorData[]): TensorData {
  const first = parts[0]!;
  if (Array.isArray(first)) return (parts as string[][]).flat();
  const total = parts.reduce((n, p) => n + (p as ArrayLike<unknown>).length, 0);
  const Ctor = first.constructor as new (n: number) => Exclude<TensorData, string[]>;
  const out = new Ctor(total);
  let offset = 0;
  for (const p of parts as Exclude<TensorData, string[]>[]) {
    (out as unknown as { set(a: ArrayLike<unknown>, o: number): void }).set(p as ArrayLike<unknown>, offset);
    offset += p.length;
  }
  return out;
}

function sliceRows(t: WireTensor, start: number, rows: number): WireTensor {
  const rowSize = elementCount(t.shape.slice(1));
  const from = start * rowSize;
  const to = from + rows * rowSize;
  const data = Array.isArray(t.data) ? t.data.slice(from, to) : (t.data as Exclude<TensorData, string[]>).slice(from, to);
  return { name: t.name, datatype: t.datatype, shape: [rows, ...t.shape.slice(1)], data: data as TensorData };
}

export class Batcher {
  private readonly pending: Pending[] = [];
  private running = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private readonly maxRuns: number;

  constructor(
    private readonly run: Run,
    private readonly opts: BatchOptions,
  ) {
    this.maxRuns = Math.max(1, opts.maxRuns ?? 2);
  }

  get queued(): number {
    return this.pending.length;
  }

  submit(id: string, inputs: WireTensor[], outputs?: string[]): Promise<WireTensor[]> {
    const rows = inputs[0]?.shape[0] ?? 0;
    // Not batchable, or inputs disagreeing on the batch size: run as it comes.
    if (this.opts.maxBatch <= 1 || rows === 0 || !inputs.every((t) => t.shape[0] === rows)) return this.run(inputs, outputs);
    const group =
      inputs.map((t) => `${t.name}:${t.datatype}:${t.shape.slice(1).join("x")}`).join("|") + "#" + (outputs ?? []).join(",");
    return new Promise((resolve, reject) => {
      this.pending.push({ id, group, inputs, ...(outputs ? { outputs } : {}), rows, resolve, reject });
      this.schedule();
    });
  }

  /** Removes a call still waiting; false when it is already running. */
  cancel(id: string): boolean {
    const i = this.pending.findIndex((c) => c.id === id);
    if (i < 0) return false;
    const [call] = this.pending.splice(i, 1);
    call!.reject(new CancelledError());
    return true;
  }

  private schedule(): void {
    while (this.pending.length > 0 && this.running < this.maxRuns) {
      // While busy, a window lets more calls join before the next run starts.
      if (this.running > 0 && this.opts.windowMs > 0 && this.pendingRows(this.pending[0]!.group) < this.opts.maxBatch) {
        this.timer ??= setTimeout(() => {
          this.timer = null;
          this.launch();
        }, this.opts.windowMs);
        return;
      }
      this.launch();
    }
  }

  private pendingRows(group: string): number {
    return this.pending.reduce((n, c) => (c.group === group ? n + c.rows : n), 0);
  }

  /** Takes the oldest call's group (up to maxBatch rows) and runs it. */
  private launch(): void {
    if (this.pending.length === 0 || this.running >= this.maxRuns) return;
    const group = this.pending[0]!.group;
    const calls: Pending[] = [];
    let rows = 0;
    for (let i = 0; i < this.pending.length && rows < this.opts.maxBatch; ) {
      const c = this.pending[i]!;
      if (c.group === group && (calls.length === 0 || rows + c.rows <= this.opts.maxBatch)) {
        calls.push(c);
        rows += c.rows;
        this.pending.splice(i, 1);
      } else {
        i++;
      }
    }
    this.running++;
    void this.runCalls(calls).finally(() => {
      this.running--;
      this.schedule();
    });
  }

  private async runCalls(calls: Pending[]): Promise<void> {
    if (calls.length === 1) {
      const c = calls[0]!;
      await this.run(c.inputs, c.outputs).then(c.resolve, c.reject);
      return;
    }
    const totalRows = calls.reduce((n, c) => n + c.rows, 0);
    const inputs: WireTensor[] = calls[0]!.inputs.map((t, k) => ({
      name: t.name,
      datatype: t.datatype,
      shape: [totalRows, ...t.shape.slice(1)],
      data: concat(calls.map((c) => c.inputs[k]!.data)),
    }));
    let outputs: WireTensor[] | null = null;
    try {
      outputs = await this.run(inputs, calls[0]!.outputs);
    } catch {
      outputs = null;
    }
    if (!outputs || !outputs.every((o) => o.shape[0] === totalRows)) {
      // One bad call must not fail its neighbours: run each alone so only it fails.
      await Promise.all(calls.map((c) => this.run(c.inputs, c.outputs).then(c.resolve, c.reject)));
      return;
    }
    let start = 0;
    for (const c of calls) {
      c.resolve(outputs.map((o) => sliceRows(o, start, c.rows)));
      start += c.rows;
    }
  }
}
