// The ONNX signature reader against the generated demo models and hand-built edge cases, and
// the demo models themselves run in onnxruntime-node against their pure reference functions.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkExternalData, MAX_GRAPH_DEPTH, OnnxParseError, readOnnxSignature } from "../formats/onnx-signature.js";
import {
  DEMO_MLP_V1,
  DEMO_MLP_V2,
  DEMO_TYPES_CASES,
  float16Bits,
  makeDemoModels,
  referenceMlp,
  referenceTypes,
  type DemoModelFile,
  type MlpWeights,
} from "../scripts/make-demo-models.js";
import {
  encodeModel,
  externalDataModel,
  graphProto,
  OnnxType,
  type GraphDesc,
  tensorProto,
  type ModelDesc,
  type TensorDesc,
  type ValueInfoDesc,
} from "../scripts/onnx-writer.js";
import { ProtoWriter } from "./helpers/proto-writer.js";

let dir: string;
let files: DemoModelFile[];

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "onnx-signature-"));
  files = await makeDemoModels(dir);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

function demoFile(name: string, version: string): string {
  const f = files.find((m) => m.name === name && m.version === version);
  if (!f) throw new Error(`demo model ${name} v${version} was not generated`);
  return f.path;
}

async function demoBytes(name: string, version: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(demoFile(name, version)));
}

/** A one-node graph y = Identity(x), with the given x/y value infos. */
function identityGraph(x: ValueInfoDesc, y: ValueInfoDesc = { ...x, name: "y" }): GraphDesc {
  return { name: "g", nodes: [{ opType: "Identity", inputs: [x.name], outputs: [y.name] }], inputs: [x], outputs: [y] };
}

function parseError(bytes: Uint8Array): OnnxParseError {
  try {
    readOnnxSignature(bytes);
  } catch (err) {
    expect(err).toBeInstanceOf(OnnxParseError);
    return err as OnnxParseError;
  }
  throw new Error("expected readOnnxSignature to throw");
}

/** Deterministic byte noise (xorshift32), so a failure reproduces. */
function noise(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s & 0xff;
  }
  return out;
}

describe("readOnnxSignature on the demo models", () => {
  it("generates one file per demo model and version", () => {
    expect(files.map((f) => `${f.name}@${f.version}`)).toEqual(["demo-mlp@1", "demo-mlp@2", "demo-types@1"]);
    for (const f of files) expect(path.basename(f.path)).toBe(`${f.name}.v${f.version}.onnx`);
  });

  it("reads demo-mlp's signature with a dynamic batch dimension", async () => {
    for (const version of ["1", "2"]) {
      const info = readOnnxSignature(await demoBytes("demo-mlp", version));
      expect(info).toEqual({
        inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }],
        outputs: [
          { name: "logits", datatype: "FP32", shape: [-1, 3] },
          { name: "probs", datatype: "FP32", shape: [-1, 3] },
        ],
        irVersion: 8,
        opsetVersion: 17,
        producer: "inference-mesh",
        externalData: [],
      });
    }
  });

  it("leaves demo-mlp's weights (initializers) out of the inputs", async () => {
    const info = readOnnxSignature(await demoBytes("demo-mlp", "1"));
    expect(info.inputs.map((i) => i.name)).toEqual(["x"]);
  });

  it("reads one input and output per OIP datatype from demo-types", async () => {
    const info = readOnnxSignature(await demoBytes("demo-types", "1"));
    expect(info.inputs).toEqual(DEMO_TYPES_CASES.map((c) => ({ name: c.input, datatype: c.datatype, shape: [-1] })));
    expect(info.outputs).toEqual(DEMO_TYPES_CASES.map((c) => ({ name: c.output, datatype: c.datatype, shape: [-1] })));
    // The int32 constant of the Mul is an initializer, not an input.
    expect(info.inputs.map((i) => i.name)).not.toContain("two_i32");
  });
});

