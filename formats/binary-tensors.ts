// Triton's binary tensor data extension of the Open Inference Protocol (HTTP/REST), as its
// extension_binary_data.md defines it. A request or response body is a JSON object of
// `Inference-Header-Content-Length` bytes followed by raw tensor data, one block per tensor
// that names `parameters.binary_data_size`, in the order the JSON lists them: little-endian,
// row-major, no padding; BOOL one byte (0 or 1); FP16/BF16 their 16 raw bits; BYTES each
// element a 4-byte little-endian length then its bytes. Binary tensors become the typed arrays
// the mesh already moves (msgpack carries them as bytes), so a tensor that arrives binary is
// never turned into JSON numbers on its way to the node and back. Past the edge, tensors travel
// packed in the same layout (PackedTensor): the router checks their sizes and forwards the bytes
// it received without building typed arrays. Pure TS: the Worker uses it.

import { TYPED_ARRAY, type OipDatatype } from "./datatypes.js";
import type { RegionInferResponse } from "../protocol/messages.js";
import { elementCount, TensorError, toJsonTensor, type BinaryTail, type JsonTensor, type TensorData, type WireTensor } from "./tensor.js";

/** The header that gives the JSON part's length, on requests and responses alike. */
export const INFERENCE_HEADER = "inference-header-content-length";

/** Bytes per element of every fixed-size datatype (BYTES is length-prefixed, per element). */
export const ELEMENT_BYTES: Readonly<Record<Exclude<OipDatatype, "BYTES">, number>> = {
  BOOL: 1,
  UINT8: 1,
  INT8: 1,
  UINT16: 2,
  INT16: 2,
  FP16: 2,
  BF16: 2,
  UINT32: 4,
  INT32: 4,
  FP32: 4,
  UINT64: 8,
  INT64: 8,
  FP64: 8,
};

// Typed arrays use the platform's byte order; every target of the mesh (x86-64, arm64, workerd)
// is little-endian, which is what the extension specifies. Refuse to run anywhere else rather
// than send swapped numbers.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error("binary tensors need a little-endian platform");

/** A framing problem of the whole body (not of one tensor): answered 400 bad_request. */
export class BinaryFramingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "BinaryFramingError";
  }
}

/**
 * Splits a body that carries `Inference-Header-Content-Length` into its JSON header text and
 * the binary data after it. The header value must be a decimal integer no larger than the body.
 */
export function splitBinaryBody(body: Uint8Array, headerLength: string): { json: string; binary: Uint8Array } {
  const text = headerLength.trim();
  if (!/^\d{1,15}$/.test(text)) {
    throw new BinaryFramingError(`Inference-Header-Content-Length must be a non-negative integer, got ${JSON.stringify(text.slice(0, 32))}`);
  }
  const n = Number(text);
  if (n > body.byteLength) {
    throw new BinaryFramingError(`Inference-Header-Content-Length is ${n}, but the body has only ${body.byteLength} bytes`);
  }
  return { json: new TextDecoder().decode(body.subarray(0, n)), binary: body.subarray(n) };
}

const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }); // a leading BOM is data here
const encoder = new TextEncoder();

/** `len` bytes at `at` as a typed array of the datatype: a view when aligned, else a copy. */
function typedView(datatype: Exclude<OipDatatype, "BYTES">, bytes: Uint8Array, at: number, len: number): Exclude<TensorData, string[]> {
  const width = ELEMENT_BYTES[datatype];
  let buffer: ArrayBufferLike = bytes.buffer;
  let offset = bytes.byteOffset + at;
  if (offset % width !== 0) {
    // A typed array cannot start at an unaligned offset; the copy is this tensor's only one.
    // Uint8Array's slice, not the argument's: a Node Buffer's slice is a view of a shared pool.
    buffer = Uint8Array.prototype.slice.call(bytes, at, at + len).buffer;
    offset = 0;
  }
  // All the constructors take (buffer, byteOffset, length); the union type cannot say so itself.
  const Typed = TYPED_ARRAY[datatype] as new (buffer: ArrayBufferLike, byteOffset: number, length: number) => Exclude<TensorData, string[]>;
  return new Typed(buffer, offset, len / width);
}

