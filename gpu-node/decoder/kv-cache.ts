// KV cache storage for the decode engine. Every cache is a `KvBatch`: per layer a key and a value
// array shaped [B, heads, P, headDim], row r holding its stream's real entries in the LAST
// P - pad[r] columns (left padding, so every row's newest entry is in the same column and one
// decode step appends one column to all of them). A stream on its own (prefilling, or paused for
// credit) is a batch of one with no padding. A decode step's `present` outputs become the next
// step's past as they are, so the batch is only re-laid (one copy) when streams join or leave.

import type { KvType } from "./config.js";

export type KvArray = Float32Array | Uint16Array;

export interface KvShape {
  layers: number;
  heads: number;
  headDim: number;
  type: KvType;
}

export class KvBatch {
  constructor(
    readonly shape: KvShape,
    /** keys[layer], values[layer]: [B, heads, P, headDim] each. */
    readonly keys: KvArray[],
    readonly values: KvArray[],
    readonly rows: number,
    readonly pastLength: number,
    /** Leading padding columns of each row. */
    readonly pads: readonly number[],
  ) {}

  /** An empty cache (P = 0) for `rows` streams: the past a prefill starts from. */
  static empty(shape: KvShape, rows = 1): KvBatch {
    const none = () => Array.from({ length: shape.layers }, () => allocate(shape.type, 0));
    return new KvBatch(shape, none(), none(), rows, 0, new Array<number>(rows).fill(0));
  }

  /** Real (unpadded) entries of row r. */
  length(r: number): number {
    return this.pastLength - this.pads[r]!;
  }

  get bytes(): number {
    const per = this.shape.type === "float16" ? 2 : 4;
    return 2 * this.shape.layers * this.rows * this.shape.heads * this.pastLength * this.shape.headDim * per;
  }

  dims(): number[] {
    return [this.rows, this.shape.heads, this.pastLength, this.shape.headDim];
  }

  /** The attention mask for one decode step (P + 1 columns): 0 on each row's padding. */
  stepMask(): BigInt64Array {
    return paddedMask(this.pads, this.pastLength + 1);
  }
}

export function allocate(type: KvType, n: number): KvArray {
  return type === "float16" ? new Uint16Array(n) : new Float32Array(n);
}

/** Bytes one more token of context costs one stream. */
export function bytesPerToken(shape: KvShape): number {
  return 2 * shape.layers * shape.heads * shape.headDim * (shape.type === "float16" ? 2 : 4);
}

/** Row masks of `width` columns, each row's first pads[r] columns 0 and the rest 1. */
export function paddedMask(pads: readonly number[], width: number): BigInt64Array {
  const mask = new BigInt64Array(pads.length * width).fill(1n);
  for (let r = 0; r < pads.length; r++) mask.fill(0n, r * width, r * width + pads[r]!);
  return mask;
}

/** A row of some batch, as a source for gather(). */
export interface KvRowRef {
  batch: KvBatch;
  row: number;
}

/**
 * A new batch holding the given rows, in order, left-padded to the longest: the one copy made
 * when streams join or leave. Padding columns are zero (the mask hides them).
 */
export function gather(shape: KvShape, refs: readonly KvRowRef[]): KvBatch {
  const B = refs.length;
  const lengths = refs.map((r) => r.batch.length(r.row));
  const P = lengths.reduce((m, n) => Math.max(m, n), 0);
  const { heads: H, headDim: D } = shape;
  const pads = lengths.map((n) => P - n);
  const copyLayer = (pick: (b: KvBatch) => KvArray): KvArray => {
    const out = allocate(shape.type, B * H * P * D);
    for (let r = 0; r < B; r++) {
      const { batch, row } = refs[r]!;
      const src = pick(batch);
      const n = lengths[r]!;
      if (n === 0) continue;
      const sp = batch.pastLength;
      const sPad = batch.pads[row]!;
      for (let h = 0; h < H; h++) {
        const from = ((row * H + h) * sp + sPad) * D;
        const to = ((r * H + h) * P + pads[r]!) * D;
        out.set(src.subarray(from, from + n * D), to);
      }
    }
    return out;
  };
  const keys: KvArray[] = [];
  const values: KvArray[] = [];
  for (let l = 0; l < shape.layers; l++) {
    keys.push(copyLayer((b) => b.keys[l]!));
    values.push(copyLayer((b) => b.values[l]!));
  }
  return new KvBatch(shape, keys, values, B, P, pads);
}

/**
 * A one-row batch (no padding) holding the first `n` real entries of a row: how a kept cache
 * is stored (exactly its tokens) and how a reused prefix is handed to a new stream (only the
 * part its prompt shares). Always a copy, so the source may be freed or reused independently.
 */
export function headOf(shape: KvShape, ref: KvRowRef, n: number): KvBatch {
  const { batch, row } = ref;
  if (!(n >= 0 && n <= batch.length(row))) throw new RangeError(`headOf: ${n} entries asked of a row of ${batch.length(row)}`);
  const { heads: H, headDim: D } = shape;
  const sp = batch.pastLength;
  const sPad = batch.pads[row]!;
  const copy = (src: KvArray): KvArray => {
    const out = allocate(shape.type, H * n * D);
    for (let h = 0; h < H; h++) {
      const from = ((row * H + h) * sp + sPad) * D;
      out.set(src.subarray(from, from + n * D), h * n * D);
    }
    return out;
  };
  return new KvBatch(shape, batch.keys.map(copy), batch.values.map(copy), 1, n, [0]);
}