describe("readOnnxSignature on hand-built models", () => {
  it("drops graph inputs that are initializers, as old exporters list weights as inputs", () => {
    const bytes = encodeModel({
      irVersion: 3,
      opsetVersion: 9,
      graph: {
        name: "old",
        initializers: [
          { name: "W", elemType: OnnxType.FLOAT, dims: [2, 2], values: [1, 0, 0, 1] },
          { name: "B", elemType: OnnxType.FLOAT, dims: [2], values: [0, 0] },
        ],
        nodes: [{ opType: "Gemm", inputs: ["x", "W", "B"], outputs: ["y"] }],
        inputs: [
          { name: "x", elemType: OnnxType.FLOAT, shape: [1, 2] },
          { name: "W", elemType: OnnxType.FLOAT, shape: [2, 2] },
          { name: "B", elemType: OnnxType.FLOAT, shape: [2] },
        ],
        outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1, 2] }],
      },
    });
    const info = readOnnxSignature(bytes);
    expect(info.inputs).toEqual([{ name: "x", datatype: "FP32", shape: [1, 2] }]);
    expect(info.irVersion).toBe(3);
    expect(info.opsetVersion).toBe(9);
  });

  it("maps fixed, symbolic, unset and negative dims (-1 for every dynamic one)", () => {
    const bytes = encodeModel({
      graph: identityGraph(
        { name: "x", elemType: OnnxType.FLOAT, shape: [2, "batch", null, -1, 0, 2 ** 40] },
        { name: "y", elemType: OnnxType.FLOAT, shape: [] },
      ),
    });
    const info = readOnnxSignature(bytes);
    expect(info.inputs[0]!.shape).toEqual([2, -1, -1, -1, 0, 2 ** 40]);
    expect(info.outputs[0]!.shape).toEqual([]); // a scalar: a shape with no dims
  });

  it("skips unknown fields of every wire type", () => {
    const graph = new ProtoWriter(graphProto(identityGraph({ name: "x", elemType: OnnxType.INT64, shape: [3] })));
    // Unknown fields inside the graph too, including a 10-byte negative varint.
    graph.int64Field(900, -5);
    graph.fixed64Field(901, 0xffff_ffff_ffffn);
    graph.fixed32Field(902, 0xdeadbeef);
    graph.bytesField(903, new Uint8Array(300).fill(0xff));
    const m = new ProtoWriter();
    m.doubleField(99, 1.5);
    m.int64Field(1, 7);
    m.floatField(98, 2.5);
    m.stringField(97, "ignored");
    m.int64Field(96, 2n ** 63n);
    m.messageField(7, graph);
    const opset = new ProtoWriter();
    opset.stringField(1, "ai.onnx");
    opset.int64Field(2, 13);
    m.messageField(8, opset);
    const custom = new ProtoWriter();
    custom.stringField(1, "com.example");
    custom.int64Field(2, 1);
    m.messageField(8, custom);
    const info = readOnnxSignature(m.finish());
    expect(info.inputs).toEqual([{ name: "x", datatype: "INT64", shape: [3] }]);
    expect(info.irVersion).toBe(7);
    expect(info.opsetVersion).toBe(13);
    expect(info.producer).toBeNull();
  });

  it("reads a 100 MB model quickly, without decoding its weights", () => {
    const weights = new Uint8Array(100 * 1024 * 1024);
    const bytes = encodeModel({
      graph: {
        name: "big",
        initializers: [{ name: "W", elemType: OnnxType.FLOAT, dims: [weights.length / 4], values: weights }],
        nodes: [{ opType: "Add", inputs: ["x", "W"], outputs: ["y"] }],
        inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [weights.length / 4] }],
        outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [weights.length / 4] }],
      },
    });
    expect(bytes.length).toBeGreaterThan(weights.length);
    const started = performance.now();
    const info = readOnnxSignature(bytes);
    const elapsed = performance.now() - started;
    expect(info.inputs.map((i) => i.name)).toEqual(["x"]);
    expect(elapsed).toBeLessThan(50);
  });
});

