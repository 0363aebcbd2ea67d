// Builds ONNX model files (serialized ModelProto) from a small plain description, so the demo
// models and test fixtures are generated from code instead of checked in as opaque binaries,
// and without Python's onnx package. The messages are onnx-proto's (ONNX's own onnx.proto
// compiled by protobufjs) and so is the encoding; this file only maps the plain description
// onto them. protobufjs copies each byte field once, when the model is finished, so a model
// with a 100 MB initializer is not copied once per nesting level.
import protobuf from "protobufjs/minimal.js";
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

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
// FP16 helpers (Node 20 has no Float16Array; onnxruntime-node carries FP16 as Uint16Array bits)

// One conversion for the whole project: the protocol's, which the edge uses on FP16 inputs.
import { fromHalfBits, toHalfBits } from "../formats/tensor.js";
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

/** int64 fields: protobufjs takes numbers, or Longs for what a double cannot hold. */
function int64(v: number | bigint): number | protobuf.Long {
  return typeof v === "number" ? v : Long.fromString(BigInt.asIntN(64, v).toString());
}
// protobufjs carries the "long" package it depends on; its typings only say "a constructor".
const Long = protobuf.util.Long as unknown as { fromString(text: string): protobuf.Long };

const utf8 = (text: string) => new TextEncoder().encode(text);

/**
 * TensorProto. `rawFields` (hand-made test files) are read as more TensorProto fields and
 * merged in, as any reader of the appended bytes would; bytes that are not a valid TensorProto
 * cannot be built this way (write those with a raw protobuf writer).
 */
function tensor(t: TensorDesc): InstanceType<typeof onnx.TensorProto> {
  const m = onnx.TensorProto.create({ dims: t.dims.map(int64), dataType: t.elemType, name: t.name });
  if (t.external !== undefined) {
    const entries: [string, string | number | bigint | undefined][] = [["location", t.external.location], ["offset", t.external.offset], ["length", t.external.length]];
    m.externalData = entries.filter(([, v]) => v !== undefined).map(([key, v]) => onnx.StringStringEntryProto.create({ key, value: String(v) }));
    if (t.external.markExternal !== false) m.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  } else if (t.values !== undefined) {
    // Strings cannot go in raw_data; each is one string_data entry.
    if (t.elemType === OnnxType.STRING) m.stringData = (t.values as readonly string[]).map(utf8);
    else m.rawData = rawTensorData(t.elemType, t.values);
  } else if (t.rawFields === undefined) {
    throw new Error(`tensor '${t.name}' needs values, external or rawFields`);
  }
  if (t.rawFields === undefined || t.rawFields.length === 0) return m;
  const own = onnx.TensorProto.encode(m).finish();
  const merged = new Uint8Array(own.length + t.rawFields.length);
  merged.set(own);
  merged.set(t.rawFields, own.length);
  return onnx.TensorProto.decode(merged);
}

function sparseTensor(t: SparseTensorDesc): InstanceType<typeof onnx.SparseTensorProto> {
  return onnx.SparseTensorProto.create({ values: tensor(t.values), indices: tensor(t.indices), dims: t.dims.map(int64) });
}

function valueInfo(v: ValueInfoDesc): InstanceType<typeof onnx.ValueInfoProto> {
  const shape =
    v.shape === undefined
      ? null
      : onnx.TensorShapeProto.create({
          dim: v.shape.map((d) => onnx.TensorShapeProto.Dimension.create(typeof d === "string" ? { dimParam: d } : d === null ? {} : { dimValue: d })),
        });
  return onnx.ValueInfoProto.create({ name: v.name, type: { tensorType: { elemType: v.elemType, shape } } });
}

const ATTR = onnx.AttributeProto.AttributeType;

function attribute(a: AttributeDesc): InstanceType<typeof onnx.AttributeProto> {
  const m = onnx.AttributeProto.create({ name: a.name });
  if ("f" in a) Object.assign(m, { f: a.f, type: ATTR.FLOAT });
  else if ("i" in a) Object.assign(m, { i: int64(a.i), type: ATTR.INT });
  else if ("s" in a) Object.assign(m, { s: utf8(a.s), type: ATTR.STRING });
  else if ("t" in a) Object.assign(m, { t: tensor(a.t), type: ATTR.TENSOR });
  else if ("floats" in a) Object.assign(m, { floats: a.floats, type: ATTR.FLOATS });
  else if ("ints" in a) Object.assign(m, { ints: a.ints.map(int64), type: ATTR.INTS });
  else if ("g" in a) Object.assign(m, { g: graph(a.g), type: ATTR.GRAPH });
  else if ("graphs" in a) Object.assign(m, { graphs: a.graphs.map(graph), type: ATTR.GRAPHS });
  else if ("tensors" in a) Object.assign(m, { tensors: a.tensors.map(tensor), type: ATTR.TENSORS });
  else if ("sparse" in a) Object.assign(m, { sparseTensor: sparseTensor(a.sparse), type: ATTR.SPARSE_TENSOR });
  else Object.assign(m, { strings: a.strings.map(utf8), type: ATTR.STRINGS });
  return m;
}

