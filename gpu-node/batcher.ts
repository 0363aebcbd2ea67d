// Dynamic batching on the node, continuous style: a call to an idle model runs at once (no
// window, so a lone call pays nothing); calls that arrive while the model is busy wait and run
// together as one onnxruntime call when it frees up (up to a maximum batch), and the outputs
// are split back by rows. An optional window holds calls a little longer to fill batches.
// Calls share a batch only when the rest of their shapes and their requested outputs match.
// If a batched run does not give one output row per input row, the calls run one by one
// instead: correctness over speed.
//
// Every call settles exactly once. cancel() settles a call at once whether it waits or runs; a
// run is aborted (its signal fires, and the runtime kills the session child) only when every
// call riding on it has been settled that way, so one caller's deadline never kills the
// neighbours sharing its batch. A run's result that comes after its calls were settled is
// dropped. Each call is told the compute its run spent, shared by rows for a batch.

import type { ModelSignature } from "../formats/datatypes.js";
import { elementCount, type TensorData, type WireTensor } from "../formats/tensor.js";
import type { StopSignal } from "./session-process.js";

export interface BatchOptions {
  /** Extra wait to fill a batch while the model is busy anyway; 0 = none. */
  windowMs: number;
  /** Rows per batch; 1 turns batching off (calls then run concurrently as they come). */
  maxBatch: number;
  /** onnxruntime runs of this model at once. */
  maxRuns?: number;
}

/** What one run gives: the outputs and the compute it spent, ms. */
export interface RunResult {
  outputs: WireTensor[];
  computeMs: number;
}

type Run = (inputs: WireTensor[], outputs: string[] | undefined, signal: StopSignal) => Promise<RunResult>;

/**
 * The stop of one flight. Not an AbortController: its construction and an EventTarget listener
 * added and removed per run cost about 4 µs of the node's CPU per call, more than the span, the
 * timer and the metrics of the call together (bench/node-call-cost.ts); this does the same for
 * the one or two listeners a run has. Listeners hear the abort once.
 */
class RunStop implements StopSignal {
  aborted = false;
  reason: unknown = undefined;
  private listeners: (() => void)[] = [];

  addEventListener(_type: "abort", listener: () => void): void {
    if (!this.aborted) this.listeners.push(listener);
  }

  removeEventListener(_type: "abort", listener: () => void): void {
    const i = this.listeners.indexOf(listener);
    if (i >= 0) this.listeners.splice(i, 1);
  }

  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = true;
    this.reason = reason;
    for (const listener of this.listeners.splice(0)) listener();
  }
}

interface Pending {
  id: string;
  group: string;
  inputs: WireTensor[];
  outputs?: string[];
  rows: number;
  settled: boolean;
  resolve: (r: RunResult) => void;
  reject: (err: Error) => void;
}

/** The calls riding on one run, and the abort of that run. */
interface Flight {
  calls: Pending[];
  stop: RunStop;
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
  /** Calls running now, by id, with the run they ride on. */
  private readonly flying = new Map<string, Flight>();

  constructor(
    private readonly run: Run,
    private readonly opts: BatchOptions,
  ) {
    this.maxRuns = Math.max(1, opts.maxRuns ?? 2);
  }

  get queued(): number {
    return this.pending.length;
  }

  submit(id: string, inputs: WireTensor[], outputs?: string[]): Promise<RunResult> {
    const rows = inputs[0]?.shape[0] ?? 0;
    // Not batchable, or inputs disagreeing on the batch size: run as it comes (one call a run).
    const batchable = this.opts.maxBatch > 1 && rows > 0 && inputs.every((t) => t.shape[0] === rows);
    const group = batchable
      ? inputs.map((t) => `${t.name}:${t.datatype}:${t.shape.slice(1).join("x")}`).join("|") + "#" + (outputs ?? []).join(",")
      : `solo:${id}`;
    return new Promise<RunResult>((resolve, reject) => {
      const call: Pending = { id, group, inputs, ...(outputs ? { outputs } : {}), rows: batchable ? rows : 0, settled: false, resolve, reject };
      call.resolve = (r) => {
        if (call.settled) return;
        call.settled = true;
        resolve(r);
      };
      call.reject = (e) => {
        if (call.settled) return;
        call.settled = true;
        reject(e);
      };
      if (!batchable) {
        // Runs at once, beside the batches: maxRuns bounds batches, the runtime bounds children.
        this.fly([call]);
        return;
      }
      this.pending.push(call);
      this.schedule();
    });
  }

  /**
   * Settles a call now with `err` (a CancelledError unless told otherwise), waiting or running.
   * A run whose calls are all settled is aborted. False when no such call is here.
   */
  cancel(id: string, err: Error = new CancelledError()): boolean {
    const i = this.pending.findIndex((c) => c.id === id);
    if (i >= 0) {
      const [call] = this.pending.splice(i, 1);
      call!.reject(err);
      return true;
    }
    const flight = this.flying.get(id);
    const call = flight?.calls.find((c) => c.id === id);
    if (!flight || !call || call.settled) return false;
    call.reject(err);
    if (flight.calls.every((c) => c.settled)) flight.stop.abort(err);
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
    void this.fly(calls).finally(() => {
      this.running--;
      this.schedule();
    });
  }

  /** Runs calls as one flight, registered so cancel() can find them while they run. */
  private async fly(calls: Pending[]): Promise<void> {
    const flight: Flight = { calls, stop: new RunStop() };
    for (const c of calls) this.flying.set(c.id, flight);
    try {
      await this.runCalls(calls, flight.stop);
    } finally {
      for (const c of calls) if (this.flying.get(c.id) === flight) this.flying.delete(c.id);
    }
  }

  private async runCalls(calls: Pending[], signal: StopSignal): Promise<void> {
    if (calls.length === 1) {
      const c = calls[0]!;
      await this.run(c.inputs, c.outputs, signal).then(c.resolve, c.reject);
      return;
    }
    const totalRows = calls.reduce((n, c) => n + c.rows, 0);
    const inputs: WireTensor[] = calls[0]!.inputs.map((t, k) => ({
      name: t.name,
      datatype: t.datatype,
      shape: [totalRows, ...t.shape.slice(1)],
      data: concat(calls.map((c) => c.inputs[k]!.data)),
    }));
    let result: RunResult | null = null;
    try {
      result = await this.run(inputs, calls[0]!.outputs, signal);
    } catch (err) {
      if (signal.aborted) {
        for (const c of calls) c.reject(err as Error); // all settled already; kept for safety
        return;
      }
      result = null;
    }
    if (!result || !result.outputs.every((o) => o.shape[0] === totalRows)) {
      // One bad call must not fail its neighbours: run each alone so only it fails.
      const spent = result?.computeMs ?? 0;
      await Promise.all(
        calls
          .filter((c) => !c.settled)
          .map((c) =>
            this.run(c.inputs, c.outputs, signal).then(
              (r) => c.resolve({ outputs: r.outputs, computeMs: r.computeMs + (spent * c.rows) / totalRows }),
              c.reject,
            ),
          ),
      );
      return;
    }
    let start = 0;
    for (const c of calls) {
      c.resolve({ outputs: result.outputs.map((o) => sliceRows(o, start, c.rows)), computeMs: (result.computeMs * c.rows) / totalRows });
      start += c.rows;
    }
  }
}
