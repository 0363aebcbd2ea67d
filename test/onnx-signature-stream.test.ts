// The streaming ONNX reader (OnnxSignatureReader, what the edge uses on a multipart upload's
// R2 body) against the whole-buffer one: on random chunkings of every file in a corpus (demo
// models, external data everywhere it hides, EPContext, truncations, corruptions, text, ORT
// marker, deep nesting) it gives exactly the same signature, or exactly the same error.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MAX_STRING_BYTES, OnnxParseError, OnnxSignatureReader, readOnnxSignature } from "../formats/onnx-signature.js";
import { makeDemoModels } from "../scripts/make-demo-models.js";
import { attributeProto, encodeModel, externalDataModel, OnnxType, valueInfoProto, type TensorDesc } from "../scripts/onnx-writer.js";
import { ProtoWriter } from "./helpers/proto-writer.js";

let dir: string;
let corpus: Array<[string, Uint8Array]>;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "onnx-stream-"));
  corpus = await buildCorpus(dir);
});

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Deterministic pseudo-random numbers (xorshift32), so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

const ext = (name: string, extra: Partial<TensorDesc> = {}): TensorDesc => ({
  name,
  elemType: OnnxType.UINT8,
  dims: [8],
  external: { location: "other.bin", offset: 0, length: 8 },
  ...extra,
});

async function buildCorpus(into: string): Promise<Array<[string, Uint8Array]>> {
  const out: Array<[string, Uint8Array]> = [];
  for (const f of await makeDemoModels(into)) out.push([`${f.name} v${f.version}`, new Uint8Array(await readFile(f.path))]);
  const mlp = out.find(([n]) => n === "demo-mlp v1")![1];
  const types = out.find(([n]) => n === "demo-types v1")![1];
  for (let len = 1; len < mlp.length; len += 13) out.push([`demo-mlp cut at ${len}`, mlp.subarray(0, len)]);
  const r = rng(7);
  for (let i = 0; i < 300; i++) {
    const bytes = types.slice();
    bytes[r() % bytes.length] = r() & 0xff;
    out.push([`demo-types flipped #${i}`, bytes]);
  }
  for (let i = 0; i < 40; i++) {
    const n = 1 + (r() % 300);
    out.push([`noise #${i}`, Uint8Array.from({ length: n }, () => r() & 0xff)]);
  }
  for (const text of ['{"inputs": []}', "   [1, 2]", "<!doctype html><title>502</title>", "\n\n\n   {" + " ".repeat(100)]) out.push([`text ${text.slice(0, 8)}`, new TextEncoder().encode(text)]);
  const ortm = mlp.slice();
  ortm.set([0x4f, 0x52, 0x54, 0x4d], 4);
  out.push(["ORTM marker", ortm]);
  out.push(["external data initializer", externalDataModel("../victim.onnx", 64)]);

  const y = { name: "y", elemType: OnnxType.UINT8, shape: [8] };
  const model = (nodes: NonNullable<Parameters<typeof encodeModel>[0]["graph"]["nodes"]>, rawFields?: Uint8Array) =>
    encodeModel({ graph: { name: "g", nodes, inputs: [], outputs: [y] }, rawFields });
  out.push(["external Constant", model([{ opType: "Constant", name: "c", inputs: [], outputs: ["y"], attributes: [{ name: "value", t: ext("k") }] }])]);
  out.push(["external tensors attribute", model([{ opType: "Custom", domain: "x.y", inputs: [], outputs: ["y"], attributes: [{ name: "ts", tensors: [ext("a"), ext("b")] }] }])]);
  out.push([
    "external in an If branch",
    model([
      {
        opType: "If",
        name: "branch",
        inputs: ["cond"],
        outputs: ["y"],
        attributes: [
          { name: "then_branch", g: { name: "b", nodes: [], inputs: [], outputs: [y], initializers: [ext("w")] } },
          { name: "else_branch", g: { name: "b", nodes: [{ opType: "Constant", name: "c", inputs: [], outputs: ["y"], attributes: [{ name: "value", t: ext("e") }] }], inputs: [], outputs: [y] } },
        ],
      },
    ]),
  ]);
  // Nodes whose name and op_type come after their attributes (the reader judges attributes
  // only once it knows them): an EPContext holding a bomb, a named node with external data,
  // and a node with a damaged attribute before its op_type.
  const lateNode = (opType: string, attrs: (ProtoWriter | Uint8Array)[], name = "late") => {
    const n = new ProtoWriter();
    for (const a of attrs) n.messageField(5, a);
    n.stringField(3, name);
    n.stringField(4, opType);
    const g = new ProtoWriter();
    g.messageField(1, n);
    g.messageField(12, valueInfoProto(y));
    const m = new ProtoWriter();
    m.messageField(7, g);
    return m.finish();
  };
  const bomb = attributeProto({ name: "value", t: { name: "bomb", elemType: OnnxType.FLOAT, dims: [1 << 30], rawFields: new Uint8Array(0) } });
  out.push(["EPContext after a bomb attribute", model([], lateNode("EPContext", [bomb]))]);
  out.push(["bomb in a late-named node", model([], lateNode("Constant", [bomb]))]);
  out.push(["external in a late-named node", model([], lateNode("Constant", [attributeProto({ name: "value", t: ext("late-k") })]))]);
  const damaged = new ProtoWriter();
  damaged.stringField(1, "broken");
  damaged.bytesField(5, new Uint8Array([0x0a, 0x7f])); // a tensor whose name runs past its end
  out.push(["EPContext after a damaged attribute", model([], lateNode("EPContext", [damaged]))]);
  out.push(["damaged attribute, late name", model([], lateNode("Relu", [damaged, bomb]))]);
  return out;
}

