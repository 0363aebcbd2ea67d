// Reads an ONNX model file's signature (its graph inputs and outputs, with OIP datatypes and
// shapes) without onnxruntime, so the edge Worker can check an upload before storing it and
// the router can describe a model it has never loaded. It is a minimal protobuf reader for
// just the ModelProto fields it needs: everything else is skipped by wire type, never decoded,
// so a 100 MB model costs one pass over its field headers (weights are jumped over, not copied).
// Pure TS on Uint8Array: no Node-only APIs, since it runs inside a Cloudflare Worker too.
// It reads a whole buffer (readOnnxSignature) or a stream of chunks (OnnxSignatureReader, for
// multi-gigabyte uploads read back from R2): one parser, written as generators that pause when
// they need bytes not yet arrived, moving only forward and holding no weight bytes.
//
// Uploads come from hostile tenants, so the same pass also visits every tensor the model
// carries, wherever it hides (initializers, sparse initializers, node attributes, subgraphs of
// If/Loop/Scan, function bodies, training graphs), to list every reference to ONNX external
// data (a tensor whose bytes onnxruntime reads from another file next to the model: a way to
// read another account's model), and bounds what a file can make a parser or a runtime do:
// subgraph nesting, tensors that declare far more elements than they carry, signature size.
// Two other ways out are refused outright: EPContext nodes (precompiled graphs that may live in
// another file) and files onnxruntime would read as its own ORT format instead of ONNX.
//
// Hand-written on purpose, while the models themselves are written with onnx-proto: a protobuf
// library decodes a whole message into memory (every weight copied into the Worker's 128 MB),
// and cannot pause mid-message for the next chunk of a stream. test/onnx-signature-crosscheck
// holds this reader to onnx-proto's full decode on every model the repository makes.

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
  /** Its `offset` and `length` entries (null when absent or not a plain decimal integer). */
  offset: number | null;
  length: number | null;
  /** The bytes its dims and element type need (null when the type has no fixed width): the length read when none is given. */
  bytes: number | null;
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

/** ONNX TensorProto.DataType names, only for error messages (datatypes.ts ONNX_ELEM_TO_OIP maps the same numbers to OIP names; deliberately a separate table). */
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
 * The longest string (a name, an op_type, an external_data entry) the reader decodes. A string
 * is the one thing it must hold whole, so this bounds what a streaming read keeps in memory.
 */
export const MAX_STRING_BYTES = 1024 * 1024;

/**
 * One step of the parser: a generator that yields when it needs bytes the reader does not
 * hold yet. A whole buffer never yields; a stream resumes it as each chunk arrives. This is
 * how one parser serves both: no second copy of the ONNX walk for streams.
 */
type Step<T> = Generator<void, T, void>;

const EMPTY = new Uint8Array(0);

/**
 * A cursor over the file. Positions are offsets into the whole file (of `size` bytes), but it
 * holds only a window of it: bytes the parser has passed (weights it jumped over included) are
 * dropped as chunks arrive, and the parser only moves forward. Every read takes the end of the
 * message it is inside, so a field can never read past its enclosing message, let alone past
 * the file.
 */
class Reader {
  pos = 0;
  /** Wire type of the field header that tag() read last. */
  wire = 0;
  /** The bytes held: [base, base + buf.length) of the file. */
  private buf: Uint8Array = EMPTY;
  private base = 0;
  constructor(readonly size: number) {}

  /** How many bytes of the file it holds now. */
  get held(): number {
    return this.buf.length;
  }

  /** The next chunk of the file. Keeps only what lies at or after `pos`. */
  feed(chunk: Uint8Array): void {
    const held = this.base + this.buf.length; // file offset of chunk[0]
    const from = Math.max(this.pos, this.base);
    if (from >= held + chunk.length) {
      this.buf = EMPTY;
      this.base = held + chunk.length;
    } else if (from >= held || this.buf.length === 0) {
      this.buf = chunk.subarray(from - held);
      this.base = from;
    } else {
      const keep = this.buf.subarray(from - this.base);
      const joined = new Uint8Array(keep.length + chunk.length);
      joined.set(keep);
      joined.set(chunk, keep.length);
      this.buf = joined;
      this.base = from;
    }
  }