describe("readOnnxSignature rejects what is not a usable ONNX model", () => {
  it("rejects an empty file", () => {
    expect(parseError(new Uint8Array()).message).toBe("not a valid ONNX model: the file is empty");
  });

  it("rejects JSON and HTML text as text", () => {
    for (const text of ['{"inputs": [{"name": "x"}]}', '  [1, 2, 3]', "<!doctype html><title>502</title>"]) {
      const err = parseError(new TextEncoder().encode(text));
      expect(err.message).toMatch(/^not a valid ONNX model: the file is text/);
    }
  });

  it("rejects random bytes", () => {
    for (let seed = 1; seed <= 200; seed++) {
      const err = parseError(noise(1 + (seed * 37) % 4096, seed));
      expect(err.message).toMatch(/^not a valid ONNX model: /);
    }
  });

  it("rejects every truncation that cuts into the graph", async () => {
    const full = await demoBytes("demo-mlp", "1");
    // encodeModel writes opset_import (6 bytes: tag, length, domain "", version 17) last, so
    // every shorter prefix loses part of the graph or everything from it on.
    const tail = full.length - 6;
    for (let len = 1; len < tail; len++) {
      const err = parseError(full.subarray(0, len));
      expect(err.message).toMatch(/^not a valid ONNX model: /);
    }
    expect(parseError(full.subarray(0, full.length >> 1)).message).toMatch(/truncated/);
  });

  it("never fails with anything but OnnxParseError on corrupted models", async () => {
    const full = await demoBytes("demo-types", "1");
    const flips = noise(4000, 99);
    for (let i = 0; i < 2000; i++) {
      const bytes = full.slice();
      const at = ((flips[2 * i]! << 8) | flips[2 * i + 1]!) % bytes.length;
      bytes[at] = flips[(i * 7) % flips.length]!;
      try {
        readOnnxSignature(bytes);
      } catch (err) {
        expect(err).toBeInstanceOf(OnnxParseError);
      }
    }
  });

  it("rejects a model without ir_version", () => {
    const m = new ProtoWriter();
    m.messageField(7, graphProto(identityGraph({ name: "x", elemType: OnnxType.FLOAT, shape: [1] })));
    expect(parseError(m.finish()).message).toBe("not a valid ONNX model: ir_version is missing");
  });

  it("rejects a model without a graph", () => {
    const m = new ProtoWriter();
    m.int64Field(1, 8);
    m.stringField(2, "nobody");
    expect(parseError(m.finish()).message).toBe("not a valid ONNX model: the model has no graph");
  });

  it("rejects a graph without outputs", () => {
    const bytes = encodeModel({
      graph: { name: "g", nodes: [], inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1] }], outputs: [] },
    });
    expect(parseError(bytes).message).toBe("not a valid ONNX model: the graph declares no outputs");
  });

  it("rejects a length that runs past the end", () => {
    // ir_version 8, then a graph field announcing 16 bytes that are not there.
    const err = parseError(new Uint8Array([0x08, 0x08, 0x3a, 0x10, 0x0a]));
    expect(err.message).toMatch(/^not a valid ONNX model: .*runs past the end/);
  });

  it("rejects protobuf groups and invalid wire types", () => {
    // ir_version 8, then field 9 as a group start (wire type 3) / with wire type 6.
    expect(parseError(new Uint8Array([0x08, 0x08, 0x4b, 0x4c])).message).toMatch(/field 9 uses a protobuf group/);
    expect(parseError(new Uint8Array([0x08, 0x08, 0x4e, 0x00])).message).toMatch(/field 9 has an invalid protobuf wire type 6/);
    // A group where a known field belongs fails the same way.
    expect(parseError(new Uint8Array([0x0b, 0x0c])).message).toMatch(/field 1 uses a protobuf group/);
  });

  it("names the tensor and the type it cannot carry", () => {
    const bytes = encodeModel({ graph: identityGraph({ name: "z", elemType: OnnxType.COMPLEX64, shape: [2] }) });
    expect(parseError(bytes).message).toBe(
      "unsupported ONNX model: input 'z' has type COMPLEX64, which the Open Inference Protocol cannot carry",
    );
    const out = encodeModel({
      graph: identityGraph({ name: "x", elemType: OnnxType.FLOAT, shape: [2] }, { name: "w", elemType: 22, shape: [2] }),
    });
    expect(parseError(out).message).toMatch(/output 'w' has type INT4/);
  });

  it("rejects tensors without an element type or a shape, and non-tensor values", () => {
    const noElem = encodeModel({ graph: identityGraph({ name: "x", elemType: 0, shape: [1] }) });
    expect(parseError(noElem).message).toMatch(/input 'x' has no element type/);
    const noShape = encodeModel({ graph: identityGraph({ name: "x", elemType: OnnxType.FLOAT }) });
    expect(parseError(noShape).message).toMatch(/input 'x' declares no shape/);

    // A graph input typed as a sequence (TypeProto.sequence_type = 4).
    const g = new ProtoWriter(graphProto({ name: "g", nodes: [], inputs: [], outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1] }] }));
    const seqType = new ProtoWriter();
    seqType.messageField(4, new ProtoWriter());
    const seq = new ProtoWriter();
    seq.stringField(1, "xs");
    seq.messageField(2, seqType);
    g.messageField(11, seq);
    const m = new ProtoWriter();
    m.int64Field(1, 8);
    m.messageField(7, g);
    expect(parseError(m.finish()).message).toBe("unsupported ONNX model: input 'xs' is a sequence, not a tensor");
  });

  it("rejects names that are not UTF-8", () => {
    const v = new ProtoWriter();
    v.bytesField(1, new Uint8Array([0xff, 0xfe]));
    const g = new ProtoWriter(graphProto({ name: "g", nodes: [], inputs: [], outputs: [] }));
    g.messageField(12, v);
    const m = new ProtoWriter();
    m.int64Field(1, 8);
    m.messageField(7, g);
    expect(parseError(m.finish()).message).toMatch(/not valid UTF-8/);
  });
});

