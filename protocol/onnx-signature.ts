// Reads an ONNX model file's signature (its graph inputs and outputs, with OIP datatypes and
// shapes) without onnxruntime, so the edge Worker can check an upload before storing it and
// the router can describe a model it has never loaded. It is a minimal protobuf reader for
// just the ModelProto fields it needs: everything else is skipped by wire type, never decoded,
// so a 100 MB model costs one pass over its field headers (weights are jumped over, not copied).
// Pure TS on Uint8Array: no Node-only APIs, since it runs inside a Cloudflare Worker too.
//
// Uploads come from hostile tenants, so the same pass also visits every tensor the model
// carries, wherever it hides (initializers, sparse initializers, node attributes, subgraphs of
// If/Loop/Scan, function bodies, training graphs), to list every reference to ONNX external
// data (a tensor whose bytes onnxruntime reads from another file next to the model: a way to
// read another account's model), and bounds what a file can make a parser or a runtime do:
// subgraph nesting, tensors that declare far more elements than they carry, signature size.
// Two other ways out are refused outright: EPContext nodes (precompiled graphs that may live in
// another file) and files onnxruntime would read as its own ORT format instead of ONNX.

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
  /** Every tensor whose bytes live outside this file, wherever it is in the model. */
  externalData: ExternalDataRef[];
}

/** A tensor that reads its data from another file (TensorProto.data_location / external_data). */
export interface ExternalDataRef {
  /** The tensor's name ("" when it has none). */
  tensor: string;
  /** Where in the model it is, for the error message: "initializer", "attribute 'value' of node 'c'"... */
  where: string;
  /** The file it names (its `location` entry), or null when it names none. */
  location: string | null;
}

/**
 * How deep subgraphs (If/Loop/Scan bodies, graphs inside functions) may nest. The walk recurses
 * once per level; onnxruntime's own protobuf parser stops at 100 nested messages (three per
 * subgraph level), so no model it can load comes near this.
 */
export const MAX_GRAPH_DEPTH = 32;
/** At most this many inputs and outputs each: the signature is stored per version and checked on every call. */
export const MAX_SIGNATURE_TENSORS = 1024;
/** The signature as JSON, at most: it is stored in one database row and cached by every edge. */
export const MAX_SIGNATURE_BYTES = 256 * 1024;
/**
 * A tensor may declare at most this many elements beyond two per byte of data it carries (4-bit
 * types are the densest packing ONNX has). A tensor that declares billions of elements and
 * carries a few bytes is a memory bomb: a runtime sizes its buffer from the dims first.
 */
const TENSOR_ELEMENT_SLACK = 1024;

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

/** What the walk over every graph, node and tensor gathers besides the main graph's signature. */
interface Walk {
  external: ExternalDataRef[];
}

/**
 * Reads the signature of an ONNX model (a serialized ModelProto). Throws OnnxParseError with
 * a human-readable message if the bytes are not a well-formed ONNX model or the model uses a
 * tensor type that has no OIP datatype.
 */
export function readOnnxSignature(bytes: Uint8Array): OnnxModelInfo {
  if (bytes.length === 0) throw invalid("the file is empty");
  // onnxruntime given bytes takes any buffer with "ORTM" at offset 4 for its own flatbuffer
  // format: a file can be valid protobuf here and a different model there (a polyglot).
  if (bytes.length > 8 && bytes[4] === 0x4f && bytes[5] === 0x52 && bytes[6] === 0x54 && bytes[7] === 0x4d) {
    throw unsupported("the file is marked as onnxruntime's ORT format ('ORTM' at offset 4); upload the .onnx protobuf file");
  }
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
  const walk: Walk = { external: [] };

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
        graph ??= { inputs: [], outputs: [], initializerNames: new Set() };
        readGraph(r, stop, graph, walk, 0);
        break;
      }
      case 20: {
        // training_info (TrainingInfoProto): initialization=1, algorithm=2 are graphs. Inference
        // ignores them, but a reference to another file is refused wherever it is.
        r.expect(LEN, "ModelProto.training_info");
        const stop = r.lengthEnd(end, "a training_info entry");
        while (r.pos < stop) {
          const f = r.tag(stop);
          if (f === 1 || f === 2) {
            r.expect(LEN, "TrainingInfoProto graph");
            readGraph(r, r.lengthEnd(stop, "a training graph"), null, walk, 1);
          } else {
            r.skip(stop, `TrainingInfoProto field ${f}`);
          }
        }
        break;
      }
      case 25: {
        // functions (FunctionProto): model-local functions, whose nodes may hold tensors too.
        r.expect(LEN, "ModelProto.functions");
        readFunction(r, r.lengthEnd(end, "a model function"), walk);
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
  if (inputs.length > MAX_SIGNATURE_TENSORS || outputs.length > MAX_SIGNATURE_TENSORS) {
    throw unsupported(`the graph has ${inputs.length} inputs and ${outputs.length} outputs; at most ${MAX_SIGNATURE_TENSORS} of each are supported`);
  }
  const signatureBytes = JSON.stringify({ inputs, outputs }).length;
  if (signatureBytes > MAX_SIGNATURE_BYTES) {
    throw unsupported(`the graph's inputs and outputs (names and shapes) take ${signatureBytes} bytes; at most ${MAX_SIGNATURE_BYTES} are supported`);
  }

  return { inputs, outputs, irVersion, opsetVersion, producer, externalData: walk.external };
}

