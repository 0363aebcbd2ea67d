// Reads an ONNX model file's signature (its graph inputs and outputs, with OIP datatypes and
// shapes) without onnxruntime, so the edge Worker can check an upload before storing it and
// the router can describe a model it has never loaded. It is a minimal protobuf reader for
// just the ModelProto fields it needs: everything else is skipped by wire type, never decoded,
// so a 100 MB model costs one pass over its field headers (weights are jumped over, not copied).
// Pure TS on Uint8Array: no Node-only APIs, since it runs inside a Cloudflare Worker too.

import type { ModelSignature, OipDatatype, TensorSpec } from "./datatypes.js";
import { ONNX_ELEM_TO_OIP } from "./datatypes.js";

/** The file is not an ONNX model, is damaged, or declares something OIP cannot carry. */
export class OnnxParseError extends Error {
  override name = "OnnxParseError";
}

export interface OnnxModelInfo extends ModelSignature {
  irVersion: number;
  /** Version of the default ("" / "ai.onnx") operator set; null when the model imports none. */
  opsetVersion: number | null;
  producer: string | null;
}

// Protobuf wire types (https://protobuf.dev/programming-guides/encoding/).
const VARINT = 0;
const FIXED64 = 1;
const LEN = 2;
const FIXED32 = 5;

/** ONNX TensorProto.DataType names, only for error messages. */
const ONNX_ELEM_NAMES: Readonly<Record<number, string>> = {
  0: "UNDEFINED",
  1: "FLOAT",
  2: "UINT8",
  3: "INT8",
  4: "UINT16",
  5: "INT16",
  6: "INT32",
  7: "INT64",
  8: "STRING",
  9: "BOOL",
  10: "FLOAT16",
  11: "DOUBLE",
  12: "UINT32",
  13: "UINT64",
  14: "COMPLEX64",
  15: "COMPLEX128",
  16: "BFLOAT16",
  17: "FLOAT8E4M3FN",
  18: "FLOAT8E4M3FNUZ",
  19: "FLOAT8E5M2",
  20: "FLOAT8E5M2FNUZ",
  21: "UINT4",
  22: "INT4",
  23: "FLOAT4E2M1",
};

function invalid(why: string): OnnxParseError {
  return new OnnxParseError(`not a valid ONNX model: ${why}`);
}

function unsupported(why: string): OnnxParseError {
  return new OnnxParseError(`unsupported ONNX model: ${why}`);
}

// fatal: bad UTF-8 in a name is a damaged file, not something to paper over with U+FFFD.
// ignoreBOM: keep a leading U+FEFF as protobuf itself would (both named: workers-types needs it).
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * A cursor over the whole file. Every read takes the end of the message it is inside, so a
 * field can never read past its enclosing message, let alone past the file.
 */
class Reader {
  pos = 0;
  /** Wire type of the field header that tag() read last. */
  wire = 0;
  constructor(readonly buf: Uint8Array) {}

  /**
   * Unsigned varint as a Number. Exact up to 2^53; larger values (only possible in a damaged
   * or hostile file here) come out approximate, which is fine since any length that large is
   * rejected as past the end anyway.
   */
  varint(end: number): number {
    const buf = this.buf;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw invalid("a number is cut off (truncated file?)");
      const b = buf[this.pos++]!;
      if (i === 9 && b > 1) throw invalid("a number is longer than 64 bits");
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw invalid("a number is longer than 64 bits");
  }