describe("readOnnxSignature finds every external-data reference (a hostile upload reading other files)", () => {
  const victim = "0".repeat(64) + ".onnx";
  /** A UINT8 tensor whose 8 bytes live in the victim's file. */
  const ext = (name: string, extra: Partial<TensorDesc> = {}): TensorDesc => ({
    name,
    elemType: OnnxType.UINT8,
    dims: [8],
    external: { location: victim, offset: 0, length: 8 },
    ...extra,
  });
  const out: ValueInfoDesc = { name: "y", elemType: OnnxType.UINT8, shape: [8] };
  /** A model whose main graph returns `y`, with extra nodes/initializers where the tensor hides. */
  const model = (graph: Partial<GraphDesc>, more: Partial<ModelDesc> = {}): Uint8Array =>
    encodeModel({ graph: { name: "g", nodes: [], inputs: [], outputs: [out], ...graph }, ...more });
  /** A Constant node holding `t` as its value attribute. */
  const constant = (t: TensorDesc, output = "y") => ({ opType: "Constant", name: "c", inputs: [], outputs: [output], attributes: [{ name: "value", t }] });
  /** An If node whose then/else branches are the given graphs. */
  const ifNode = (then: GraphDesc, other: GraphDesc = then) => ({
    opType: "If",
    name: "branch",
    inputs: ["cond"],
    outputs: ["y"],
    attributes: [
      { name: "then_branch", g: then },
      { name: "else_branch", g: other },
    ],
  });
  const branch = (g: Partial<GraphDesc>): GraphDesc => ({ name: "b", nodes: [], inputs: [], outputs: [out], ...g });

  function refusedFor(bytes: Uint8Array): string {
    const info = readOnnxSignature(bytes);
    expect(info.externalData.length).toBeGreaterThan(0);
    try {
      checkExternalData(info, new Set());
    } catch (err) {
      expect(err).toBeInstanceOf(OnnxParseError);
      return (err as Error).message;
    }
    throw new Error("expected checkExternalData to refuse the model");
  }

  const hiding: Array<[string, () => Uint8Array, RegExp]> = [
    ["a graph initializer", () => model({ nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["y"] }], initializers: [ext("w")] }), /tensor 'w' \(initializer\)/],
    [
      "a sparse initializer's values",
      () =>
        model({
          nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["y"] }],
          sparseInitializers: [{ values: ext("w"), indices: { name: "", elemType: OnnxType.INT64, dims: [8], values: [0, 1, 2, 3, 4, 5, 6, 7].map(BigInt) }, dims: [8] }],
        }),
      /tensor 'w' \(sparse initializer\)/,
    ],
    ["a Constant node's value", () => model({ nodes: [constant(ext("k"))] }), /tensor 'k' \(attribute 'value' of node 'c'\)/],
    [
      "a tensors attribute",
      () => model({ nodes: [{ opType: "Custom", domain: "x.y", inputs: [], outputs: ["y"], attributes: [{ name: "ts", tensors: [ext("a")] }] }] }),
      /tensor 'a' \(attribute 'ts' of a node\)/,
    ],
    [
      "a sparse_tensor attribute",
      () =>
        model({
          nodes: [
            {
              opType: "Constant",
              inputs: [],
              outputs: ["y"],
              attributes: [{ name: "sparse_value", sparse: { values: { name: "v", elemType: OnnxType.UINT8, dims: [1], values: [1] }, indices: ext("i", { elemType: OnnxType.INT64 }), dims: [8] } }],
            },
          ],
        }),
      /tensor 'i'/,
    ],
    ["an If branch's initializer", () => model({ nodes: [ifNode(branch({ initializers: [ext("w")], nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["y"] }] }))] }), /tensor 'w' \(initializer\)/],
    [
      "a Constant two subgraphs deep (Loop in an If)",
      () =>
        model({
          nodes: [
            ifNode(
              branch({ nodes: [constant({ name: "fine", elemType: OnnxType.UINT8, dims: [8], values: new Uint8Array(8) })] }),
              branch({ nodes: [{ opType: "Loop", inputs: ["n", ""], outputs: ["y"], attributes: [{ name: "body", g: branch({ nodes: [constant(ext("deep"))] }) }] }] }),
            ),
          ],
        }),
      /tensor 'deep' \(attribute 'value' of node 'c'\)/,
    ],
    [
      "a Scan body in the graphs attribute form",
      () => model({ nodes: [{ opType: "Custom", domain: "x.y", inputs: [], outputs: ["y"], attributes: [{ name: "bodies", graphs: [branch({}), branch({ initializers: [ext("s")] })] }] }] }),
      /tensor 's' \(initializer\)/,
    ],
    [
      "a model-local function's body",
      () =>
        model(
          { nodes: [{ opType: "Leak", domain: "local", inputs: [], outputs: ["y"] }] },
          { functions: [{ name: "Leak", domain: "local", inputs: [], outputs: ["y"], nodes: [constant(ext("f"))] }] },
        ),
      /tensor 'f' \(attribute 'value' of node 'c'\)/,
    ],
    [
      "a training_info graph",
      () => {
        const training = new ProtoWriter();
        training.messageField(1, graphProto(branch({ initializers: [ext("t")] })));
        const raw = new ProtoWriter();
        raw.messageField(20, training);
        return model({ nodes: [constant({ name: "ok", elemType: OnnxType.UINT8, dims: [8], values: new Uint8Array(8) })] }, { rawFields: raw.finish() });
      },
      /tensor 't' \(initializer\)/,
    ],
  ];

  for (const [where, build, names] of hiding) {
    it(`finds and refuses external data in ${where}`, () => {
      const message = refusedFor(build());
      expect(message).toMatch(names);
      expect(message).toContain(`from file '${victim}'`);
      expect(message).toMatch(/^unsupported ONNX model: .*single-file upload must carry every tensor's data inside the \.onnx file/);
    });
  }

  it("counts data_location EXTERNAL without a location, and external_data entries without the flag", () => {
    const flagOnly = model({ nodes: [constant({ name: "k", elemType: OnnxType.UINT8, dims: [8], rawFields: new Uint8Array([0x70, 0x01]) })] });
    expect(readOnnxSignature(flagOnly).externalData).toMatchObject([{ tensor: "k", where: "attribute 'value' of node 'c'", location: null }]);
    expect(refusedFor(flagOnly)).toMatch(/but names no file/);
    const entriesOnly = model({ nodes: [constant(ext("k", { external: { location: victim, markExternal: false } }))] });
    expect(readOnnxSignature(entriesOnly).externalData).toMatchObject([{ tensor: "k", where: "attribute 'value' of node 'c'", location: victim }]);
  });

  it("lets a bundle name its own files exactly, and nothing else", () => {
    const ok = readOnnxSignature(externalDataModel("weights.bin", 8));
    expect(() => checkExternalData(ok, new Set(["weights.bin"]))).not.toThrow();
    expect(() => checkExternalData(ok, new Set(["other.bin"]))).toThrow(/from file 'weights.bin'.*a version may only read files uploaded with it/);
    for (const sneaky of ["../weights.bin", "./weights.bin", "/weights.bin", "a/../weights.bin", "C:weights.bin", "a\\weights.bin"]) {
      const info = readOnnxSignature(externalDataModel(sneaky, 8));
      expect(() => checkExternalData(info, new Set([sneaky])), sneaky).toThrow(OnnxParseError);
    }
  });

  it("checks a bundle file's reads against its size: offset + length inside the file, the length what the dims need", () => {
    const sized = (location: string, length: number, offset = 0) => readOnnxSignature(externalDataModel(location, length, offset));
    expect(sized("weights.bin", 8).externalData).toEqual([{ tensor: "w", where: "initializer", location: "weights.bin", offset: 0, length: 8, bytes: 8 }]);
    expect(() => checkExternalData(sized("weights.bin", 8), new Map([["weights.bin", 8]]))).not.toThrow();
    expect(() => checkExternalData(sized("weights.bin", 8, 4), new Map([["weights.bin", 12]]))).not.toThrow();
    expect(() => checkExternalData(sized("weights.bin", 8, 4), new Map([["weights.bin", 11]]))).toThrow(/reads bytes 4 to 12 of 'weights.bin', which has 11 bytes/);
    expect(() => checkExternalData(sized("weights.bin", 8), new Map([["other.bin", 100]]))).toThrow(/a version may only read files uploaded with it/);
    // A length that disagrees with the tensor's dims (onnxruntime would refuse or misread it).
    const short = readOnnxSignature(
      encodeModel({
        graph: {
          name: "short",
          nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["y"] }],
          inputs: [],
          outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [4] }],
          initializers: [{ name: "w", elemType: OnnxType.FLOAT, dims: [4], external: { location: "weights.bin", offset: 0, length: 8 } }],
        },
      }),
    );
    expect(() => checkExternalData(short, new Map([["weights.bin", 100]]))).toThrow(/reads 8 bytes of 'weights.bin' but its dims need 16/);
    // No length: the dims' bytes are what is read.
    const noLength = readOnnxSignature(
      encodeModel({
        graph: {
          name: "nolength",
          nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["y"] }],
          inputs: [],
          outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [4] }],
          initializers: [{ name: "w", elemType: OnnxType.FLOAT, dims: [4], external: { location: "weights.bin" } }],
        },
      }),
    );
    expect(() => checkExternalData(noLength, new Map([["weights.bin", 16]]))).not.toThrow();
    expect(() => checkExternalData(noLength, new Map([["weights.bin", 15]]))).toThrow(/reads bytes 0 to 16/);
  });

  it("refuses EPContext nodes, whose ep_cache_context may name a file next to the model", () => {
    const bytes = model({
      nodes: [
        { opType: "EPContext", domain: "com.microsoft", name: "ctx", inputs: [], outputs: ["y"], attributes: [{ name: "embed_mode", i: 0 }, { name: "ep_cache_context", s: `${victim}` }] },
      ],
    });
    expect(parseError(bytes).message).toBe("unsupported ONNX model: node 'ctx' is an EPContext node (a precompiled execution-provider graph, possibly in another file)");
  });

  it("refuses a protobuf file that onnxruntime would read as its ORT format (a polyglot)", () => {
    // ir_version 8, then an unknown 4-byte field holding "ORTM" at offsets 4..7, then a model.
    const model = encodeModel({ graph: identityGraph({ name: "x", elemType: OnnxType.FLOAT, shape: [1] }) });
    const polyglot = new Uint8Array([0x08, 0x08, 0x7a, 0x04, 0x4f, 0x52, 0x54, 0x4d, ...model]);
    expect(parseError(polyglot).message).toMatch(/^unsupported ONNX model: the file is marked as onnxruntime's ORT format/);
    // The same prefix with other bytes is just an unknown field.
    expect(readOnnxSignature(new Uint8Array([0x08, 0x08, 0x7a, 0x04, 0x4f, 0x52, 0x54, 0x58, ...model])).outputs).toHaveLength(1);
  });

  it("finds nothing in the demo models", async () => {
    for (const f of files) expect(readOnnxSignature(await demoBytes(f.name, f.version)).externalData).toEqual([]);
  });

  it("the attack is real: onnxruntime reads a sibling file's bytes through external data", async () => {
    const { writeFile } = await import("node:fs/promises");
    const secret = new Uint8Array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]);
    await writeFile(path.join(dir, "victim.bin"), secret);
    await writeFile(path.join(dir, "attack.onnx"), externalDataModel("victim.bin", 8, 2));
    const session = await ort.InferenceSession.create(path.join(dir, "attack.onnx"));
    const result = await session.run({});
    expect(Array.from(result.leak!.data as Uint8Array)).toEqual(Array.from(secret.subarray(2, 10)));
    expect(refusedFor(externalDataModel("victim.bin", 8, 2))).toMatch(/tensor 'w' \(initializer\) reads its data from outside the model, from file 'victim.bin'/);
  });
});