  /**
   * Copies out what is still held, so the caller may reuse its chunk's memory after push();
   * the parser waits only for a field's few bytes (at most a string), so this copy is small.
   */
  settle(): void {
    const from = Math.max(this.pos, this.base);
    const held = this.base + this.buf.length;
    this.buf = from >= held ? EMPTY : this.buf.slice(from - this.base);
    this.base = Math.min(from, held);
  }

  /** Waits until the next `n` bytes (or all that is left of the file) are held. */
  private *need(n: number): Step<void> {
    const want = Math.min(this.pos + n, this.size);
    while (this.base + this.buf.length < want) yield;
    if (this.pos < this.base) throw new Error("ONNX reader moved backwards"); // a bug, not a bad file
  }

  /**
   * Unsigned varint as a Number. Exact up to 2^53; larger values (only possible in a damaged
   * or hostile file here) come out approximate, which is fine since any length that large is
   * rejected as past the end anyway.
   */
  *varint(end: number): Step<number> {
    yield* this.need(10);
    const buf = this.buf;
    const base = this.base;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw invalid("a number is cut off (truncated file?)");
      const b = buf[this.pos++ - base]!;
      if (i === 9 && b > 1) throw invalid("a number is longer than 64 bits");
      result += (b & 0x7f) * scale;
      if (b < 0x80) return result;
      scale *= 128;
    }
    throw invalid("a number is longer than 64 bits");
  }

  /** Signed int64 varint (two's complement) as a BigInt, for values whose sign matters. */
  *int64(end: number): Step<bigint> {
    yield* this.need(10);
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) throw invalid("a number is cut off (truncated file?)");
      const b = this.buf[this.pos++ - this.base]!;
      if (i === 9 && b > 1) throw invalid("a number is longer than 64 bits");
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asIntN(64, result);
      shift += 7n;
    }
    throw invalid("a number is longer than 64 bits");
  }

  /** Reads a field header; returns the field number and leaves the wire type in `wire`. */
  *tag(end: number): Step<number> {
    const tag = yield* this.varint(end);
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
  *lengthEnd(end: number, what: string): Step<number> {
    const len = yield* this.varint(end);
    if (len > end - this.pos) throw invalid(`${what} runs past the end of its data (truncated file?)`);
    return this.pos + len;
  }

  *string(end: number, what: string): Step<string> {
    const stop = yield* this.lengthEnd(end, what);
    const start = this.pos;
    if (stop - start > MAX_STRING_BYTES) throw unsupported(`${what} is ${stop - start} bytes long; at most ${MAX_STRING_BYTES} are supported`);
    yield* this.need(stop - start);
    this.pos = stop;
    try {
      return utf8.decode(this.buf.subarray(start - this.base, stop - this.base));
    } catch {
      throw invalid(`${what} is not valid UTF-8`);
    }
  }

  /** Jumps over one field's value of the current wire type without decoding (or holding) it. */
  *skip(end: number, what: string): Step<void> {
    switch (this.wire) {
      case VARINT:
        yield* this.varint(end);
        return;
      case FIXED64:
        if (end - this.pos < 8) throw invalid(`${what} runs past the end of its data (truncated file?)`);
        this.pos += 8;
        return;
      case LEN:
        this.pos = yield* this.lengthEnd(end, what);
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
  const reader = new OnnxSignatureReader(bytes.length);
  reader.push(bytes);
  return reader.end();
}

/** How much of the file's opening the text check (looksLikeText) looks at. */
const HEAD_BYTES = 65;

/**
 * The same reader for a file that arrives in chunks (an R2 object's body, say): push() each
 * chunk in order, then end(). It holds only the bytes a field it is reading needs (at most a
 * string, MAX_STRING_BYTES) plus the current chunk; weights are dropped as they go by. The
 * result, and the error for a bad file, are exactly readOnnxSignature's on the whole buffer.
 * push() throws OnnxParseError as soon as the file is known to be bad, so a caller can stop
 * reading there.
 */
export class OnnxSignatureReader {
  private readonly r: Reader;
  private readonly head: Uint8Array;
  private headLength = 0;
  private received = 0;
  private parse: Step<OnnxModelInfo> | null = null;
  private result: OnnxModelInfo | null = null;
  private failure: unknown = null;

  /** `size`: the file's length in bytes, known up front (protobuf bounds depend on it). */
  constructor(readonly size: number) {
    this.r = new Reader(size);
    this.head = new Uint8Array(Math.min(HEAD_BYTES, size));
  }

  push(chunk: Uint8Array): void {
    if (this.failure !== null) throw this.failure;
    if (this.received + chunk.length > this.size) throw new Error(`ONNX reader: more than the announced ${this.size} bytes`);
    if (this.headLength < this.head.length) {
      const take = chunk.subarray(0, this.head.length - this.headLength);
      this.head.set(take, this.headLength);
      this.headLength += take.length;
    }
    this.received += chunk.length;
    if (this.result !== null) return; // the rest of the file is bytes the parse jumped over
    this.r.feed(chunk);
    // Starts once the opening is held, so the checks on it see what the whole-buffer read sees.
    if (this.headLength < this.head.length) {
      this.r.settle();
      return;
    }
    try {
      if (this.parse === null) {
        // onnxruntime given bytes takes any buffer with "ORTM" at offset 4 for its own flatbuffer
        // format: a file can be valid protobuf here and a different model there (a polyglot).
        const h = this.head;
        if (this.size > 8 && h[4] === 0x4f && h[5] === 0x52 && h[6] === 0x54 && h[7] === 0x4d) {
          throw unsupported("the file is marked as onnxruntime's ORT format ('ORTM' at offset 4); upload the .onnx protobuf file");
        }
        this.parse = parseModel(this.r);
      }
      const step = this.parse.next();
      if (step.done) this.result = step.value;
      else this.r.settle();
    } catch (err) {
      // Judged only after the protobuf parse failed, so a real model is never mistaken for text.
      this.failure =
        err instanceof OnnxParseError && looksLikeText(this.head)
          ? invalid("the file is text (JSON, HTML or similar), not a binary ONNX protobuf")
          : err;
      throw this.failure;
    }
  }

  /** Bytes of the file held between pushes (what a field being read needs, and the opening): never the weights. */
  get heldBytes(): number {
    return this.r.held + this.head.length;
  }

  /** The signature, once every byte was pushed. */
  end(): OnnxModelInfo {
    if (this.failure !== null) throw this.failure;
    if (this.size === 0) throw invalid("the file is empty");
    if (this.received !== this.size) throw new Error(`ONNX reader: got ${this.received} of the announced ${this.size} bytes`);
    // With every byte held the parse never waits, so it has finished (or push threw).
    if (this.result === null) throw new Error("ONNX reader: the parse did not finish");
    return this.result;
  }
}

function* parseModel(r: Reader): Step<OnnxModelInfo> {
  const end = r.size;
  let irVersion: number | undefined;
  let producer: string | null = null;
  let opsetVersion: number | null = null;
  let graph: RawGraph | undefined;
  const walk: Walk = { external: [] };

  while (r.pos < end) {
    const field = yield* r.tag(end);
    switch (field) {
      case 1:
        r.expect(VARINT, "ModelProto.ir_version");
        irVersion = yield* r.varint(end);
        break;
      case 2:
        r.expect(LEN, "ModelProto.producer_name");
        producer = yield* r.string(end, "ModelProto.producer_name");
        break;
      case 7: {
        r.expect(LEN, "ModelProto.graph");
        const stop = yield* r.lengthEnd(end, "the model's graph");
        // Protobuf merges repeated occurrences of a message field; passing the same
        // accumulator does exactly that for the lists we keep.
        graph ??= { inputs: [], outputs: [], initializerNames: new Set() };
        yield* readGraph(r, stop, graph, walk, 0);
        break;
      }
      case 20: {
        // training_info (TrainingInfoProto): initialization=1, algorithm=2 are graphs. Inference
        // ignores them, but a reference to another file is refused wherever it is.
        r.expect(LEN, "ModelProto.training_info");
        const stop = yield* r.lengthEnd(end, "a training_info entry");
        while (r.pos < stop) {
          const f = yield* r.tag(stop);
          if (f === 1 || f === 2) {
            r.expect(LEN, "TrainingInfoProto graph");
            yield* readGraph(r, yield* r.lengthEnd(stop, "a training graph"), null, walk, 1);
          } else {
            yield* r.skip(stop, `TrainingInfoProto field ${f}`);
          }
        }
        break;
      }
      case 25: {
        // functions (FunctionProto): model-local functions, whose nodes may hold tensors too.
        r.expect(LEN, "ModelProto.functions");
        yield* readFunction(r, yield* r.lengthEnd(end, "a model function"), walk);
        break;
      }
      case 8: {
        r.expect(LEN, "ModelProto.opset_import");
        const stop = yield* r.lengthEnd(end, "an opset_import entry");
        const opset = yield* readOpset(r, stop);
        if (opset.domain === "" || opset.domain === "ai.onnx") opsetVersion = opset.version;
        break;
      }
      default:
        yield* r.skip(end, `ModelProto field ${field}`);
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
export function checkExternalData(info: Pick<OnnxModelInfo, "externalData">, ownFiles: ReadonlySet<string> | ReadonlyMap<string, number>): void {
  for (const ref of info.externalData) {
    const loc = ref.location;
    if (loc !== null && ownFiles.has(loc) && isPlainRelativePath(loc)) {
      // A bundle's files come with their sizes: a read must lie inside the file it names, so a
      // tensor never reads past its end (onnxruntime would fail the load, or map what is not there).
      const size = ownFiles instanceof Map ? (ownFiles.get(loc) as number) : null;
      if (size === null) continue;
      const tensor = ref.tensor === "" ? "a tensor" : `tensor '${clip(ref.tensor)}'`;
      const offset = ref.offset ?? 0;
      const length = ref.length ?? ref.bytes;
      if (length === null) throw unsupported(`${tensor} (${ref.where}) reads from '${clip(loc)}' without a length, and its type has no fixed width`);
      if (offset + length > size) {
        throw invalid(`${tensor} (${ref.where}) reads bytes ${offset} to ${offset + length} of '${clip(loc)}', which has ${size} bytes`);
      }
      if (ref.bytes !== null && length !== ref.bytes) {
        throw invalid(`${tensor} (${ref.where}) reads ${length} bytes of '${clip(loc)}' but its dims need ${ref.bytes}`);
      }
      continue;
    }
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

function* readOpset(r: Reader, end: number): Step<{ domain: string; version: number | null }> {
  let domain = "";
  let version: number | null = null;
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 1) {
      r.expect(LEN, "OperatorSetIdProto.domain");
      domain = yield* r.string(end, "an opset domain");
    } else if (field === 2) {
      r.expect(VARINT, "OperatorSetIdProto.version");
      version = yield* r.varint(end);
    } else {
      yield* r.skip(end, `OperatorSetIdProto field ${field}`);
    }
  }
  return { domain, version };
}

/**
 * Reads a graph. For the main graph `g` gathers its inputs, outputs and initializer names; a
 * subgraph (g null) is only walked for the tensors it holds. `depth` counts subgraph levels.
 */
function* readGraph(r: Reader, end: number, g: RawGraph | null, walk: Walk, depth: number): Step<void> {
  if (depth > MAX_GRAPH_DEPTH) throw unsupported(`subgraphs are nested more than ${MAX_GRAPH_DEPTH} deep`);
  while (r.pos < end) {
    const field = yield* r.tag(end);
    switch (field) {
      case 1: {
        r.expect(LEN, "GraphProto.node");
        yield* readNode(r, yield* r.lengthEnd(end, "a graph node"), walk, depth);
        break;
      }
      case 5: {
        // initializer (TensorProto): its name, and its data's bounds; raw_data is jumped over.
        r.expect(LEN, "GraphProto.initializer");
        const stop = yield* r.lengthEnd(end, "an initializer");
        const t = newTensor();
        yield* readTensor(r, stop, t);
        const name = checkTensor(t, walk, "initializer");
        if (name !== "") g?.initializerNames.add(name);
        break;
      }
      case 15: {
        // sparse_initializer (SparseTensorProto): its name lives in values (field 1).
        r.expect(LEN, "GraphProto.sparse_initializer");
        const sparse = newSparseTensor();
        yield* readSparseTensor(r, yield* r.lengthEnd(end, "a sparse initializer"), sparse);
        const name = checkSparseTensor(sparse, walk, "sparse initializer");
        if (name !== "") g?.initializerNames.add(name);
        break;
      }
      case 11:
      case 12: {
        if (g === null) {
          yield* r.skip(end, "a subgraph's input or output");
          break;
        }
        const kind = field === 11 ? "input" : "output";
        r.expect(LEN, `GraphProto.${kind}`);
        const stop = yield* r.lengthEnd(end, `a graph ${kind}`);
        (field === 11 ? g.inputs : g.outputs).push(yield* readValueInfo(r, stop, kind));
        break;
      }
      default:
        // name (2), value_info (13), doc_string, ... are not part of the signature.
        yield* r.skip(end, `GraphProto field ${field}`);
    }
  }
}

/**
 * NodeProto: name=3, op_type=4, attribute=5 (where Constant values and subgraphs are).
 * The parser only moves forward (a stream cannot be re-read), but the checks on a node's
 * attributes name the node, whose name may come after them in the file, and an EPContext
 * op_type (anywhere in the node) is refused before anything inside its attributes is judged.
 * So each attribute is read where it is, and what it found (tensors, external references,
 * errors) is kept and judged after the node, in the order the fields came: the outcome, errors
 * included, is the one a reader that went back to the attributes would give.
 */
function* readNode(r: Reader, end: number, walk: Walk, depth: number): Step<void> {
  let name = "";
  let opType = "";
  const attrs: AttributeRead[] = [];
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 3) {
      r.expect(LEN, "NodeProto.name");
      name = yield* r.string(end, "a node name");
    } else if (field === 4) {
      r.expect(LEN, "NodeProto.op_type");
      opType = yield* r.string(end, "a node's op_type");
    } else if (field === 5) {
      r.expect(LEN, "NodeProto.attribute");
      const stop = yield* r.lengthEnd(end, "a node attribute");
      attrs.push(yield* readAttribute(r, stop, depth));
    } else {
      yield* r.skip(end, `NodeProto field ${field}`);
    }
  }
  // An EPContext node stands for a graph an execution provider compiled earlier; with
  // embed_mode 0 its ep_cache_context names a file next to the model: another way out.
  if (opType === "EPContext") throw unsupported(`${name === "" ? "a node" : `node '${clip(name)}'`} is an EPContext node (a precompiled execution-provider graph, possibly in another file)`);
  for (const a of attrs) judgeAttribute(a, walk, name === "" ? "of a node" : `of node '${clip(name)}'`);
}

/** One tensor-holding field of an attribute, as read: what it held, or where reading it failed. */
interface HeldValue {
  field: number;
  /** tensors (10) */
  tensor?: TensorState;
  /** sparse_tensors (23) */
  sparse?: SparseTensorState;
  /** g (6) and graphs (11): the external references the subgraph holds. */
  external?: ExternalDataRef[];
  /** The error reading this field stopped at (thrown when it is judged). */
  failure?: unknown;
}

/** What reading one attribute found, to be judged once its node's name is known. */
interface AttributeRead {
  name: string;
  /** An error in the attribute's own fields; it comes before anything inside them. */
  failure?: unknown;
  held: HeldValue[];
  /** t (5) and sparse_tensor (22), merged over their occurrences; null when absent. */
  t: TensorState | null;
  sparse: SparseTensorState | null;
}

/**
 * AttributeProto: name=1, t=5, g=6, tensors=10, graphs=11, sparse_tensor=22, sparse_tensors=23
 * (the fields that can hold tensors); the rest are scalars and lists of scalars. Never throws:
 * errors are kept for judgeAttribute, and the reader is left at the attribute's end.
 */
function* readAttribute(r: Reader, end: number, depth: number): Step<AttributeRead> {
  const a: AttributeRead = { name: "", held: [], t: null, sparse: null };
  try {
    while (r.pos < end) {
      const field = yield* r.tag(end);
      if (field === 1) {
        r.expect(LEN, "AttributeProto.name");
        a.name = yield* r.string(end, "an attribute name");
      } else if (field === 5 || field === 6 || field === 10 || field === 11 || field === 22 || field === 23) {
        r.expect(LEN, `AttributeProto field ${field}`);
        const stop = yield* r.lengthEnd(end, "an attribute value");
        const h: HeldValue = { field };
        try {
          // t (5) and sparse_tensor (22) are singular: protobuf merges every occurrence into one
          // message (dims concatenated), and so must the checks, or two harmless halves make a bomb.
          if (field === 5) yield* readTensor(r, stop, (a.t ??= newTensor()));
          else if (field === 22) yield* readSparseTensor(r, stop, (a.sparse ??= newSparseTensor()));
          else if (field === 10) yield* readTensor(r, stop, (h.tensor = newTensor()));
          else if (field === 23) yield* readSparseTensor(r, stop, (h.sparse = newSparseTensor()));
          else {
            const sub: Walk = { external: [] };
            h.external = sub.external;
            yield* readGraph(r, stop, null, sub, depth + 1);
          }
        } catch (err) {
          h.failure = err;
        }
        a.held.push(h);
        r.pos = stop;
      } else {
        yield* r.skip(end, `AttributeProto field ${field}`);
      }
    }
  } catch (err) {
    a.failure = err;
  }
  r.pos = end;
  return a;
}

/** The checks on one attribute's tensors, in file order; `owner` names its node. */
function judgeAttribute(a: AttributeRead, walk: Walk, owner: string): void {
  if (a.failure !== undefined) throw a.failure;
  const where = `attribute '${clip(a.name)}' ${owner}`;
  for (const h of a.held) {
    if (h.external) walk.external.push(...h.external);
    if (h.failure !== undefined) throw h.failure;
    if (h.tensor) checkTensor(h.tensor, walk, where);
    if (h.sparse) checkSparseTensor(h.sparse, walk, where);
  }
  if (a.t) checkTensor(a.t, walk, where);
  if (a.sparse) checkSparseTensor(a.sparse, walk, where);
}

/** FunctionProto: node=7, attribute_proto=11 (attribute defaults, which may be tensors or graphs). */
function* readFunction(r: Reader, end: number, walk: Walk): Step<void> {
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 7) {
      r.expect(LEN, "FunctionProto.node");
      yield* readNode(r, yield* r.lengthEnd(end, "a function node"), walk, 1);
    } else if (field === 11) {
      r.expect(LEN, "FunctionProto.attribute_proto");
      judgeAttribute(yield* readAttribute(r, yield* r.lengthEnd(end, "a function attribute"), 1), walk, "of a function");
    } else {
      yield* r.skip(end, `FunctionProto field ${field}`);
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
function* readSparseTensor(r: Reader, end: number, s: SparseTensorState): Step<void> {
  while (r.pos < end) {
    const f = yield* r.tag(end);
    if (f === 1 || f === 2) {
      r.expect(LEN, "SparseTensorProto.values/indices");
      yield* readTensor(r, yield* r.lengthEnd(end, "a sparse tensor's values"), f === 1 ? s.values : s.indices);
    } else {
      yield* r.skip(end, `SparseTensorProto field ${f}`);
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
  /** The external_data `offset` / `length` entries; NaN when present but not a plain integer. */
  offset: number | null;
  length: number | null;
}

function newTensor(): TensorState {
  return { name: "", elemType: 0, elements: 1, dataBytes: 0, strings: 0, external: false, location: null, offset: null, length: null };
}

/** Reads one TensorProto occurrence into `t`; never decodes the data, only measures it. */
function* readTensor(r: Reader, end: number, t: TensorState): Step<void> {
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 8) {
      r.expect(LEN, "TensorProto.name");
      t.name = yield* r.string(end, "a tensor name");
    } else if (field === 1) {
      // dims: plain or packed int64s.
      if (r.wire === LEN) {
        const stop = yield* r.lengthEnd(end, "a tensor's dims");
        while (r.pos < stop) t.elements = times(t.elements, dimOf(yield* r.int64(stop)));
      } else {
        r.expect(VARINT, "TensorProto.dims");
        t.elements = times(t.elements, dimOf(yield* r.int64(end)));
      }
    } else if (field === 2) {
      r.expect(VARINT, "TensorProto.data_type");
      t.elemType = yield* r.varint(end);
    } else if (field === 13) {
      r.expect(LEN, "TensorProto.external_data");
      t.external = true;
      const entry = yield* readStringEntry(r, yield* r.lengthEnd(end, "an external_data entry"));
      if (entry.key === "location") t.location = entry.value;
      else if (entry.key === "offset") t.offset = decimal(entry.value);
      else if (entry.key === "length") t.length = decimal(entry.value);
    } else if (field === 14) {
      r.expect(VARINT, "TensorProto.data_location");
      if ((yield* r.varint(end)) !== 0) t.external = true; // 1 = EXTERNAL; any other non-default value is no better
    } else if (TENSOR_DATA_FIELDS.has(field)) {
      // The payload only (a packed run's or raw_data's bytes, an unpacked value's own bytes).
      if (r.wire === LEN) {
        const stop = yield* r.lengthEnd(end, `TensorProto field ${field}`);
        t.dataBytes += stop - r.pos;
        r.pos = stop;
      } else {
        const from = r.pos;
        yield* r.skip(end, `TensorProto field ${field}`);
        t.dataBytes += r.pos - from;
      }
      if (field === 6) t.strings++;
    } else {
      yield* r.skip(end, `TensorProto field ${field}`);
    }
  }
}

/**
 * Records a tensor's external-data reference, if any, and refuses a tensor that declares far
 * more elements than its inline data can hold. Returns its name.
 */
function checkTensor(t: TensorState, walk: Walk, where: string): string {
  if (t.external) {
    const width = ELEM_BYTES[t.elemType];
    if (Number.isNaN(t.offset) || Number.isNaN(t.length)) throw invalid(`tensor '${clip(t.name)}' (${where}) has an external_data offset or length that is not a byte count`);
    walk.external.push({ tensor: t.name, where, location: t.location, offset: t.offset, length: t.length, bytes: width === undefined ? null : times(t.elements, width) });
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

/** Bytes per element of the fixed-width ONNX element types (strings and sub-byte types have none). */
const ELEM_BYTES: Readonly<Record<number, number>> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1 };

/** An external_data offset or length: a plain decimal integer (NaN otherwise, refused by the caller). */
function decimal(v: string): number {
  return /^[0-9]{1,16}$/.test(v) ? Number(v) : Number.NaN;
}

/** StringStringEntryProto: key=1, value=2. */
function* readStringEntry(r: Reader, end: number): Step<{ key: string; value: string }> {
  let key = "";
  let value = "";
  while (r.pos < end) {
    const f = yield* r.tag(end);
    if (f === 1) {
      r.expect(LEN, "StringStringEntryProto.key");
      key = yield* r.string(end, "an external_data key");
    } else if (f === 2) {
      r.expect(LEN, "StringStringEntryProto.value");
      value = yield* r.string(end, "an external_data value");
    } else {
      yield* r.skip(end, `StringStringEntryProto field ${f}`);
    }
  }
  return { key, value };
}

function* readValueInfo(r: Reader, end: number, kind: string): Step<RawValueInfo> {
  const v: RawValueInfo = { name: "", elemType: undefined, otherKind: undefined, shape: undefined };
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 1) {
      r.expect(LEN, "ValueInfoProto.name");
      v.name = yield* r.string(end, `a graph ${kind} name`);
    } else if (field === 2) {
      r.expect(LEN, "ValueInfoProto.type");
      yield* readType(r, yield* r.lengthEnd(end, `the type of a graph ${kind}`), v);
    } else {
      yield* r.skip(end, `ValueInfoProto field ${field}`);
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

function* readType(r: Reader, end: number, v: RawValueInfo): Step<void> {
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 1) {
      r.expect(LEN, "TypeProto.tensor_type");
      yield* readTensorType(r, yield* r.lengthEnd(end, "a tensor type"), v);
    } else {
      const other = NON_TENSOR_KINDS[field];
      if (other !== undefined) v.otherKind = other;
      yield* r.skip(end, `TypeProto field ${field}`);
    }
  }
}

function* readTensorType(r: Reader, end: number, v: RawValueInfo): Step<void> {
  // A tensor_type that is present but empty still makes this a tensor (of undefined type).
  v.elemType ??= 0;
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 1) {
      r.expect(VARINT, "TypeProto.Tensor.elem_type");
      v.elemType = yield* r.varint(end);
    } else if (field === 2) {
      r.expect(LEN, "TypeProto.Tensor.shape");
      v.shape = yield* readShape(r, yield* r.lengthEnd(end, "a tensor shape"), v.shape ?? []);
    } else {
      yield* r.skip(end, `TypeProto.Tensor field ${field}`);
    }
  }
}

function* readShape(r: Reader, end: number, dims: number[]): Step<number[]> {
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 1) {
      r.expect(LEN, "TensorShapeProto.dim");
      dims.push(yield* readDim(r, yield* r.lengthEnd(end, "a shape dimension")));
    } else {
      yield* r.skip(end, `TensorShapeProto field ${field}`);
    }
  }
  return dims;
}

/** One dimension: its dim_value, or -1 when it is symbolic (dim_param) or left unset. */
function* readDim(r: Reader, end: number): Step<number> {
  let dim = -1;
  while (r.pos < end) {
    const field = yield* r.tag(end);
    if (field === 1) {
      r.expect(VARINT, "Dimension.dim_value");
      const value = yield* r.int64(end);
      // Some exporters write -1 for "dynamic"; any negative value can only mean that.
      if (value < 0n) dim = -1;
      else if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(`a dimension of ${value} is out of range`);
      else dim = Number(value);
    } else if (field === 2) {
      r.expect(LEN, "Dimension.dim_param");
      yield* r.skip(end, "Dimension.dim_param");
      dim = -1;
    } else {
      yield* r.skip(end, `Dimension field ${field}`);
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