type Outcome = { ok: unknown } | { error: string; parse: boolean };

function outcome(read: () => unknown): Outcome {
  try {
    return { ok: read() };
  } catch (err) {
    return { error: (err as Error).message, parse: err instanceof OnnxParseError };
  }
}

/** Feeds `bytes` in chunks of random sizes (1 to maxChunk bytes), stopping at the first error as a caller would. */
function streamed(bytes: Uint8Array, seed: number, maxChunk: number): Outcome {
  const next = rng(seed);
  return outcome(() => {
    const reader = new OnnxSignatureReader(bytes.length);
    for (let at = 0; at < bytes.length; ) {
      const n = 1 + (next() % maxChunk);
      // A copy the test then wipes: the reader must not keep pointing into a caller's buffer.
      const chunk = bytes.slice(at, at + n);
      reader.push(chunk);
      chunk.fill(0xee);
      at += n;
    }
    return reader.end();
  });
}

describe("OnnxSignatureReader (streaming) gives exactly the whole-buffer reader's answer", () => {
  it("on every corpus file, for one-byte chunks and random chunkings", () => {
    expect(corpus.length).toBeGreaterThan(400);
    let refused = 0;
    for (const [label, bytes] of corpus) {
      const whole = outcome(() => readOnnxSignature(bytes));
      if ("error" in whole) refused++;
      for (const [seed, max] of [
        [1, 1],
        [2, 7],
        [3, 64],
        [4, 4096],
      ] as const) {
        expect(streamed(bytes, seed + bytes.length, max), `${label}, chunks up to ${max}`).toEqual(whole);
      }
    }
    // The corpus exercises both sides.
    expect(refused).toBeGreaterThan(100);
    expect(corpus.length - refused).toBeGreaterThan(5);
  });

  it("jumps over a large model's weights in large chunks, holding none of them", () => {
    const weights = new Uint8Array(24 * 1024 * 1024).fill(7);
    const bytes = encodeModel({
      graph: {
        name: "big",
        initializers: [
          { name: "W1", elemType: OnnxType.FLOAT, dims: [weights.length / 8], values: weights.subarray(0, weights.length / 2) },
          { name: "W2", elemType: OnnxType.FLOAT, dims: [weights.length / 8], values: weights.subarray(weights.length / 2) },
        ],
        nodes: [{ opType: "Add", inputs: ["W1", "W2"], outputs: ["y"] }],
        inputs: [],
        outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [weights.length / 8] }],
      },
    });
    const whole = outcome(() => readOnnxSignature(bytes));
    expect(whole).toMatchObject({ ok: { outputs: [{ name: "y" }] } });
    // Between chunks it holds at most a few bytes of the field it is in, never weights.
    const reader = new OnnxSignatureReader(bytes.length);
    let most = 0;
    for (let at = 0; at < bytes.length; at += 1 << 20) {
      reader.push(bytes.subarray(at, at + (1 << 20)));
      most = Math.max(most, reader.heldBytes);
    }
    expect(reader.end()).toEqual((whole as { ok: unknown }).ok);
    expect(most).toBeLessThan(1024);
    for (const [seed, max] of [
      [5, 1 << 20],
      [6, 4 << 20],
      [7, 65536],
    ] as const)
      expect(streamed(bytes, seed, max)).toEqual(whole);
  });

  it("refuses a name longer than MAX_STRING_BYTES (the one thing it must hold whole)", () => {
    const long = "n".repeat(MAX_STRING_BYTES + 1);
    const bytes = encodeModel({ graph: { name: "g", nodes: [], inputs: [], outputs: [{ name: long, elemType: OnnxType.FLOAT, shape: [1] }] } });
    const whole = outcome(() => readOnnxSignature(bytes));
    expect(whole).toMatchObject({ parse: true, error: expect.stringMatching(/at most 1048576 are supported/) });
    expect(streamed(bytes, 9, 1 << 16)).toEqual(whole);
  });

  it("tells a caller that pushes more or fewer bytes than it announced (a bug, not a bad file)", () => {
    const bytes = externalDataModel("x.bin", 8);
    const short = new OnnxSignatureReader(bytes.length + 1);
    short.push(bytes);
    expect(() => short.end()).toThrow(/got \d+ of the announced/);
    const long = new OnnxSignatureReader(bytes.length - 1);
    expect(() => long.push(bytes)).toThrow(/more than the announced/);
    expect(() => new OnnxSignatureReader(0).end()).toThrow(OnnxParseError);
  });
});