/** Varint bytes of a non-negative integer below 2^53. */
function varintBytes(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

/**
 * A model whose graph holds `depth` subgraphs each inside the last (node -> attribute g ->
 * graph), built inside out in linear time, since ProtoWriter would copy each level's parts.
 */
function nestedSubgraphs(depth: number): Uint8Array {
  // Per level, from the outside in: graph.node(1) { node.attribute(5) { attribute.g(6) { inner } } }.
  const headers: number[][] = [];
  let inner = 0;
  for (let i = 0; i < depth; i++) {
    const g = [0x32, ...varintBytes(inner)]; // attribute.g, field 6
    const a = [0x2a, ...varintBytes(g.length + inner)]; // node.attribute, field 5
    const n = [0x0a, ...varintBytes(a.length + g.length + inner)]; // graph.node, field 1
    const header = [...n, ...a, ...g];
    headers.push(header);
    inner += header.length;
  }
  const top = [0x08, 0x08, 0x3a, ...varintBytes(inner)]; // ir_version 8, graph (field 7)
  const out = new Uint8Array(top.length + inner);
  out.set(top);
  let at = top.length;
  for (let i = headers.length - 1; i >= 0; i--) {
    out.set(headers[i]!, at);
    at += headers[i]!.length;
  }
  return out;
}

describe("readOnnxSignature bounds what a hostile file can make it (or a runtime) do", () => {
  it("bounds subgraph nesting (recursion), however deep the file goes", () => {
    const ok = nestedSubgraphs(MAX_GRAPH_DEPTH);
    // Within the bound the walk finishes and only the missing outputs are wrong.
    expect(parseError(ok).message).toBe("not a valid ONNX model: the graph declares no outputs");
    expect(parseError(nestedSubgraphs(MAX_GRAPH_DEPTH + 1)).message).toBe(`unsupported ONNX model: subgraphs are nested more than ${MAX_GRAPH_DEPTH} deep`);
    // 200,000 levels (3.4 MB): a stack overflow without the bound; with it, the same clear error.
    expect(parseError(nestedSubgraphs(200_000)).message).toMatch(/nested more than/);
  });

  it("refuses a huge declared length anywhere (it is never allocated or trusted)", () => {
    // A Constant in an If branch whose raw_data claims 2^50 bytes. No encoder writes that, so
    // the branch is put together by hand around the spliced tensor.
    const claim = new Uint8Array([0x4a, ...varintBytes(2 ** 50), 1, 2, 3]);
    const tensor = new Uint8Array([...tensorProto({ name: "k", elemType: OnnxType.FLOAT, dims: [1], values: [] }), ...claim]);
    const value = new ProtoWriter().stringField(1, "value").messageField(5, tensor).int64Field(20, 4); // type TENSOR
    const constant = new ProtoWriter().stringField(2, "y").stringField(4, "Constant").messageField(5, value);
    const branch = new ProtoWriter(graphProto({ name: "b", nodes: [], inputs: [], outputs: [] })).messageField(1, constant);
    const thenBranch = new ProtoWriter().stringField(1, "then_branch").messageField(6, branch).int64Field(20, 5); // type GRAPH
    const ifNode = new ProtoWriter().stringField(1, "c").stringField(2, "y").stringField(4, "If").messageField(5, thenBranch);
    const graph = new ProtoWriter(graphProto({ name: "g", nodes: [], inputs: [], outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1] }] })).messageField(1, ifNode);
    const bytes = new ProtoWriter().int64Field(1, 8).messageField(7, graph).finish();
    expect(parseError(bytes).message).toMatch(/^not a valid ONNX model: .*runs past the end of its data/);
  });

  const withConstant = (t: TensorDesc) =>
    encodeModel({
      graph: { name: "g", inputs: [], outputs: [{ name: "y", elemType: t.elemType, shape: t.dims }], nodes: [{ opType: "Constant", name: "c", inputs: [], outputs: ["y"], attributes: [{ name: "value", t }] }] },
    });

  it("refuses a tensor that declares far more elements than it carries (a runtime sizes its buffer from dims)", () => {
    const bomb = withConstant({ name: "k", elemType: OnnxType.FLOAT, dims: [1_000_000_000], values: [1] });
    expect(parseError(bomb).message).toBe("not a valid ONNX model: tensor 'k' (attribute 'value' of node 'c') declares 1000000000 elements but carries 4 bytes of data");
    const overflow = withConstant({ name: "k", elemType: OnnxType.FLOAT, dims: [2 ** 31, 2 ** 31, 2 ** 31], values: [1] });
    expect(parseError(overflow).message).toMatch(/tensor 'k' .* declares \d.* elements but carries 4 bytes/);
    const negative = withConstant({ name: "k", elemType: OnnxType.FLOAT, dims: [-1], values: [1] });
    expect(parseError(negative).message).toMatch(/negative dimension -1/);
    // An initializer of the main graph is held to the same rule.
    const init = encodeModel({
      graph: { ...identityGraph({ name: "x", elemType: OnnxType.FLOAT, shape: [1] }), initializers: [{ name: "w", elemType: OnnxType.FLOAT, dims: [1 << 20], values: [1] }] },
    });
    expect(parseError(init).message).toMatch(/tensor 'w' \(initializer\) declares 1048576 elements/);
  });

  it("checks a repeated singular tensor as the one merged tensor protobuf makes of it", () => {
    // Two occurrences of a Constant's `value`, each [1000] with 4000 bytes: protobuf merges them
    // into one tensor of dims [1000, 1000] (a million elements) that still carries 8000 bytes.
    const half = (): TensorDesc => ({ name: "k", elemType: OnnxType.FLOAT, dims: [1000], values: new Uint8Array(4000) });
    const attribute = new ProtoWriter();
    attribute.stringField(1, "value");
    attribute.messageField(5, tensorProto(half()));
    attribute.messageField(5, tensorProto(half()));
    attribute.int64Field(20, 4);
    const node = new ProtoWriter();
    node.stringField(2, "y");
    node.stringField(3, "c");
    node.stringField(4, "Constant");
    node.messageField(5, attribute);
    const g = new ProtoWriter(graphProto({ name: "g", nodes: [], inputs: [], outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1000, 1000] }] }));
    g.messageField(1, node);
    const m = new ProtoWriter();
    m.int64Field(1, 8);
    m.messageField(7, g);
    expect(parseError(m.finish()).message).toBe("not a valid ONNX model: tensor 'k' (attribute 'value' of node 'c') declares 1000000 elements but carries 8000 bytes of data");
  });

  it("counts string tensors exactly: one string_data entry per declared element", () => {
    expect(readOnnxSignature(withConstant({ name: "s", elemType: OnnxType.STRING, dims: [2], values: ["a", "b"] })).outputs).toEqual([{ name: "y", datatype: "BYTES", shape: [2] }]);
    expect(parseError(withConstant({ name: "s", elemType: OnnxType.STRING, dims: [100_000_000], values: ["a"] })).message).toBe(
      "not a valid ONNX model: tensor 's' (attribute 'value' of node 'c') declares 100000000 elements but carries 1 strings",
    );
  });

  it("keeps real tensors: packed and unpacked typed fields, empty tensors, 4-bit packing", () => {
    const packed = new ProtoWriter();
    packed.packedVarints(7, [1n, 2n, 3n, 4n]);
    expect(() => readOnnxSignature(withConstant({ name: "k", elemType: OnnxType.INT64, dims: [4], rawFields: packed.finish() }))).not.toThrow();
    expect(() => readOnnxSignature(withConstant({ name: "k", elemType: OnnxType.FLOAT, dims: [0, 5], values: [] }))).not.toThrow();
    expect(() => readOnnxSignature(withConstant({ name: "k", elemType: OnnxType.UINT8, dims: [4096], values: new Uint8Array(4096) }))).not.toThrow();
  });

  it("bounds the signature: how many inputs and outputs, and how big", () => {
    const many = Array.from({ length: 1025 }, (_, i) => ({ name: `y${i}`, elemType: OnnxType.FLOAT, shape: [1] }));
    const wide = encodeModel({ graph: { name: "g", nodes: [], inputs: [], outputs: many } });
    expect(parseError(wide).message).toBe("unsupported ONNX model: the graph has 0 inputs and 1025 outputs; at most 1024 of each are supported");
    const long = Array.from({ length: 300 }, (_, i) => ({ name: `${i}`.padEnd(1000, "n"), elemType: OnnxType.FLOAT, shape: [1] }));
    const big = encodeModel({ graph: { name: "g", nodes: [], inputs: [], outputs: long } });
    expect(parseError(big).message).toMatch(/^unsupported ONNX model: the graph's inputs and outputs \(names and shapes\) take \d+ bytes; at most 262144/);
  });
});