/** Reads BYTES elements (4-byte LE length + bytes each) that must fill `len` bytes exactly. */
function readBytesElements(name: string, bytes: Uint8Array, at: number, len: number, count: number): string[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, len);
  const out = new Array<string>(count);
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 4 > len) {
      throw new TensorError(`input '${name}' (BYTES): binary_data_size ${len} ends inside the length of element ${i} of ${count}`);
    }
    const n = view.getUint32(p, true);
    p += 4;
    if (n > len - p) {
      throw new TensorError(`input '${name}' (BYTES): element ${i} says ${n} bytes, but only ${len - p} of binary_data_size remain`);
    }
    try {
      out[i] = utf8.decode(bytes.subarray(at + p, at + p + n));
    } catch {
      throw new TensorError(`input '${name}' (BYTES): element ${i} is not valid UTF-8 (the mesh carries BYTES as text)`);
    }
    p += n;
  }
  if (p !== len) {
    throw new TensorError(`input '${name}' (BYTES): ${count} elements take ${p} bytes, binary_data_size says ${len}`);
  }
  return out;
}

/**
 * The binary part of a request, consumed input by input in the JSON's order (parseInferRequest
 * calls `take` for each input that names binary_data_size, then `finish`).
 */
export class BinaryInputs implements BinaryTail {
  private at = 0;

  constructor(private readonly bytes: Uint8Array) {}

  take(name: string, datatype: OipDatatype, count: number, size: unknown): TensorData {
    if (typeof size !== "number" || !Number.isInteger(size) || size < 0) {
      throw new TensorError(`input '${name}': parameters.binary_data_size must be a non-negative integer`);
    }
    const left = this.bytes.byteLength - this.at;
    if (size > left) {
      throw new TensorError(`input '${name}': binary_data_size is ${size}, but only ${left} bytes of binary data remain after the earlier inputs`);
    }
    const at = this.at;
    this.at += size;
    if (datatype === "BYTES") return readBytesElements(name, this.bytes, at, size, count);
    const want = count * ELEMENT_BYTES[datatype];
    if (size !== want) {
      throw new TensorError(
        `input '${name}' (${datatype}): binary_data_size is ${size}, the shape needs ${count} elements × ${ELEMENT_BYTES[datatype]} bytes = ${want}`,
      );
    }
    const data = typedView(datatype, this.bytes, at, size);
    if (datatype === "BOOL") {
      const i = (data as Uint8Array).findIndex((b) => b > 1);
      if (i >= 0) throw new TensorError(`input '${name}' (BOOL): element ${i} is byte ${(data as Uint8Array)[i]}, not 0 or 1`);
    }
    return data;
  }

  finish(): void {
    const left = this.bytes.byteLength - this.at;
    if (left > 0) {
      throw new TensorError(`${left} bytes of binary data follow the last binary input (binary_data_size values and the body do not agree)`);
    }
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function flag(value: unknown, where: string): boolean | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "boolean") throw new TensorError(`${where} must be true or false`);
  return value;
}

/**
 * Which outputs the caller wants binary: `parameters.binary_data` on a requested output, else
 * the request's `parameters.binary_data_output`, else JSON.
 */
export function binaryOutputChoice(body: unknown): (name: string) => boolean {
  if (!isRecord(body)) return () => false;
  const all = isRecord(body.parameters) ? flag(body.parameters.binary_data_output, "parameters.binary_data_output") ?? false : false;
  const byName = new Map<string, boolean>();
  if (Array.isArray(body.outputs)) {
    body.outputs.forEach((o, i) => {
      if (!isRecord(o) || typeof o.name !== "string" || !isRecord(o.parameters)) return;
      const b = flag(o.parameters.binary_data, `outputs[${i}].parameters.binary_data`);
      if (b !== undefined) byName.set(o.name, b);
    });
  }
  return (name) => byName.get(name) ?? all;
}

