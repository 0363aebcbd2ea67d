// Generates the demo ONNX models the mesh serves out of the box and the tests run against:
// a tiny MLP classifier in two versions (same graph, different weights, so a test can tell
// which version answered) and a "types" model with one input per OIP datatype. Weights come
// from fixed formulas in multiples of 1/8, exact in float32, so outputs are predictable, and
// the pure reference functions here let tests compute expected outputs independently of
// onnxruntime.
//
// Run: npx tsx scripts/make-demo-models.ts [dir]   (default dir: .mesh/models)

import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { pathToFileURL } from "node:url";
import type { OipDatatype } from "../formats/datatypes.js";
import { encodeModel, float16Bits, float16Value, OnnxType, type ModelDesc, type NodeDesc, type ValueInfoDesc } from "./onnx-writer.js";

export interface DemoModelFile {
  name: string;
  /** OIP model versions are strings ("1", "2"). */
  version: string;
  /** Absolute path of the written .onnx file. */
  path: string;
}

// ---------------------------------------------------------------------------------------------
// demo-mlp: x[batch,4] -> Gemm -> Relu -> Gemm -> logits[batch,3] -> Softmax -> probs[batch,3]

export const MLP_INPUTS = 4;
export const MLP_HIDDEN = 8;
export const MLP_CLASSES = 3;

export interface MlpWeights {
  /** [4][8] */
  w1: number[][];
  /** [8] */
  b1: number[];
  /** [8][3] */
  w2: number[][];
  /** [3] */
  b2: number[];
}

function matrix(rows: number, cols: number, f: (i: number, j: number) => number): number[][] {
  return Array.from({ length: rows }, (_, i) => Array.from({ length: cols }, (_, j) => f(i, j)));
}

function vector(n: number, f: (i: number) => number): number[] {
  return Array.from({ length: n }, (_, i) => f(i));
}

/** Version 1: small weights in [-0.5, 0.5], multiples of 1/4 and 1/8. */
export const DEMO_MLP_V1: MlpWeights = {
  w1: matrix(MLP_INPUTS, MLP_HIDDEN, (i, j) => (((i + 2 * j) % 5) - 2) / 4),
  b1: vector(MLP_HIDDEN, (j) => ((j % 3) - 1) / 8),
  w2: matrix(MLP_HIDDEN, MLP_CLASSES, (j, k) => (((j + k) % 3) - 1) / 2),
  b2: [0.125, 0, -0.125],
};

/** Version 2: a different formula, so v1 and v2 give clearly different outputs. */
export const DEMO_MLP_V2: MlpWeights = {
  w1: matrix(MLP_INPUTS, MLP_HIDDEN, (i, j) => (((3 * i + j) % 4) - 1.5) / 4),
  b1: vector(MLP_HIDDEN, (j) => (j % 2 === 0 ? 0.25 : -0.125)),
  w2: matrix(MLP_HIDDEN, MLP_CLASSES, (j, k) => (((2 * j + k) % 5) - 2) / 4),
  b2: [-0.25, 0.125, 0.5],
};

/** The MLP in float64: what onnxruntime computes in float32, up to rounding. */
export function referenceMlp(weights: MlpWeights, x: number[][]): { logits: number[][]; probs: number[][] } {
  const logits = x.map((row) => {
    const hidden = weights.b1.map((b, j) => {
      let sum = b;
      for (let i = 0; i < MLP_INPUTS; i++) sum += row[i]! * weights.w1[i]![j]!;
      return Math.max(0, sum); // Relu
    });
    return weights.b2.map((b, k) => {
      let sum = b;
      for (let j = 0; j < MLP_HIDDEN; j++) sum += hidden[j]! * weights.w2[j]![k]!;
      return sum;
    });
  });
  const probs = logits.map((row) => {
    const max = Math.max(...row); // shift for numerical stability, as Softmax kernels do
    const exps = row.map((v) => Math.exp(v - max));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / total);
  });
  return { logits, probs };
}

