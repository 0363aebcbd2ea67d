// Dynamic batching on the node: calls to a model whose inputs and outputs all have a batch
// first dimension are gathered for a short window (or until a maximum batch), run as one
// onnxruntime call, and the outputs are split back by rows. Calls only share a batch when the
// rest of their shapes and their requested outputs match. If a batched run does not give one
// output row per input row, the calls are run one by one instead: correctness over speed.

import type { ModelSignature } from "../protocol/datatypes.js";
import { elementCount, type TensorData, type WireTensor } from "../protocol/tensor.js";

export interface BatchOptions {
  windowMs: number;
  maxBatch: number;
}

type Run = (inputs: WireTensor[], outputs?: string[]) => Promise<WireTensor[]>;

interface Pending {
  id: string;
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
  private readonly groups = new Map<string, { calls: Pending[]; timer: ReturnType<typeof setTimeout> }>();
  private waiting = 0;

  constructor(
    private readonly run: Run,
    private readonly opts: BatchOptions,
  ) {}

  get queued(): number {
    return this.waiting;
  }

  submit(id: string, inputs: WireTensor[], outputs?: string[]): Promise<WireTensor[]> {
    const rows = inputs[0]?.shape[0] ?? 0;
    // Inputs disagreeing on the batch size cannot be split back: run them alone.
    if (this.opts.maxBatch <= 1 || !inputs.every((t) => t.shape[0] === rows) || rows === 0) return this.run(inputs, outputs);
    const groupKey =
      inputs.map((t) => `${t.name}:${t.datatype}:${t.shape.slice(1).join("x")}`).join("|") + "#" + (outputs ?? []).join(",");
    return new Promise((resolve, reject) => {
      const call: Pending = { id, inputs, ...(outputs ? { outputs } : {}), rows, resolve, reject };
      let group = this.groups.get(groupKey);
      if (!group) {
        group = { calls: [], timer: setTimeout(() => this.flush(groupKey), this.opts.windowMs) };
        this.groups.set(groupKey, group);
      }
      group.calls.push(call);
      this.waiting++;
      if (group.calls.reduce((n, c) => n + c.rows, 0) >= this.opts.maxBatch) this.flush(groupKey);
    });
  }

  /** Removes a call still waiting for its batch; false when it is already running. */
  cancel(id: string): boolean {
    for (const group of this.groups.values()) {
      const i = group.calls.findIndex((c) => c.id === id);
      if (i >= 0) {
        const [call] = group.calls.splice(i, 1);
        this.waiting--;
        call!.reject(new CancelledError());
        return true;
      }
    }
    return false;
  }

  private flush(groupKey: string): void {
    const group = this.groups.get(groupKey);
    if (!group) return;
    this.groups.delete(groupKey);
    clearTimeout(group.timer);
    const calls = group.calls;
    this.waiting -= calls.length;
    if (calls.length === 0) return;
    if (calls.length === 1) {
      const c = calls[0]!;
      this.run(c.inputs, c.outputs).then(c.resolve, c.reject);
      return;
    }
    void this.runBatch(calls);
  }

  private async runBatch(calls: Pending[]): Promise<void> {
    const totalRows = calls.reduce((n, c) => n + c.rows, 0);
    const inputs: WireTensor[] = calls[0]!.inputs.map((t, k) => ({
      name: t.name,
      datatype: t.datatype,
      shape: [totalRows, ...t.shape.slice(1)],
      data: concat(calls.map((c) => c.inputs[k]!.data)),
    }));
    let outputs: WireTensor[];
    try {
      outputs = await this.run(inputs, calls[0]!.outputs);
    } catch {
      // One bad call must not fail its neighbours: run each alone so only it fails.
      for (const c of calls) this.run(c.inputs, c.outputs).then(c.resolve, c.reject);
      return;
    }
    if (!outputs.every((o) => o.shape[0] === totalRows)) {
      for (const c of calls) this.run(c.inputs, c.outputs).then(c.resolve, c.reject);
      return;
    }
    let start = 0;
    for (const c of calls) {
      c.resolve(outputs.map((o) => sliceRows(o, start, c.rows)));
      start += c.rows;
    }
  }
}