  /** Signed int64 varint (two's complement) as a BigInt, for values whose sign matters. */
  int64(end: number): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw invalid("a number is cut off (truncated file?)");
      const b = this.buf[this.pos++]!;
      if (i === 9 && b > 1) throw invalid("a number is longer than 64 bits");
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asIntN(64, result);
      shift += 7n;
    }
    throw invalid("a number is longer than 64 bits");
  }

  /** Reads a field header; returns the field number and leaves the wire type in `wire`. */
  tag(end: number): number {
    const tag = this.varint(end);
    const field = Math.floor(tag / 8);
    this.wire = tag % 8;
    if (field === 0 || field > 0x1fffffff) throw invalid(`bad protobuf field number ${field}`);
    // Checked here, once for every field, so known and unknown fields fail the same way.
    if (this.wire === 3 || this.wire === 4) {
      // Groups are a proto2 relic that ONNX never uses; seeing one means this isn't ONNX.
      throw invalid(`field ${field} uses a protobuf group (wire type ${this.wire}), which ONNX never does`);
    }
    if (this.wire > FIXED32) throw invalid(`field ${field} has an invalid protobuf wire type ${this.wire}`);
    return field;
  }

  /** Reads a length prefix and returns the end offset of the bytes it announces. */
  lengthEnd(end: number, what: string): number {
    const len = this.varint(end);
    if (len > end - this.pos) throw invalid(`${what} runs past the end of its data (truncated file?)`);
    return this.pos + len;
  }

  string(end: number, what: string): string {
    const stop = this.lengthEnd(end, what);
    const start = this.pos;
    this.pos = stop;
    try {
      return utf8.decode(this.buf.subarray(start, stop));
    } catch {
      throw invalid(`${what} is not valid UTF-8`);
    }
  }

  /** Jumps over one field's value of the current wire type without decoding it. */
  skip(end: number, what: string): void {
    switch (this.wire) {
      case VARINT:
        this.varint(end);
        return;
      case FIXED64:
        if (end - this.pos < 8) throw invalid(`${what} runs past the end of its data (truncated file?)`);
        this.pos += 8;
        return;
      case LEN:
        this.pos = this.lengthEnd(end, what);
        return;
      case FIXED32:
        if (end - this.pos < 4) throw invalid(`${what} runs past the end of its data (truncated file?)`);
        this.pos += 4;
        return;
      default:
        throw invalid(`${what} has an invalid protobuf wire type ${this.wire}`);
    }
  }

  /** Checks that a known field arrived with the wire type the ONNX schema gives it. */
  expect(wire: number, what: string): void {
    if (this.wire !== wire) {
      throw invalid(`${what} has protobuf wire type ${this.wire}, expected ${wire}`);
    }
  }
}

/** A graph input or output as declared, before it is checked and turned into a TensorSpec. */
interface RawValueInfo {
  name: string;
  /** Set when the type is a tensor; undefined for sequences, maps, optionals, sparse tensors. */
  elemType: number | undefined;
  /** Which non-tensor kind it is, for the error message. */
  otherKind: string | undefined;
  /** Undefined when the tensor declares no shape at all (unknown rank). */
  shape: number[] | undefined;
}

interface RawGraph {
  inputs: RawValueInfo[];
  outputs: RawValueInfo[];
  initializerNames: Set<string>;
}

/**
 * Reads the signature of an ONNX model (a serialized ModelProto). Throws OnnxParseError with
 * a human-readable message if the bytes are not a well-formed ONNX model or the model uses a
 * tensor type that has no OIP datatype.
 */
export function readOnnxSignature(bytes: Uint8Array): OnnxModelInfo {
  if (bytes.length === 0) throw invalid("the file is empty");
  try {
    return parseModel(bytes);
  } catch (err) {
    // Judged only after the protobuf parse failed, so a real model is never mistaken for text.
    if (err instanceof OnnxParseError && looksLikeText(bytes)) {
      throw invalid("the file is text (JSON, HTML or similar), not a binary ONNX protobuf");
    }
    throw err;
  }
}