/** A tensor's data as the extension's bytes (a view of the typed array where it can be). */
export function tensorBytes(t: Pick<WireTensor, "datatype" | "data">): Uint8Array {
  const { data } = t;
  if (!Array.isArray(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const parts = data.map((s) => encoder.encode(s));
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.byteLength, 0));
  const view = new DataView(out.buffer);
  let p = 0;
  for (const part of parts) {
    view.setUint32(p, part.byteLength, true);
    out.set(part, p + 4);
    p += 4 + part.byteLength;
  }
  return out;
}

/** An output in the response's JSON part when its data follows in binary. */
export interface BinaryOutputHead {
  name: string;
  datatype: OipDatatype;
  shape: number[];
  parameters: { binary_data_size: number };
}

export interface EncodedResponse {
  /** The whole body: JSON text when no output is binary, else JSON header + data. */
  body: string | Uint8Array<ArrayBuffer>;
  /** Set when `body` is binary: the value of Inference-Header-Content-Length. */
  headerLength?: number;
}

/** A tensor's head in the JSON part when its data follows in binary; its bytes go to `blocks`. */
function binaryHead(t: WireTensor, blocks: Uint8Array[]): BinaryOutputHead {
  const bytes = tensorBytes(t);
  blocks.push(bytes);
  return { name: t.name, datatype: t.datatype, shape: t.shape, parameters: { binary_data_size: bytes.byteLength } };
}

/** The JSON part followed by the binary blocks, in order: the extension's body. */
function binaryBody(json: string, blocks: readonly Uint8Array[]): { body: Uint8Array<ArrayBuffer>; headerLength: number } {
  const header = encoder.encode(json);
  const out = new Uint8Array(header.byteLength + blocks.reduce((n, b) => n + b.byteLength, 0));
  out.set(header, 0);
  let p = header.byteLength;
  for (const b of blocks) {
    out.set(b, p);
    p += b.byteLength;
  }
  return { body: out, headerLength: header.byteLength };
}

/**
 * An inference response with the outputs `asBinary` picks in binary form and the rest as JSON.
 * `head` holds every field of the JSON object but `outputs` (model_name, id, ...).
 */
export function encodeInferResponse(head: Record<string, unknown>, outputs: WireTensor[], asBinary: (name: string) => boolean): EncodedResponse {
  const blocks: Uint8Array[] = [];
  const shown = outputs.map((t): JsonTensor | BinaryOutputHead => (asBinary(t.name) ? binaryHead(t, blocks) : toJsonTensor(t)));
  const json = JSON.stringify({ ...head, outputs: shown });
  return blocks.length === 0 ? { body: json } : binaryBody(json, blocks);
}

/**
 * The client's side, for tests and benches: a request body with the named inputs in binary.
 * `inputs[i].binary` true sends that input's data after the JSON (typed data required then).
 */
export function encodeInferRequest(
  head: Record<string, unknown>,
  inputs: { name: string; datatype: OipDatatype; shape: number[]; data: TensorData | unknown[]; binary?: boolean }[],
): { body: Uint8Array<ArrayBuffer>; headerLength: number } {
  const blocks: Uint8Array[] = [];
  const shown = inputs.map(({ binary, ...t }) => {
    if (!binary) return { ...t, data: ArrayBuffer.isView(t.data) ? toJsonTensor(t as WireTensor).data : t.data };
    return binaryHead(t as WireTensor, blocks);
  });
  return binaryBody(JSON.stringify({ ...head, inputs: shown }), blocks);
}

/** The client's side: splits a binary response and turns its binary outputs into typed data. */
export function decodeInferResponse(body: Uint8Array, headerLength: string | null): { json: Record<string, unknown>; outputs: (WireTensor | JsonTensor)[] } {
  const { json, binary } = headerLength === null ? { json: new TextDecoder().decode(body), binary: new Uint8Array(0) } : splitBinaryBody(body, headerLength);
  const parsed = JSON.parse(json) as Record<string, unknown> & { outputs: (JsonTensor & { parameters?: { binary_data_size?: number } })[] };
  const tail = new BinaryInputs(binary);
  const outputs = parsed.outputs.map((o): WireTensor | JsonTensor => {
    const size = o.parameters?.binary_data_size;
    if (size === undefined) return o;
    const count = o.shape.reduce((a, b) => a * b, 1);
    return { name: o.name, datatype: o.datatype, shape: o.shape, data: tail.take(o.name, o.datatype, count, size) };
  });
  tail.finish();
  return { json: parsed, outputs };
}

