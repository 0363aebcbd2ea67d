// Tensors between the Open Inference Protocol's JSON form and the typed arrays the mesh moves
// (msgpack carries typed arrays natively) and onnxruntime consumes. The edge validates a call
// against the model's signature here, so a malformed call is refused before it leaves the edge.

import type { OipDatatype, TensorSpec } from "./datatypes.js";
import { isOipDatatype, TYPED_ARRAY } from "./datatypes.js";

export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Int16Array
  | Int32Array
  | BigInt64Array
  | Uint8Array
  | Uint16Array
  | Uint32Array
  | BigUint64Array
  | string[];

/** A tensor as it travels edge -> region -> node -> back. */
export interface WireTensor {
  name: string;
  datatype: OipDatatype;
  shape: number[];
  data: TensorData;
}

/** An output as the Open Inference Protocol's JSON response carries it. */
export interface JsonTensor {
  name: string;
  datatype: OipDatatype;
  shape: number[];
  data: (number | boolean | string)[];
}

export class TensorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TensorError";
  }
}

const INT_RANGES: Partial<Record<OipDatatype, [number, number]>> = {
  UINT8: [0, 0xff],
  INT8: [-0x80, 0x7f],
  UINT16: [0, 0xffff],
  INT16: [-0x8000, 0x7fff],
  UINT32: [0, 0xffffffff],
  INT32: [-0x80000000, 0x7fffffff],
  UINT64: [0, Number.MAX_SAFE_INTEGER],
  INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function flatten(value: unknown, out: unknown[], depth: number): void {
  if (Array.isArray(value)) {
    if (depth > 32) throw new TensorError("data is nested too deeply");
    for (const v of value) flatten(v, out, depth + 1);
  } else {
    out.push(value);
  }
}

// IEEE 754 half precision from a double, round-to-nearest-even; onnxruntime takes FP16 as bits.
export function toHalfBits(value: number): number {
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

function toBf16Bits(value: number): number {
  const f32 = new Float32Array([value]);
  const x = new Uint32Array(f32.buffer)[0]!;
  return (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
}

function fromBf16Bits(b: number): number {
  return new Float32Array(new Uint32Array([b << 16]).buffer)[0]!;
}

function numbers(name: string, datatype: OipDatatype, flat: unknown[]): number[] {
  const range = INT_RANGES[datatype];
  const out = new Array<number>(flat.length);
  for (let i = 0; i < flat.length; i++) {
    const v = flat[i];
    if (typeof v !== "number" || (range === undefined && !Number.isFinite(v) && !Number.isNaN(v))) {
      throw new TensorError(`input '${name}' (${datatype}): element ${i} is not a number`);
    }
    if (range && (!Number.isInteger(v) || v < range[0] || v > range[1])) {
      throw new TensorError(
        `input '${name}' (${datatype}): element ${i} (${v}) is not an integer in [${range[0]}, ${range[1]}]`,
      );
    }
    out[i] = v;
  }
  return out;
}

/** JSON elements -> the typed array for a datatype; validates every element. */
export function encodeTensorData(name: string, datatype: OipDatatype, flat: unknown[]): TensorData {
  switch (datatype) {
    case "BYTES":
      return flat.map((v, i) => {
        if (typeof v !== "string") throw new TensorError(`input '${name}' (BYTES): element ${i} is not a string`);
        return v;
      });
    case "BOOL":
      return Uint8Array.from(flat, (v, i) => {
        if (typeof v === "boolean") return v ? 1 : 0;
        if (v === 0 || v === 1) return v;
        throw new TensorError(`input '${name}' (BOOL): element ${i} is not a boolean`);
      });
    case "FP16":
      return Uint16Array.from(numbers(name, datatype, flat), toHalfBits);
    case "BF16":
      return Uint16Array.from(numbers(name, datatype, flat), toBf16Bits);
    case "INT64":
      return BigInt64Array.from(numbers(name, datatype, flat), BigInt);
    case "UINT64":
      return BigUint64Array.from(numbers(name, datatype, flat), BigInt);
    default:
      // The rest hold JS numbers as they are (numbers() checked each against its range).
      return TYPED_ARRAY[datatype].from(numbers(name, datatype, flat));
  }
}

/** Typed array -> JSON elements, the inverse of encodeTensorData. */
export function decodeTensorData(datatype: OipDatatype, data: TensorData): (number | boolean | string)[] {
  if (Array.isArray(data)) return data;
  if (datatype === "BOOL") return Array.from(data as Uint8Array, (v) => v !== 0);
  if (datatype === "FP16") return Array.from(data as Uint16Array, fromHalfBits);
  if (datatype === "BF16") return Array.from(data as Uint16Array, fromBf16Bits);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) return Array.from(data, Number);
  return Array.from(data as ArrayLike<number>);
}

export function toJsonTensor(t: WireTensor): JsonTensor {
  return { name: t.name, datatype: t.datatype, shape: t.shape, data: decodeTensorData(t.datatype, t.data) };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * The binary part of a request (formats/binary-tensors.ts): hands out each binary input's data
 * in the JSON's order, validated against its datatype and element count; `finish` refuses bytes
 * left over.
 */
export interface BinaryTail {
  take(name: string, datatype: OipDatatype, count: number, size: unknown): TensorData;
  finish(): void;
}

export interface ParsedInferRequest {
  id?: string;
  inputs: WireTensor[];
  /** Output names the caller asked for; undefined means all of them. */
  outputs?: string[];
}

/**
 * Validates an OIP inference request body against the model's signature: every input present
 * once, declared datatype, a shape compatible with the signature, and exactly as many elements
 * as the shape says. Throws TensorError with a message a caller can act on.
 */
export function parseInferRequest(
  body: unknown,
  signature: { inputs: TensorSpec[]; outputs: TensorSpec[] },
  binary?: BinaryTail,
): ParsedInferRequest {
  if (!isRecord(body)) throw new TensorError("request body must be a JSON object with an 'inputs' array");
  const { id, inputs, outputs } = body;
  if (id !== undefined && typeof id !== "string") throw new TensorError("'id' must be a string");
  if (!Array.isArray(inputs) || inputs.length === 0) throw new TensorError("'inputs' must be a non-empty array");

  const specs = new Map(signature.inputs.map((s) => [s.name, s]));
  const seen = new Set<string>();
  const parsed: WireTensor[] = [];
  for (const [i, raw] of inputs.entries()) {
    if (!isRecord(raw)) throw new TensorError(`inputs[${i}] must be an object`);
    const { name, datatype, shape, data, parameters } = raw;
    if (typeof name !== "string") throw new TensorError(`inputs[${i}].name must be a string`);
    const spec = specs.get(name);
    if (!spec) {
      throw new TensorError(`unknown input '${name}'; the model's inputs are: ${[...specs.keys()].join(", ")}`);
    }
    if (seen.has(name)) throw new TensorError(`input '${name}' is given more than once`);
    seen.add(name);
    if (!isOipDatatype(datatype)) throw new TensorError(`input '${name}': unknown datatype ${JSON.stringify(datatype)}`);
    if (datatype !== spec.datatype) {
      throw new TensorError(`input '${name}': datatype ${datatype} does not match the model's ${spec.datatype}`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new TensorError(`input '${name}': shape must be an array of non-negative integers`);
    }
    const dims = shape as number[];
    if (dims.length !== spec.shape.length) {
      throw new TensorError(
        `input '${name}': shape [${dims}] has rank ${dims.length}, the model expects rank ${spec.shape.length} ([${spec.shape}], -1 = any)`,
      );
    }
    dims.forEach((d, k) => {
      const want = spec.shape[k]!;
      if (want >= 0 && d !== want) {
        throw new TensorError(`input '${name}': dimension ${k} is ${d}, the model expects ${want}`);
      }
    });
    const count = elementCount(dims);
    // Binary tensor data extension: the data follows the JSON, `binary_data_size` bytes of it.
    const binarySize = isRecord(parameters) ? parameters.binary_data_size : undefined;
    if (binarySize !== undefined) {
      if (data !== undefined) throw new TensorError(`input '${name}': give either 'data' or parameters.binary_data_size, not both`);
      if (!binary) {
        throw new TensorError(`input '${name}' names binary_data_size, but the request has no binary part (send Inference-Header-Content-Length)`);
      }
      parsed.push({ name, datatype, shape: dims, data: binary.take(name, datatype, count, binarySize) });
      continue;
    }
    const flat: unknown[] = [];
    flatten(data, flat, 0);
    if (flat.length !== count) {
      throw new TensorError(
        `input '${name}': shape [${dims}] needs ${count} elements, data has ${flat.length}`,
      );
    }
    parsed.push({ name, datatype, shape: dims, data: encodeTensorData(name, datatype, flat) });
  }
  binary?.finish();
  const missing = [...specs.keys()].filter((n) => !seen.has(n));
  if (missing.length) throw new TensorError(`missing input(s): ${missing.join(", ")}`);

  let wanted: string[] | undefined;
  if (outputs !== undefined) {
    if (!Array.isArray(outputs)) throw new TensorError("'outputs' must be an array");
    const known = new Set(signature.outputs.map((o) => o.name));
    const asked = new Set<string>();
    wanted = outputs.map((o, i) => {
      const n = isRecord(o) ? o.name : undefined;
      if (typeof n !== "string") throw new TensorError(`outputs[${i}].name must be a string`);
      if (!known.has(n)) {
        const shown = n.length > 64 ? `${n.slice(0, 64)}...` : n;
        const names = [...known];
        const list = names.length > 20 ? `${names.slice(0, 20).join(", ")}, ... (${names.length} in all)` : names.join(", ");
        throw new TensorError(`unknown output '${shown}'; the model's outputs are: ${list}`);
      }
      // Each copy would be computed and sent again: ten copies of a large output once made an
      // answer bigger than a router's frame limit, and the router dropped the node with it.
      if (asked.has(n)) throw new TensorError(`output '${n}' is asked for more than once`);
      asked.add(n);
      return n;
    });
  }
  return { ...(typeof id === "string" ? { id } : {}), inputs: parsed, ...(wanted ? { outputs: wanted } : {}) };
}