function parseModel(bytes: Uint8Array): OnnxModelInfo {
  const r = new Reader(bytes);
  const end = bytes.length;
  let irVersion: number | undefined;
  let producer: string | null = null;
  let opsetVersion: number | null = null;
  let graph: RawGraph | undefined;

  while (r.pos < end) {
    const field = r.tag(end);
    switch (field) {
      case 1:
        r.expect(VARINT, "ModelProto.ir_version");
        irVersion = r.varint(end);
        break;
      case 2:
        r.expect(LEN, "ModelProto.producer_name");
        producer = r.string(end, "ModelProto.producer_name");
        break;
      case 7: {
        r.expect(LEN, "ModelProto.graph");
        const stop = r.lengthEnd(end, "the model's graph");
        // Protobuf merges repeated occurrences of a message field; passing the same
        // accumulator does exactly that for the lists we keep.
        graph = readGraph(r, stop, graph ?? { inputs: [], outputs: [], initializerNames: new Set() });
        break;
      }
      case 8: {
        r.expect(LEN, "ModelProto.opset_import");
        const stop = r.lengthEnd(end, "an opset_import entry");
        const opset = readOpset(r, stop);
        if (opset.domain === "" || opset.domain === "ai.onnx") opsetVersion = opset.version;
        break;
      }
      default:
        r.skip(end, `ModelProto field ${field}`);
    }
  }

  if (irVersion === undefined || irVersion === 0) throw invalid("ir_version is missing");
  if (!Number.isSafeInteger(irVersion)) throw invalid(`ir_version ${irVersion} is out of range`);
  if (!graph) throw invalid("the model has no graph");
  if (graph.outputs.length === 0) throw invalid("the graph declares no outputs");

  // Older exporters (IR < 4) list every weight as a graph input too; those are initializers
  // with a default value, not something a client must send.
  const inputs = graph.inputs
    .filter((v) => !graph.initializerNames.has(v.name))
    .map((v) => toTensorSpec(v, "input"));
  const outputs = graph.outputs.map((v) => toTensorSpec(v, "output"));
  checkUnique(inputs, "input");
  checkUnique(outputs, "output");

  return { inputs, outputs, irVersion, opsetVersion, producer };
}

/** Whether the file opens (after whitespace) the way JSON, XML or HTML text does. */
function looksLikeText(bytes: Uint8Array): boolean {
  let i = 0;
  while (i < bytes.length && i < 64 && isSpace(bytes[i]!)) i++;
  const c = bytes[i];
  // '{' and '[' open JSON; '<' opens XML/HTML (an error page saved as the model, say).
  return c === 0x7b || c === 0x5b || c === 0x3c;
}

function isSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

function readOpset(r: Reader, end: number): { domain: string; version: number | null } {
  let domain = "";
  let version: number | null = null;
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(LEN, "OperatorSetIdProto.domain");
      domain = r.string(end, "an opset domain");
    } else if (field === 2) {
      r.expect(VARINT, "OperatorSetIdProto.version");
      version = r.varint(end);
    } else {
      r.skip(end, `OperatorSetIdProto field ${field}`);
    }
  }
  return { domain, version };
}

function readGraph(r: Reader, end: number, g: RawGraph): RawGraph {
  while (r.pos < end) {
    const field = r.tag(end);
    switch (field) {
      case 5: {
        // initializer (TensorProto): only its name matters; raw_data is jumped over.
        r.expect(LEN, "GraphProto.initializer");
        const stop = r.lengthEnd(end, "an initializer");
        const name = readTensorName(r, stop);
        if (name !== undefined) g.initializerNames.add(name);
        break;
      }
      case 15: {
        // sparse_initializer (SparseTensorProto): its name lives in values (field 1).
        r.expect(LEN, "GraphProto.sparse_initializer");
        const stop = r.lengthEnd(end, "a sparse initializer");
        while (r.pos < stop) {
          const f = r.tag(stop);
          if (f === 1) {
            r.expect(LEN, "SparseTensorProto.values");
            const valuesEnd = r.lengthEnd(stop, "a sparse initializer's values");
            const name = readTensorName(r, valuesEnd);
            if (name !== undefined) g.initializerNames.add(name);
          } else {
            r.skip(stop, `SparseTensorProto field ${f}`);
          }
        }
        break;
      }
      case 11:
      case 12: {
        const kind = field === 11 ? "input" : "output";
        r.expect(LEN, `GraphProto.${kind}`);
        const stop = r.lengthEnd(end, `a graph ${kind}`);
        (field === 11 ? g.inputs : g.outputs).push(readValueInfo(r, stop, kind));
        break;
      }
      default:
        // node (1), name (2), value_info (13), doc_string, ... are not part of the signature.
        r.skip(end, `GraphProto field ${field}`);
    }
  }
  return g;
}

function readTensorName(r: Reader, end: number): string | undefined {
  let name: string | undefined;
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 8) {
      r.expect(LEN, "TensorProto.name");
      name = r.string(end, "an initializer name");
    } else {
      r.skip(end, `TensorProto field ${field}`);
    }
  }
  return name;
}