function node(n: NodeDesc): InstanceType<typeof onnx.NodeProto> {
  return onnx.NodeProto.create({
    input: n.inputs,
    output: n.outputs,
    ...(n.name !== undefined ? { name: n.name } : {}),
    opType: n.opType,
    attribute: (n.attributes ?? []).map(attribute),
    ...(n.domain !== undefined ? { domain: n.domain } : {}),
  });
}

function graph(g: GraphDesc): InstanceType<typeof onnx.GraphProto> {
  return onnx.GraphProto.create({
    node: g.nodes.map(node),
    name: g.name,
    initializer: (g.initializers ?? []).map(tensor),
    sparseInitializer: (g.sparseInitializers ?? []).map(sparseTensor),
    input: g.inputs.map(valueInfo),
    output: g.outputs.map(valueInfo),
  });
}

const opset = (domain: string, version: number) => onnx.OperatorSetIdProto.create({ domain, version });

function fn(f: FunctionDesc): InstanceType<typeof onnx.FunctionProto> {
  return onnx.FunctionProto.create({
    name: f.name,
    input: f.inputs,
    output: f.outputs,
    node: f.nodes.map(node),
    opsetImport: [opset("", f.opsetVersion ?? 17)],
    domain: f.domain,
  });
}

/** The ModelProto message for `desc` (without rawFields), e.g. to compare against a decoder. */
export function modelProto(desc: ModelDesc): InstanceType<typeof onnx.ModelProto> {
  const functions = desc.functions ?? [];
  return onnx.ModelProto.create({
    irVersion: desc.irVersion ?? 8,
    producerName: desc.producerName ?? "inference-mesh",
    ...(desc.producerVersion !== undefined ? { producerVersion: desc.producerVersion } : {}),
    ...(desc.docString !== undefined ? { docString: desc.docString } : {}),
    graph: graph(desc.graph),
    // Each function's domain must be imported too, or onnxruntime refuses the nodes that call it.
    opsetImport: [opset("", desc.opsetVersion ?? 17), ...[...new Set(functions.map((f) => f.domain))].map((d) => opset(d, 1))],
    functions: functions.map(fn),
  });
}

/**
 * Under Node protobufjs hands back a Buffer, whose slice() is a view, not a copy as a
 * Uint8Array's is: callers that slice the model and then reuse the slice would write into it.
 */
const plain = (bytes: Uint8Array): Uint8Array => (Buffer.isBuffer(bytes) ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) : bytes);

export function encodeModel(desc: ModelDesc): Uint8Array {
  const bytes = plain(onnx.ModelProto.encode(modelProto(desc)).finish());
  if (desc.rawFields === undefined) return bytes;
  // Appended fields are read after (and merged with) the ones written above.
  const out = new Uint8Array(bytes.length + desc.rawFields.length);
  out.set(bytes);
  out.set(desc.rawFields, bytes.length);
  return out;
}

/** Encoded messages, for tests that splice them into hand-made (hostile) protobuf bytes. */
export const tensorProto = (t: TensorDesc): Uint8Array => plain(onnx.TensorProto.encode(tensor(t)).finish());
export const valueInfoProto = (v: ValueInfoDesc): Uint8Array => plain(onnx.ValueInfoProto.encode(valueInfo(v)).finish());
export const attributeProto = (a: AttributeDesc): Uint8Array => plain(onnx.AttributeProto.encode(attribute(a)).finish());
export const graphProto = (g: GraphDesc): Uint8Array => plain(onnx.GraphProto.encode(graph(g)).finish());

/** The library's decoder, for cross-checking our streaming reader (formats/onnx-signature.ts). */
export function decodeModel(bytes: Uint8Array): InstanceType<typeof onnx.ModelProto> {
  return onnx.ModelProto.decode(bytes);
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
