// Builds ONNX model files (serialized ModelProto) from a small plain description, so the demo
// models and test fixtures are generated from code instead of checked in as opaque binaries,
// and without Python's onnx package. A minimal protobuf encoder plus builders for the handful
// of ONNX messages a small graph needs. Field numbers follow onnx/onnx.proto.

/** ONNX TensorProto.DataType values. */
export const OnnxType = {
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
} as const;

// ---------------------------------------------------------------------------------------------
// Protobuf encoding

/**
 * Accumulates one message. Scalars go into a growing scratch buffer; large byte fields and
 * nested messages are kept as references and only copied once, by finish(), so a model with
 * a 100 MB initializer is not copied once per nesting level.
 */
export class ProtoWriter {
  private readonly parts: Uint8Array[] = [];
  private scratch = new Uint8Array(64);
  private used = 0;
  private flushed = 0;

  /** Encoded size so far, in bytes. */
  get length(): number {
    return this.flushed + this.used;
  }

  private ensure(n: number): void {
    if (this.used + n <= this.scratch.length) return;
    const next = new Uint8Array(Math.max(this.scratch.length * 2, this.used + n));
    next.set(this.scratch.subarray(0, this.used));
    this.scratch = next;
  }

  private byte(b: number): void {
    this.ensure(1);
    this.scratch[this.used++] = b;
  }

  /** Closes the scratch buffer so a referenced chunk can follow it in order. */
  private flush(): void {
    if (this.used === 0) return;
    this.parts.push(this.scratch.subarray(0, this.used));
    this.flushed += this.used;
    this.scratch = new Uint8Array(64);
    this.used = 0;
  }