describe("the demo models in onnxruntime-node", () => {
  const batch = [
    [0, 0, 0, 0],
    [1, 2, 3, 4],
    [-1.5, 0.25, 2, -0.75],
    [10, -3, 0.5, 7],
  ];

  async function runMlp(version: string): Promise<{ logits: number[][]; probs: number[][] }> {
    const session = await ort.InferenceSession.create(demoFile("demo-mlp", version));
    try {
      const x = new ort.Tensor("float32", Float32Array.from(batch.flat()), [batch.length, 4]);
      const out = await session.run({ x });
      const rows = (t: ort.Tensor) => {
        expect(t.dims).toEqual([batch.length, 3]);
        const data = Array.from(t.data as Float32Array);
        return batch.map((_, i) => data.slice(i * 3, i * 3 + 3));
      };
      return { logits: rows(out.logits!), probs: rows(out.probs!) };
    } finally {
      await session.release();
    }
  }

  function expectClose(actual: number[][], expected: number[][]): void {
    expect(actual.length).toBe(expected.length);
    actual.forEach((row, i) => row.forEach((v, j) => expect(Math.abs(v - expected[i]![j]!)).toBeLessThan(1e-5)));
  }

  for (const [version, weights] of [["1", DEMO_MLP_V1], ["2", DEMO_MLP_V2]] as [string, MlpWeights][]) {
    it(`demo-mlp v${version} matches the float64 reference`, async () => {
      const got = await runMlp(version);
      const want = referenceMlp(weights, batch);
      expectClose(got.logits, want.logits);
      expectClose(got.probs, want.probs);
      for (const row of got.probs) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    });
  }

  it("demo-mlp v1 and v2 answer differently", () => {
    const v1 = referenceMlp(DEMO_MLP_V1, batch);
    const v2 = referenceMlp(DEMO_MLP_V2, batch);
    for (let i = 1; i < batch.length; i++) {
      const diff = Math.max(...v1.logits[i]!.map((v, j) => Math.abs(v - v2.logits[i]![j]!)));
      expect(diff).toBeGreaterThan(0.1);
    }
  });

  it("demo-types round-trips every datatype exactly", async () => {
    // Values that probe each type's limits, but whose doubling does not overflow.
    const values: Record<string, { type: ort.Tensor.Type; data: ort.Tensor.DataType | string[] }> = {
      i64: { type: "int64", data: BigInt64Array.from([0n, -3n, 2n ** 40n, -(2n ** 61n)]) },
      i32: { type: "int32", data: Int32Array.from([0, -7, 1 << 20, -(2 ** 30)]) },
      u8: { type: "uint8", data: Uint8Array.from([0, 1, 128, 255]) },
      i8: { type: "int8", data: Int8Array.from([-128, -1, 0, 127]) },
      u16: { type: "uint16", data: Uint16Array.from([0, 1, 32768, 65535]) },
      i16: { type: "int16", data: Int16Array.from([-32768, -1, 0, 32767]) },
      u32: { type: "uint32", data: Uint32Array.from([0, 1, 2 ** 31, 2 ** 32 - 1]) },
      u64: { type: "uint64", data: BigUint64Array.from([0n, 1n, 2n ** 63n, 2n ** 64n - 1n]) },
      f64: { type: "float64", data: Float64Array.from([0, -1.5, Math.PI, 1e300]) },
      f16: { type: "float16", data: Uint16Array.from([0, 1.5, -2, 0.0999755859375].map(float16Bits)) },
      b: { type: "bool", data: Uint8Array.from([1, 0, 0, 1]) },
      s: { type: "string", data: ["", "hello", "héllo wörld", "日本語"] },
    };
    const session = await ort.InferenceSession.create(demoFile("demo-types", "1"));
    try {
      const feeds: Record<string, ort.Tensor> = {};
      for (const c of DEMO_TYPES_CASES) {
        const v = values[c.input]!;
        feeds[c.input] = new ort.Tensor(v.type, v.data as never, [4]);
      }
      const out = await session.run(feeds);
      for (const c of DEMO_TYPES_CASES) {
        const v = values[c.input]!;
        const got = out[c.output]!;
        expect(got.type, c.output).toBe(v.type);
        expect(got.dims, c.output).toEqual([4]);
        const want = Array.from(v.data as ArrayLike<number | bigint | string>, (x) => referenceTypes(c, x));
        expect(Array.from(got.data as ArrayLike<unknown>), c.output).toEqual(want);
      }
    } finally {
      await session.release();
    }
  });
});