function mlpModel(weights: MlpWeights, version: string): ModelDesc {
  return {
    producerVersion: version,
    docString: `demo-mlp version ${version}: 4 features -> 8 hidden (Relu) -> 3 classes (logits, softmax probs)`,
    graph: {
      name: "demo_mlp",
      initializers: [
        { name: "W1", elemType: OnnxType.FLOAT, dims: [MLP_INPUTS, MLP_HIDDEN], values: weights.w1.flat() },
        { name: "b1", elemType: OnnxType.FLOAT, dims: [MLP_HIDDEN], values: weights.b1 },
        { name: "W2", elemType: OnnxType.FLOAT, dims: [MLP_HIDDEN, MLP_CLASSES], values: weights.w2.flat() },
        { name: "b2", elemType: OnnxType.FLOAT, dims: [MLP_CLASSES], values: weights.b2 },
      ],
      nodes: [
        { opType: "Gemm", name: "fc1", inputs: ["x", "W1", "b1"], outputs: ["h1"] },
        { opType: "Relu", name: "relu1", inputs: ["h1"], outputs: ["h1_relu"] },
        { opType: "Gemm", name: "fc2", inputs: ["h1_relu", "W2", "b2"], outputs: ["logits"] },
        { opType: "Softmax", name: "softmax", inputs: ["logits"], outputs: ["probs"], attributes: [{ name: "axis", i: -1 }] },
      ],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: ["batch", MLP_INPUTS] }],
      outputs: [
        { name: "logits", elemType: OnnxType.FLOAT, shape: ["batch", MLP_CLASSES] },
        { name: "probs", elemType: OnnxType.FLOAT, shape: ["batch", MLP_CLASSES] },
      ],
    },
  };
}

// ---------------------------------------------------------------------------------------------
// demo-types: one 1-D input per OIP datatype, each with a simple output.
//
// Every case below was checked on onnxruntime-node 1.30 (CPU), float16 Add included. Left out:
// BF16, because onnxruntime-node's JS Tensor has no bfloat16 type, so no client could feed it.

/** What a demo-types output is, as a function of its input. */
export type DemoTypesOp = "double" | "times2" | "identity" | "not";

export interface DemoTypesCase {
  input: string;
  output: string;
  datatype: OipDatatype;
  /** ONNX element type of both input and output. */
  elemType: number;
  op: DemoTypesOp;
}

export const DEMO_TYPES_CASES: readonly DemoTypesCase[] = [
  { input: "i64", output: "i64_out", datatype: "INT64", elemType: OnnxType.INT64, op: "double" },
  { input: "i32", output: "i32_out", datatype: "INT32", elemType: OnnxType.INT32, op: "times2" },
  { input: "u8", output: "u8_out", datatype: "UINT8", elemType: OnnxType.UINT8, op: "identity" },
  { input: "i8", output: "i8_out", datatype: "INT8", elemType: OnnxType.INT8, op: "identity" },
  { input: "u16", output: "u16_out", datatype: "UINT16", elemType: OnnxType.UINT16, op: "identity" },
  { input: "i16", output: "i16_out", datatype: "INT16", elemType: OnnxType.INT16, op: "identity" },
  { input: "u32", output: "u32_out", datatype: "UINT32", elemType: OnnxType.UINT32, op: "identity" },
  { input: "u64", output: "u64_out", datatype: "UINT64", elemType: OnnxType.UINT64, op: "identity" },
  { input: "f64", output: "f64_out", datatype: "FP64", elemType: OnnxType.DOUBLE, op: "double" },
  { input: "f16", output: "f16_out", datatype: "FP16", elemType: OnnxType.FLOAT16, op: "double" },
  { input: "b", output: "b_out", datatype: "BOOL", elemType: OnnxType.BOOL, op: "not" },
  { input: "s", output: "s_out", datatype: "BYTES", elemType: OnnxType.STRING, op: "identity" },
];

/**
 * One output element of a demo-types case from its input element, with values as
 * onnxruntime-node carries them: bigint for 64-bit ints, IEEE half bits for FP16, 0/1 or
 * boolean for BOOL, strings for BYTES. Integer doubling wraps in onnxruntime; the demo
 * values stay far from the limits.
 */
export function referenceTypes(c: DemoTypesCase, value: number | bigint | boolean | string): number | bigint | boolean | string {
  switch (c.op) {
    case "identity":
      return value;
    case "not":
      return typeof value === "boolean" ? !value : value ? 0 : 1;
    case "double":
    case "times2":
      if (typeof value === "bigint") return value * 2n;
      // Doubling a half is exact (an exponent bump) unless it overflows to infinity.
      if (c.datatype === "FP16") return float16Bits(float16Value(Number(value)) * 2);
      return Number(value) * 2;
  }
}

function typesNode(c: DemoTypesCase): NodeDesc {
  switch (c.op) {
    case "double":
      return { opType: "Add", name: `${c.input}_add`, inputs: [c.input, c.input], outputs: [c.output] };
    case "times2":
      return { opType: "Mul", name: `${c.input}_mul`, inputs: [c.input, "two_i32"], outputs: [c.output] };
    case "not":
      return { opType: "Not", name: `${c.input}_not`, inputs: [c.input], outputs: [c.output] };
    case "identity":
      return { opType: "Identity", name: `${c.input}_identity`, inputs: [c.input], outputs: [c.output] };
  }
}