/**
 * Refuses a model that reads any tensor from a file outside itself, unless that file is one of
 * `ownFiles`: the files uploaded with this version (a bundle's files; none for a single-file
 * upload). onnxruntime resolves a location next to the model file, where other versions' (and
 * other accounts') files may be, so nothing else may ever be named. Names are compared exactly
 * and must be plain relative paths, so "./x", "a/../x" or "/x" never match a bundle file.
 */
export function checkExternalData(info: Pick<OnnxModelInfo, "externalData">, ownFiles: ReadonlySet<string>): void {
  for (const ref of info.externalData) {
    const loc = ref.location;
    if (loc !== null && ownFiles.has(loc) && isPlainRelativePath(loc)) continue;
    const tensor = ref.tensor === "" ? "a tensor" : `tensor '${clip(ref.tensor)}'`;
    const names = loc === null ? "but names no file" : `from file '${clip(loc)}'`;
    const allowed =
      ownFiles.size === 0
        ? "a single-file upload must carry every tensor's data inside the .onnx file (save it without external data)"
        : "a version may only read files uploaded with it";
    throw unsupported(`${tensor} (${ref.where}) reads its data from outside the model, ${names}: ${allowed}`);
  }
}

function isPlainRelativePath(p: string): boolean {
  return p !== "" && !p.startsWith("/") && !p.includes("\\") && !p.includes(":") && p.split("/").every((s) => s !== "" && s !== "." && s !== "..");
}