// ---------------------------------------------------------------------------------------------
// Packed tensors: the hops past the edge (edge -> region -> node and back)

/**
 * A tensor whose data travels as this extension's bytes for it: little-endian elements, BYTES
 * length-prefixed. A router needs only its size, so it forwards the bytes it decoded without
 * making typed arrays of them or touching an element: one memcpy per hop at most (msgpack
 * carries a Uint8Array as `bin`, decoded as a view, or from Node as a typed-array extension,
 * decoded as one aligned copy, which the node then views as its datatype without another).
 */
export interface PackedTensor {
  name: string;
  datatype: OipDatatype;
  shape: number[];
  bytes: Uint8Array;
}

/** A tensor in its packed form: the bytes are a view of the typed array (strings are encoded). */
export function packTensor(t: WireTensor): PackedTensor {
  return { name: t.name, datatype: t.datatype, shape: t.shape, bytes: tensorBytes(t) };
}

/** A tensor as the hops carry it: packed, or (from older edges and nodes) typed data. */
export type CarriedTensor = WireTensor | PackedTensor;

export function isPacked(t: CarriedTensor): t is PackedTensor {
  return (t as PackedTensor).bytes !== undefined;
}

/** A carried tensor's data bytes in the packed layout (a view; strings are encoded). */
export function carriedBytes(t: CarriedTensor): Uint8Array {
  return isPacked(t) ? t.bytes : tensorBytes(t);
}

/** Typed data from a carried tensor (see unpackTensor); typed data as it is. */
export function toWireTensor(t: CarriedTensor): WireTensor {
  return isPacked(t) ? unpackTensor(t) : t;
}

/** A region's answer with its outputs as typed data (where a caller reads them: the edge, tests). */
export function unpackAnswer(r: RegionInferResponse): RegionInferResponse<WireTensor> {
  return r.ok ? { ...r, outputs: r.outputs.map(toWireTensor) } : r;
}

/**
 * Why a packed tensor's bytes cannot be its shape's elements, or null when they can: the exact
 * byte count for fixed-size datatypes; for BYTES, length prefixes that fill the bytes with
 * exactly as many elements as the shape holds. Reads no element's value otherwise.
 */
export function packedSizeError(t: PackedTensor): string | null {
  if (!t.shape.every((d) => Number.isInteger(d) && d >= 0)) return `tensor '${t.name}': shape must be non-negative integers`;
  const count = elementCount(t.shape);
  const len = t.bytes.byteLength;
  if (t.datatype !== "BYTES") {
    const want = count * ELEMENT_BYTES[t.datatype];
    return len === want ? null : `tensor '${t.name}' (${t.datatype}, shape [${t.shape}]) needs ${want} bytes, it has ${len}`;
  }
  const view = new DataView(t.bytes.buffer, t.bytes.byteOffset, len);
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 4 > len) return `tensor '${t.name}' (BYTES): its bytes end inside element ${i} of ${count}`;
    p += 4 + view.getUint32(p, true);
    if (p > len) return `tensor '${t.name}' (BYTES): element ${i} runs past its bytes`;
  }
  return p === len ? null : `tensor '${t.name}' (BYTES): ${count} elements take ${p} bytes, it has ${len}`;
}

/**
 * A packed tensor as typed data for the runtime (or a caller): a view of its bytes when they are
 * aligned for the datatype, else one copy; BYTES decoded as UTF-8. Throws TensorError when the
 * bytes do not fit the shape.
 */
export function unpackTensor(t: PackedTensor): WireTensor {
  const tail = new BinaryInputs(t.bytes);
  const data = tail.take(t.name, t.datatype, elementCount(t.shape), t.bytes.byteLength);
  return { name: t.name, datatype: t.datatype, shape: t.shape, data };
}