  /** Raw varint; negative numbers are written as 64-bit two's complement (10 bytes), as int64 requires. */
  varint(value: number | bigint): void {
    if (typeof value === "number" && value >= 0 && value <= 0x7fffffff && Number.isInteger(value)) {
      let v = value;
      while (v >= 0x80) {
        this.byte((v & 0x7f) | 0x80);
        v >>>= 7;
      }
      this.byte(v);
      return;
    }
    if (typeof value === "number" && !Number.isSafeInteger(value)) {
      throw new RangeError(`varint value ${value} is not a safe integer`);
    }
    let v = BigInt.asUintN(64, BigInt(value));
    while (v >= 0x80n) {
      this.byte(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    this.byte(Number(v));
  }

  tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  uint64Field(field: number, value: number | bigint): void {
    this.tag(field, 0);
    this.varint(value);
  }

  /** int64/int32/enum/bool fields all share the varint wire type. */
  int64Field(field: number, value: number | bigint): void {
    this.uint64Field(field, value);
  }

  fixed32Field(field: number, bits: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.scratch.buffer, this.scratch.byteOffset).setUint32(this.used, bits >>> 0, true);
    this.used += 4;
  }

  floatField(field: number, value: number): void {
    this.tag(field, 5);
    this.ensure(4);
    new DataView(this.scratch.buffer, this.scratch.byteOffset).setFloat32(this.used, value, true);
    this.used += 4;
  }

  fixed64Field(field: number, value: bigint): void {
    this.tag(field, 1);
    this.ensure(8);
    new DataView(this.scratch.buffer, this.scratch.byteOffset).setBigUint64(this.used, BigInt.asUintN(64, value), true);
    this.used += 8;
  }

  doubleField(field: number, value: number): void {
    this.tag(field, 1);
    this.ensure(8);
    new DataView(this.scratch.buffer, this.scratch.byteOffset).setFloat64(this.used, value, true);
    this.used += 8;
  }

  /** Length-delimited bytes, kept by reference until finish(). */
  bytesField(field: number, bytes: Uint8Array): void {
    this.tag(field, 2);
    this.varint(bytes.length);
    if (bytes.length <= 256) {
      this.ensure(bytes.length);
      this.scratch.set(bytes, this.used);
      this.used += bytes.length;
      return;
    }
    this.flush();
    this.parts.push(bytes);
    this.flushed += bytes.length;
  }

  /** Bytes appended as they are, already encoded fields (or deliberately broken ones, in tests). */
  raw(bytes: Uint8Array): void {
    this.flush();
    this.parts.push(bytes);
    this.flushed += bytes.length;
  }

  stringField(field: number, value: string): void {
    this.bytesField(field, new TextEncoder().encode(value));
  }

  /** An embedded message: its length prefix, then its parts by reference. */
  messageField(field: number, message: ProtoWriter): void {
    message.flush();
    this.tag(field, 2);
    this.varint(message.length);
    this.flush();
    for (const part of message.parts) this.parts.push(part);
    this.flushed += message.flushed;
  }

  /** A packed repeated varint field (one length-delimited run of varints). */
  packedVarints(field: number, values: Iterable<number | bigint>): void {
    const inner = new ProtoWriter();
    for (const v of values) inner.varint(v);
    this.messageField(field, inner);
  }

  /** A packed repeated float (fixed32) field. */
  packedFloats(field: number, values: ArrayLike<number>): void {
    const bytes = new Uint8Array(values.length * 4);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i]!, true);
    this.bytesField(field, bytes);
  }

  /** A packed repeated double (fixed64) field. */
  packedDoubles(field: number, values: ArrayLike<number>): void {
    const bytes = new Uint8Array(values.length * 8);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < values.length; i++) view.setFloat64(i * 8, values[i]!, true);
    this.bytesField(field, bytes);
  }

  /** The encoded message as one contiguous buffer. */
  finish(): Uint8Array {
    this.flush();
    const out = new Uint8Array(this.flushed);
    let at = 0;
    for (const part of this.parts) {
      out.set(part, at);
      at += part.length;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// FP16 helpers (Node 20 has no Float16Array; onnxruntime-node carries FP16 as Uint16Array bits)

// One conversion for the whole project: the protocol's, which the edge uses on FP16 inputs.
import { fromHalfBits, toHalfBits } from "../protocol/tensor.js";
export const float16Bits = toHalfBits;
export const float16Value = fromHalfBits;

// ---------------------------------------------------------------------------------------------
// ONNX messages

/** A dimension: a fixed size, a symbolic name (dim_param) for a dynamic one, or null for unknown. */
export type DimDesc = number | string | null;

export interface ValueInfoDesc {
  name: string;
  /** OnnxType value. */
  elemType: number;
  /** Omit for a tensor of unknown rank (no shape field at all). */
  shape?: DimDesc[];
}

/** Tensor values: numbers (bigint allowed for 64-bit ints), booleans, strings, or raw LE bytes. */
export type TensorValues = ArrayLike<number> | readonly bigint[] | readonly boolean[] | readonly string[] | Uint8Array;

/**
 * Where a tensor's bytes live when they are not in the model file (ONNX "external data"):
 * a file named relative to the model's directory, and the byte range in it.
 */
export interface ExternalDataDesc {
  location: string;
  offset?: number | bigint;
  length?: number | bigint;
  /** Write data_location = EXTERNAL (default true); false writes only the external_data entries. */
  markExternal?: boolean;
}

export interface TensorDesc {
  name: string;
  elemType: number;
  dims: number[];
  /** Uint8Array is taken as raw_data as-is (little-endian), so large weights are not re-encoded. */
  values?: TensorValues;
  /** The data lives in another file; no values are written (give one or the other). */
  external?: ExternalDataDesc;
  /** Protobuf bytes appended verbatim to the TensorProto: for hand-made (hostile) test files. */
  rawFields?: Uint8Array;
}

/** SparseTensorProto: the non-zero values, their indices (INT64) and the dense shape. */
export interface SparseTensorDesc {
  values: TensorDesc;
  indices: TensorDesc;
  dims: number[];
}

export type AttributeDesc =
  | { name: string; f: number }
  | { name: string; i: number | bigint }
  | { name: string; s: string }
  | { name: string; t: TensorDesc }
  | { name: string; floats: number[] }
  | { name: string; ints: (number | bigint)[] }
  | { name: string; strings: string[] }
  | { name: string; g: GraphDesc }
  | { name: string; graphs: GraphDesc[] }
  | { name: string; tensors: TensorDesc[] }
  | { name: string; sparse: SparseTensorDesc };

export interface NodeDesc {
  opType: string;
  inputs: string[];
  outputs: string[];
  name?: string;
  domain?: string;
  attributes?: AttributeDesc[];
}

export interface GraphDesc {
  name: string;
  nodes: NodeDesc[];
  inputs: ValueInfoDesc[];
  outputs: ValueInfoDesc[];
  initializers?: TensorDesc[];
  sparseInitializers?: SparseTensorDesc[];
}

/** A model-local function (FunctionProto), called by nodes whose op_type/domain name it. */
export interface FunctionDesc {
  name: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  nodes: NodeDesc[];
  /** Default-domain opset the body uses; default 17. */
  opsetVersion?: number;
}

export interface ModelDesc {
  graph: GraphDesc;
  /** Default 8. */
  irVersion?: number;
  /** Version of the default-domain opset; default 17. */
  opsetVersion?: number;
  /** Default "inference-mesh". */
  producerName?: string;
  producerVersion?: string;
  docString?: string;
  functions?: FunctionDesc[];
  /** Protobuf bytes appended verbatim to the ModelProto: for hand-made (hostile) test files. */
  rawFields?: Uint8Array;
}

/** Bytes per element for raw_data, by OnnxType; STRING has no raw form. */
const RAW_WIDTH: Readonly<Record<number, number>> = {
  [OnnxType.FLOAT]: 4,
  [OnnxType.UINT8]: 1,
  [OnnxType.INT8]: 1,
  [OnnxType.UINT16]: 2,
  [OnnxType.INT16]: 2,
  [OnnxType.INT32]: 4,
  [OnnxType.INT64]: 8,
  [OnnxType.BOOL]: 1,
  [OnnxType.FLOAT16]: 2,
  [OnnxType.DOUBLE]: 8,
  [OnnxType.UINT32]: 4,
  [OnnxType.UINT64]: 8,
  [OnnxType.BFLOAT16]: 2,
};

/** Little-endian raw_data for numeric/bool tensors (ONNX stores raw_data little-endian). */
export function rawTensorData(elemType: number, values: TensorValues): Uint8Array {
  if (values instanceof Uint8Array) return values;
  const width = RAW_WIDTH[elemType];
  if (width === undefined) throw new Error(`no raw_data encoding for ONNX element type ${elemType}`);
  const bytes = new Uint8Array(values.length * width);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (typeof v === "string") throw new Error("string values need elemType STRING");
    const at = i * width;
    switch (elemType) {
      case OnnxType.FLOAT:
        view.setFloat32(at, Number(v), true);
        break;
      case OnnxType.DOUBLE:
        view.setFloat64(at, Number(v), true);
        break;
      case OnnxType.FLOAT16:
        view.setUint16(at, float16Bits(Number(v)), true);
        break;
      case OnnxType.BFLOAT16:
        // Truncating bfloat16 (the top half of the float32), enough for fixtures.
        view.setUint16(at, new Uint16Array(new Float32Array([Number(v)]).buffer)[1]!, true);
        break;
      case OnnxType.INT64:
        view.setBigInt64(at, BigInt(v as number | bigint), true);
        break;
      case OnnxType.UINT64:
        view.setBigUint64(at, BigInt(v as number | bigint), true);
        break;
      case OnnxType.INT32:
        view.setInt32(at, Number(v), true);
        break;
      case OnnxType.UINT32:
        view.setUint32(at, Number(v), true);
        break;
      case OnnxType.INT16:
        view.setInt16(at, Number(v), true);
        break;
      case OnnxType.UINT16:
        view.setUint16(at, Number(v), true);
        break;
      case OnnxType.INT8:
        view.setInt8(at, Number(v));
        break;
      case OnnxType.UINT8:
      case OnnxType.BOOL:
        view.setUint8(at, Number(v));
        break;
    }
  }
  return bytes;
}

/**
 * TensorProto: dims=1, data_type=2, string_data=6, name=8, raw_data=9, external_data=13
 * (StringStringEntryProto: key=1, value=2), data_location=14 (EXTERNAL = 1).
 */
export function tensorProto(t: TensorDesc): ProtoWriter {
  const w = new ProtoWriter();
  for (const d of t.dims) w.int64Field(1, d);
  w.int64Field(2, t.elemType);
  w.stringField(8, t.name);
  if (t.external !== undefined) {
    const entry = (key: string, value: string) => {
      const e = new ProtoWriter();
      e.stringField(1, key);
      e.stringField(2, value);
      w.messageField(13, e);
    };
    entry("location", t.external.location);
    if (t.external.offset !== undefined) entry("offset", String(t.external.offset));
    if (t.external.length !== undefined) entry("length", String(t.external.length));
    if (t.external.markExternal !== false) w.int64Field(14, 1);
  } else if (t.values !== undefined) {
    if (t.elemType === OnnxType.STRING) {
      // Strings cannot go in raw_data; each is one string_data entry.
      for (const s of t.values as readonly string[]) w.stringField(6, s);
    } else {
      w.bytesField(9, rawTensorData(t.elemType, t.values));
    }
  } else if (t.rawFields === undefined) {
    throw new Error(`tensor '${t.name}' needs values, external or rawFields`);
  }
  if (t.rawFields !== undefined) w.raw(t.rawFields);
  return w;
}

/** SparseTensorProto: values=1, indices=2, dims=3. */
export function sparseTensorProto(t: SparseTensorDesc): ProtoWriter {
  const w = new ProtoWriter();
  w.messageField(1, tensorProto(t.values));
  w.messageField(2, tensorProto(t.indices));
  for (const d of t.dims) w.int64Field(3, d);
  return w;
}

/** ValueInfoProto: name=1, type=2 -> TypeProto.tensor_type=1 -> elem_type=1, shape=2 -> dim=1. */
export function valueInfoProto(v: ValueInfoDesc): ProtoWriter {
  const tensorType = new ProtoWriter();
  tensorType.int64Field(1, v.elemType);
  if (v.shape !== undefined) {
    const shape = new ProtoWriter();
    for (const d of v.shape) {
      const dim = new ProtoWriter();
      if (typeof d === "string") dim.stringField(2, d);
      else if (d !== null) dim.int64Field(1, d);
      shape.messageField(1, dim);
    }
    tensorType.messageField(2, shape);
  }
  const type = new ProtoWriter();
  type.messageField(1, tensorType);
  const w = new ProtoWriter();
  w.stringField(1, v.name);
  w.messageField(2, type);
  return w;
}

/** AttributeProto.AttributeType values. */
const ATTR_TYPE = {
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
  SPARSE_TENSOR: 11,
} as const;

/**
 * AttributeProto: name=1, f=2, i=3, s=4, t=5, g=6, floats=7, ints=8, strings=9, tensors=10,
 * graphs=11, type=20, sparse_tensor=22.
 */
export function attributeProto(a: AttributeDesc): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, a.name);
  if ("f" in a) {
    w.floatField(2, a.f);
    w.int64Field(20, ATTR_TYPE.FLOAT);
  } else if ("i" in a) {
    w.int64Field(3, a.i);
    w.int64Field(20, ATTR_TYPE.INT);
  } else if ("s" in a) {
    w.stringField(4, a.s);
    w.int64Field(20, ATTR_TYPE.STRING);
  } else if ("t" in a) {
    w.messageField(5, tensorProto(a.t));
    w.int64Field(20, ATTR_TYPE.TENSOR);
  } else if ("floats" in a) {
    for (const f of a.floats) w.floatField(7, f);
    w.int64Field(20, ATTR_TYPE.FLOATS);
  } else if ("ints" in a) {
    for (const i of a.ints) w.int64Field(8, i);
    w.int64Field(20, ATTR_TYPE.INTS);
  } else if ("g" in a) {
    w.messageField(6, graphProto(a.g));
    w.int64Field(20, ATTR_TYPE.GRAPH);
  } else if ("graphs" in a) {
    for (const g of a.graphs) w.messageField(11, graphProto(g));
    w.int64Field(20, ATTR_TYPE.GRAPHS);
  } else if ("tensors" in a) {
    for (const t of a.tensors) w.messageField(10, tensorProto(t));
    w.int64Field(20, ATTR_TYPE.TENSORS);
  } else if ("sparse" in a) {
    w.messageField(22, sparseTensorProto(a.sparse));
    w.int64Field(20, ATTR_TYPE.SPARSE_TENSOR);
  } else {
    for (const s of a.strings) w.stringField(9, s);
    w.int64Field(20, ATTR_TYPE.STRINGS);
  }
  return w;
}