function readValueInfo(r: Reader, end: number, kind: string): RawValueInfo {
  const v: RawValueInfo = { name: "", elemType: undefined, otherKind: undefined, shape: undefined };
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(LEN, "ValueInfoProto.name");
      v.name = r.string(end, `a graph ${kind} name`);
    } else if (field === 2) {
      r.expect(LEN, "ValueInfoProto.type");
      readType(r, r.lengthEnd(end, `the type of a graph ${kind}`), v);
    } else {
      r.skip(end, `ValueInfoProto field ${field}`);
    }
  }
  return v;
}

/** TypeProto's value oneof, by field number, for naming what a non-tensor value is. */
const NON_TENSOR_KINDS: Readonly<Record<number, string>> = {
  4: "a sequence",
  5: "a map",
  8: "a sparse tensor",
  9: "an optional",
};

function readType(r: Reader, end: number, v: RawValueInfo): void {
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(LEN, "TypeProto.tensor_type");
      readTensorType(r, r.lengthEnd(end, "a tensor type"), v);
    } else {
      const other = NON_TENSOR_KINDS[field];
      if (other !== undefined) v.otherKind = other;
      r.skip(end, `TypeProto field ${field}`);
    }
  }
}

function readTensorType(r: Reader, end: number, v: RawValueInfo): void {
  // A tensor_type that is present but empty still makes this a tensor (of undefined type).
  v.elemType ??= 0;
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(VARINT, "TypeProto.Tensor.elem_type");
      v.elemType = r.varint(end);
    } else if (field === 2) {
      r.expect(LEN, "TypeProto.Tensor.shape");
      v.shape = readShape(r, r.lengthEnd(end, "a tensor shape"), v.shape ?? []);
    } else {
      r.skip(end, `TypeProto.Tensor field ${field}`);
    }
  }
}

function readShape(r: Reader, end: number, dims: number[]): number[] {
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(LEN, "TensorShapeProto.dim");
      dims.push(readDim(r, r.lengthEnd(end, "a shape dimension")));
    } else {
      r.skip(end, `TensorShapeProto field ${field}`);
    }
  }
  return dims;
}

/** One dimension: its dim_value, or -1 when it is symbolic (dim_param) or left unset. */
function readDim(r: Reader, end: number): number {
  let dim = -1;
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(VARINT, "Dimension.dim_value");
      const value = r.int64(end);
      // Some exporters write -1 for "dynamic"; any negative value can only mean that.
      if (value < 0n) dim = -1;
      else if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`a dimension of ${value} is out of range`);
      else dim = Number(value);
    } else if (field === 2) {
      r.expect(LEN, "Dimension.dim_param");
      r.skip(end, "Dimension.dim_param");
      dim = -1;
    } else {
      r.skip(end, `Dimension field ${field}`);
    }
  }
  return dim;
}

function toTensorSpec(v: RawValueInfo, kind: "input" | "output"): TensorSpec {
  if (v.name === "") throw invalid(`a graph ${kind} has no name`);
  const label = `${kind} '${v.name}'`;
  if (v.elemType === undefined) {
    if (v.otherKind !== undefined) throw unsupported(`${label} is ${v.otherKind}, not a tensor`);
    throw invalid(`${label} has no type`);
  }
  if (v.elemType === 0) throw invalid(`${label} has no element type`);
  const datatype: OipDatatype | undefined = ONNX_ELEM_TO_OIP[v.elemType];
  if (datatype === undefined) {
    const typeName = ONNX_ELEM_NAMES[v.elemType] ?? `element type ${v.elemType}`;
    throw unsupported(`${label} has type ${typeName}, which the Open Inference Protocol cannot carry`);
  }
  // No shape at all means "any rank"; the signature has no way to say that and the mesh needs
  // a rank to check requests against, so such a model has to be re-exported with shapes.
  if (v.shape === undefined) throw unsupported(`${label} declares no shape (unknown rank)`);
  return { name: v.name, datatype, shape: v.shape };
}

function checkUnique(specs: TensorSpec[], kind: string): void {
  const seen = new Set<string>();
  for (const s of specs) {
    if (seen.has(s.name)) throw invalid(`graph ${kind} '${s.name}' is declared twice`);
    seen.add(s.name);
  }
}