function typesModel(): ModelDesc {
  const io = (name: string, elemType: number): ValueInfoDesc => ({ name, elemType, shape: ["n"] });
  return {
    producerVersion: "1",
    docString: "demo-types version 1: one input per OIP datatype, each mapped to a simple output",
    graph: {
      name: "demo_types",
      // A scalar int32 constant, broadcast by Mul.
      initializers: [{ name: "two_i32", elemType: OnnxType.INT32, dims: [], values: [2] }],
      nodes: DEMO_TYPES_CASES.map(typesNode),
      inputs: DEMO_TYPES_CASES.map((c) => io(c.input, c.elemType)),
      outputs: DEMO_TYPES_CASES.map((c) => io(c.output, c.elemType)),
    },
  };
}

// Re-exported so tests can build and check FP16 values with the same conversion.
export { float16Bits, float16Value };

// ---------------------------------------------------------------------------------------------
// demo-matmul: a[m,k] x b[k,n] -> y[m,n]. One MatMul, so its cost is set by the caller's shapes:
// tests use it as a slow model (drain, busy nodes). Not part of makeDemoModels(), whose list
// of files (deployed as-is by local/mesh.ts) other tests pin; write it with makeDemoMatmul().

export const DEMO_MATMUL_NAME = "demo-matmul";

export function matmulModel(): ModelDesc {
  return {
    producerVersion: "1",
    docString: "demo-matmul version 1: y = MatMul(a, b), any shapes",
    graph: {
      name: "demo_matmul",
      nodes: [{ opType: "MatMul", name: "matmul", inputs: ["a", "b"], outputs: ["y"] }],
      inputs: [
        { name: "a", elemType: OnnxType.FLOAT, shape: ["m", "k"] },
        { name: "b", elemType: OnnxType.FLOAT, shape: ["k", "n"] },
      ],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: ["m", "n"] }],
    },
  };
}

/** Writes demo-matmul as `demo-matmul.v1.onnx` into dir (created if missing). */
export async function makeDemoMatmul(dir: string): Promise<DemoModelFile> {
  const root = path.resolve(dir);
  await mkdir(root, { recursive: true });
  const file = path.join(root, `${DEMO_MATMUL_NAME}.v1.onnx`);
  await writeFile(file, encodeModel(matmulModel()));
  return { name: DEMO_MATMUL_NAME, version: "1", path: file };
}

// ---------------------------------------------------------------------------------------------

const DEMO_MODELS: { name: string; version: string; build: () => ModelDesc }[] = [
  { name: "demo-mlp", version: "1", build: () => mlpModel(DEMO_MLP_V1, "1") },
  { name: "demo-mlp", version: "2", build: () => mlpModel(DEMO_MLP_V2, "2") },
  { name: "demo-types", version: "1", build: typesModel },
];

/** Writes every demo model as `<name>.v<version>.onnx` into dir (created if missing). */
export async function makeDemoModels(dir: string): Promise<DemoModelFile[]> {
  const root = path.resolve(dir);
  await mkdir(root, { recursive: true });
  const files: DemoModelFile[] = [];
  for (const m of DEMO_MODELS) {
    const file = path.join(root, `${m.name}.v${m.version}.onnx`);
    await writeFile(file, encodeModel(m.build()));
    files.push({ name: m.name, version: m.version, path: file });
  }
  return files;
}

const runAsMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (runAsMain) {
  const dir = process.argv[2] ?? ".mesh/models";
  const files = await makeDemoModels(dir);
  for (const f of files) console.log(`${f.name} v${f.version} -> ${path.relative(process.cwd(), f.path)}`);
}

// ---------------------------------------------------------------------------------------------
// tiny-gpt: the demo generative model (a small GPT-style decoder with a KV cache, trained by
// scripts of helper `model`), served as a bundle: the graph plus its Hugging Face files.

export const TINY_GPT_NAME = "tiny-gpt";
/** The bundle's files beside model.onnx that go up with it (those present are sent). */
export const TINY_GPT_FILES = ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json", "special_tokens_map.json"] as const;

/** The tiny-gpt bundle under `dir` (default models/tiny-gpt/ in the repository), or null when it is not there. */
export function tinyGptBundle(dir: string): { graph: string; files: { name: string; path: string }[] } | null {
  const graph = path.join(dir, "model.onnx");
  if (!existsSync(graph) || !existsSync(path.join(dir, "tokenizer.json"))) return null;
  const files = TINY_GPT_FILES.map((name) => ({ name, path: path.join(dir, name) })).filter((f) => existsSync(f.path));
  return { graph, files };
}