/** NodeProto: input=1, output=2, name=3, op_type=4, attribute=5, domain=7. */
export function nodeProto(n: NodeDesc): ProtoWriter {
  const w = new ProtoWriter();
  for (const i of n.inputs) w.stringField(1, i);
  for (const o of n.outputs) w.stringField(2, o);
  if (n.name !== undefined) w.stringField(3, n.name);
  w.stringField(4, n.opType);
  for (const a of n.attributes ?? []) w.messageField(5, attributeProto(a));
  if (n.domain !== undefined) w.stringField(7, n.domain);
  return w;
}

/** GraphProto: node=1, name=2, initializer=5, input=11, output=12, sparse_initializer=15. */
export function graphProto(g: GraphDesc): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of g.nodes) w.messageField(1, nodeProto(n));
  w.stringField(2, g.name);
  for (const t of g.initializers ?? []) w.messageField(5, tensorProto(t));
  for (const t of g.sparseInitializers ?? []) w.messageField(15, sparseTensorProto(t));
  for (const v of g.inputs) w.messageField(11, valueInfoProto(v));
  for (const v of g.outputs) w.messageField(12, valueInfoProto(v));
  return w;
}

function opsetProto(domain: string, version: number): ProtoWriter {
  const opset = new ProtoWriter();
  opset.stringField(1, domain);
  opset.int64Field(2, version);
  return opset;
}