/** A caller-chosen string, shortened for an error message. */
function clip(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}...` : s;
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

/**
 * Reads a graph. For the main graph `g` gathers its inputs, outputs and initializer names; a
 * subgraph (g null) is only walked for the tensors it holds. `depth` counts subgraph levels.
 */
function readGraph(r: Reader, end: number, g: RawGraph | null, walk: Walk, depth: number): void {
  if (depth > MAX_GRAPH_DEPTH) throw unsupported(`subgraphs are nested more than ${MAX_GRAPH_DEPTH} deep`);
  while (r.pos < end) {
    const field = r.tag(end);
    switch (field) {
      case 1: {
        r.expect(LEN, "GraphProto.node");
        readNode(r, r.lengthEnd(end, "a graph node"), walk, depth);
        break;
      }
      case 5: {
        // initializer (TensorProto): its name, and its data's bounds; raw_data is jumped over.
        r.expect(LEN, "GraphProto.initializer");
        const stop = r.lengthEnd(end, "an initializer");
        const t = newTensor();
        readTensor(r, stop, t);
        const name = checkTensor(t, walk, "initializer");
        if (name !== "") g?.initializerNames.add(name);
        break;
      }
      case 15: {
        // sparse_initializer (SparseTensorProto): its name lives in values (field 1).
        r.expect(LEN, "GraphProto.sparse_initializer");
        const sparse = newSparseTensor();
        readSparseTensor(r, r.lengthEnd(end, "a sparse initializer"), sparse);
        const name = checkSparseTensor(sparse, walk, "sparse initializer");
        if (name !== "") g?.initializerNames.add(name);
        break;
      }
      case 11:
      case 12: {
        if (g === null) {
          r.skip(end, "a subgraph's input or output");
          break;
        }
        const kind = field === 11 ? "input" : "output";
        r.expect(LEN, `GraphProto.${kind}`);
        const stop = r.lengthEnd(end, `a graph ${kind}`);
        (field === 11 ? g.inputs : g.outputs).push(readValueInfo(r, stop, kind));
        break;
      }
      default:
        // name (2), value_info (13), doc_string, ... are not part of the signature.
        r.skip(end, `GraphProto field ${field}`);
    }
  }
}

/** NodeProto: name=3, op_type=4, attribute=5 (where Constant values and subgraphs are). */
function readNode(r: Reader, end: number, walk: Walk, depth: number): void {
  let name = "";
  let opType = "";
  const attrs: Array<{ start: number; stop: number }> = [];
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 3) {
      r.expect(LEN, "NodeProto.name");
      name = r.string(end, "a node name");
    } else if (field === 4) {
      r.expect(LEN, "NodeProto.op_type");
      opType = r.string(end, "a node's op_type");
    } else if (field === 5) {
      r.expect(LEN, "NodeProto.attribute");
      const stop = r.lengthEnd(end, "a node attribute");
      // Read after the loop: the node's name may come after its attributes in the file.
      attrs.push({ start: r.pos, stop });
      r.pos = stop;
    } else {
      r.skip(end, `NodeProto field ${field}`);
    }
  }
  // An EPContext node stands for a graph an execution provider compiled earlier; with
  // embed_mode 0 its ep_cache_context names a file next to the model: another way out.
  if (opType === "EPContext") throw unsupported(`${name === "" ? "a node" : `node '${clip(name)}'`} is an EPContext node (a precompiled execution-provider graph, possibly in another file)`);
  const after = r.pos;
  for (const a of attrs) {
    r.pos = a.start;
    readAttribute(r, a.stop, walk, depth, name === "" ? "of a node" : `of node '${clip(name)}'`);
  }
  r.pos = after;
}

/**
 * AttributeProto: name=1, t=5, g=6, tensors=10, graphs=11, sparse_tensor=22, sparse_tensors=23
 * (the fields that can hold tensors); the rest are scalars and lists of scalars.
 */
function readAttribute(r: Reader, end: number, walk: Walk, depth: number, owner: string): void {
  let name = "";
  const held: Array<{ field: number; start: number; stop: number }> = [];
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 1) {
      r.expect(LEN, "AttributeProto.name");
      name = r.string(end, "an attribute name");
    } else if (field === 5 || field === 6 || field === 10 || field === 11 || field === 22 || field === 23) {
      r.expect(LEN, `AttributeProto field ${field}`);
      const stop = r.lengthEnd(end, "an attribute value");
      held.push({ field, start: r.pos, stop });
      r.pos = stop;
    } else {
      r.skip(end, `AttributeProto field ${field}`);
    }
  }
  const after = r.pos;
  const where = `attribute '${clip(name)}' ${owner}`;
  // t (5) and sparse_tensor (22) are singular: protobuf merges every occurrence into one
  // message (dims concatenated), and so must the checks, or two harmless halves make a bomb.
  const t = newTensor();
  const sparse = newSparseTensor();
  for (const h of held) {
    r.pos = h.start;
    if (h.field === 5) readTensor(r, h.stop, t);
    else if (h.field === 22) readSparseTensor(r, h.stop, sparse);
    else if (h.field === 10) {
      const each = newTensor();
      readTensor(r, h.stop, each);
      checkTensor(each, walk, where);
    } else if (h.field === 23) {
      const each = newSparseTensor();
      readSparseTensor(r, h.stop, each);
      checkSparseTensor(each, walk, where);
    } else readGraph(r, h.stop, null, walk, depth + 1);
  }
  if (held.some((h) => h.field === 5)) checkTensor(t, walk, where);
  if (held.some((h) => h.field === 22)) checkSparseTensor(sparse, walk, where);
  r.pos = after;
}

/** FunctionProto: node=7, attribute_proto=11 (attribute defaults, which may be tensors or graphs). */
function readFunction(r: Reader, end: number, walk: Walk): void {
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 7) {
      r.expect(LEN, "FunctionProto.node");
      readNode(r, r.lengthEnd(end, "a function node"), walk, 1);
    } else if (field === 11) {
      r.expect(LEN, "FunctionProto.attribute_proto");
      readAttribute(r, r.lengthEnd(end, "a function attribute"), walk, 1, "of a function");
    } else {
      r.skip(end, `FunctionProto field ${field}`);
    }
  }
}

interface SparseTensorState {
  values: TensorState;
  indices: TensorState;
}

function newSparseTensor(): SparseTensorState {
  return { values: newTensor(), indices: newTensor() };
}

/** SparseTensorProto: values=1 (names it), indices=2; both singular tensors (occurrences merge). */
function readSparseTensor(r: Reader, end: number, s: SparseTensorState): void {
  while (r.pos < end) {
    const f = r.tag(end);
    if (f === 1 || f === 2) {
      r.expect(LEN, "SparseTensorProto.values/indices");
      readTensor(r, r.lengthEnd(end, "a sparse tensor's values"), f === 1 ? s.values : s.indices);
    } else {
      r.skip(end, `SparseTensorProto field ${f}`);
    }
  }
}

function checkSparseTensor(s: SparseTensorState, walk: Walk, where: string): string {
  checkTensor(s.indices, walk, where);
  return checkTensor(s.values, walk, where);
}

/** TensorProto fields that carry its elements inline: float, int32, string, int64, raw, double, uint64. */
const TENSOR_DATA_FIELDS = new Set([4, 5, 6, 7, 9, 10, 11]);

/** What the checks need of one TensorProto, gathered over every occurrence that protobuf merges. */
interface TensorState {
  name: string;
  elemType: number;
  /** Product of the dims (saturating, so absurd dims stay absurd instead of overflowing). */
  elements: number;
  /** Bytes of inline element data, over every data field. */
  dataBytes: number;
  /** string_data entries. */
  strings: number;
  /** data_location is EXTERNAL (or anything but DEFAULT), or an external_data entry is present. */
  external: boolean;
  location: string | null;
}

function newTensor(): TensorState {
  return { name: "", elemType: 0, elements: 1, dataBytes: 0, strings: 0, external: false, location: null };
}

/** Reads one TensorProto occurrence into `t`; never decodes the data, only measures it. */
function readTensor(r: Reader, end: number, t: TensorState): void {
  while (r.pos < end) {
    const field = r.tag(end);
    if (field === 8) {
      r.expect(LEN, "TensorProto.name");
      t.name = r.string(end, "a tensor name");
    } else if (field === 1) {
      // dims: plain or packed int64s.
      if (r.wire === LEN) {
        const stop = r.lengthEnd(end, "a tensor's dims");
        while (r.pos < stop) t.elements = times(t.elements, dimOf(r.int64(stop)));
      } else {
        r.expect(VARINT, "TensorProto.dims");
        t.elements = times(t.elements, dimOf(r.int64(end)));
      }
    } else if (field === 2) {
      r.expect(VARINT, "TensorProto.data_type");
      t.elemType = r.varint(end);
    } else if (field === 13) {
      r.expect(LEN, "TensorProto.external_data");
      t.external = true;
      const entry = readStringEntry(r, r.lengthEnd(end, "an external_data entry"));
      if (entry.key === "location") t.location = entry.value;
    } else if (field === 14) {
      r.expect(VARINT, "TensorProto.data_location");
      if (r.varint(end) !== 0) t.external = true; // 1 = EXTERNAL; any other non-default value is no better
    } else if (TENSOR_DATA_FIELDS.has(field)) {
      // The payload only (a packed run's or raw_data's bytes, an unpacked value's own bytes).
      if (r.wire === LEN) {
        const stop = r.lengthEnd(end, `TensorProto field ${field}`);
        t.dataBytes += stop - r.pos;
        r.pos = stop;
      } else {
        const from = r.pos;
        r.skip(end, `TensorProto field ${field}`);
        t.dataBytes += r.pos - from;
      }
      if (field === 6) t.strings++;
    } else {
      r.skip(end, `TensorProto field ${field}`);
    }
  }
}

/**
 * Records a tensor's external-data reference, if any, and refuses a tensor that declares far
 * more elements than its inline data can hold. Returns its name.
 */
function checkTensor(t: TensorState, walk: Walk, where: string): string {
  if (t.external) {
    walk.external.push({ tensor: t.name, where, location: t.location });
    return t.name; // its size is the external file's business, and the reference is refused anyway
  }
  const label = t.name === "" ? `a tensor (${where})` : `tensor '${clip(t.name)}' (${where})`;
  // Strings are counted exactly: each element is one string_data entry, and a runtime allocates
  // a string object per declared element before it looks at the data.
  if (t.elemType === 8 ? t.elements !== t.strings : t.elements > 2 * t.dataBytes + TENSOR_ELEMENT_SLACK) {
    const has = t.elemType === 8 ? `${t.strings} strings` : `${t.dataBytes} bytes of data`;
    throw invalid(`${label} declares ${t.elements} elements but carries ${has}`);
  }
  return t.name;
}

/** A TensorProto dim: never negative (unlike a graph input's, where -1 means dynamic). */
function dimOf(v: bigint): number {
  if (v < 0n) throw invalid(`a tensor declares a negative dimension ${v}`);
  // Beyond 2^53 the product only needs to be "too many", so Infinity-like values are fine.
  return Number(v);
}

function times(a: number, b: number): number {
  return Math.min(a * b, Number.MAX_VALUE);
}

/** StringStringEntryProto: key=1, value=2. */
function readStringEntry(r: Reader, end: number): { key: string; value: string } {
  let key = "";
  let value = "";
  while (r.pos < end) {
    const f = r.tag(end);
    if (f === 1) {
      r.expect(LEN, "StringStringEntryProto.key");
      key = r.string(end, "an external_data key");
    } else if (f === 2) {
      r.expect(LEN, "StringStringEntryProto.value");
      value = r.string(end, "an external_data value");
    } else {
      r.skip(end, `StringStringEntryProto field ${f}`);
    }
  }
  return { key, value };
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
  const label = `${kind} '${clip(v.name)}'`;
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
    if (seen.has(s.name)) throw invalid(`graph ${kind} '${clip(s.name)}' is declared twice`);
    seen.add(s.name);
  }
}