/** FunctionProto: name=1, input=4, output=5, node=7, opset_import=9, domain=10. */
export function functionProto(f: FunctionDesc): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, f.name);
  for (const i of f.inputs) w.stringField(4, i);
  for (const o of f.outputs) w.stringField(5, o);
  for (const n of f.nodes) w.messageField(7, nodeProto(n));
  w.messageField(9, opsetProto("", f.opsetVersion ?? 17));
  w.stringField(10, f.domain);
  return w;
}

/**
 * ModelProto: ir_version=1, producer_name=2, producer_version=3, doc_string=6, graph=7,
 * opset_import=8 (OperatorSetIdProto: domain=1, version=2), functions=25.
 */
export function encodeModel(desc: ModelDesc): Uint8Array {
  const w = new ProtoWriter();
  w.int64Field(1, desc.irVersion ?? 8);
  w.stringField(2, desc.producerName ?? "inference-mesh");
  if (desc.producerVersion !== undefined) w.stringField(3, desc.producerVersion);
  if (desc.docString !== undefined) w.stringField(6, desc.docString);
  w.messageField(7, graphProto(desc.graph));
  w.messageField(8, opsetProto("", desc.opsetVersion ?? 17));
  // Each function's domain must be imported too, or onnxruntime refuses the nodes that call it.
  for (const domain of new Set((desc.functions ?? []).map((f) => f.domain))) w.messageField(8, opsetProto(domain, 1));
  for (const f of desc.functions ?? []) w.messageField(25, functionProto(f));
  if (desc.rawFields !== undefined) w.raw(desc.rawFields);
  return w.finish();
}

/**
 * The smallest model whose output is bytes read from another file through ONNX external data:
 * one UINT8 initializer of `length` bytes at `location` (relative to the model's directory),
 * returned by an Identity node as output `leak` [length]. The attack of issue 10 item 1, for
 * tests that check it is refused (the edge) or cannot reach another model (the node).
 */
export function externalDataModel(location: string, length: number, offset = 0): Uint8Array {
  return encodeModel({
    graph: {
      name: "external-data",
      nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["leak"] }],
      inputs: [],
      outputs: [{ name: "leak", elemType: OnnxType.UINT8, shape: [length] }],
      initializers: [{ name: "w", elemType: OnnxType.UINT8, dims: [length], external: { location, offset, length } }],
    },
  });
}
