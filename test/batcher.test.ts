// The node's dynamic batcher against a real onnxruntime session: gathered calls run once and
// each caller gets exactly its own rows back.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Batcher, CancelledError, isBatchable } from "../gpu-node/batcher.js";
import { OnnxRuntime } from "../gpu-node/onnx-runtime.js";
import type { WireTensor } from "../protocol/tensor.js";
import { DEMO_MLP_V1, makeDemoModels, referenceMlp } from "../scripts/make-demo-models.js";
import { readOnnxSignature } from "../protocol/onnx-signature.js";
import { readFile } from "node:fs/promises";

let dir: string;
const runtime = new OnnxRuntime(["cpu"]);
let runs = 0;
const run = async (inputs: WireTensor[], outputs?: string[]) => {
  runs++;
  return runtime.run("mlp", inputs, outputs);
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "batcher-"));
  const files = await makeDemoModels(dir);
  const mlp = files.find((f) => f.name === "demo-mlp" && f.version === "1")!;
  await runtime.load("mlp", mlp.path, 1000);
});
afterAll(async () => {
  await runtime.releaseAll();
  await rm(dir, { recursive: true, force: true });
});

const row = (v: number[]): WireTensor[] => [{ name: "x", datatype: "FP32", shape: [1, 4], data: Float32Array.from(v) }];

describe("dynamic batching", () => {
  it("treats a model whose inputs and outputs all lead with a batch dimension as batchable", async () => {
    const files = await makeDemoModels(dir);
    const sig = readOnnxSignature(await readFile(files.find((f) => f.name === "demo-mlp")!.path));
    expect(isBatchable(sig)).toBe(true);
    expect(isBatchable({ inputs: [{ name: "x", datatype: "FP32", shape: [4] }], outputs: [] })).toBe(false);
  });

  it("runs a lone call at once, gathers the calls that arrive while busy into one run, and splits the rows back", async () => {
    runs = 0;
    const b = new Batcher(run, { windowMs: 0, maxBatch: 64, maxRuns: 1 });
    const rows = Array.from({ length: 10 }, (_, i) => [i, -i, i / 2, 1]);
    const answers = await Promise.all(rows.map((r, i) => b.submit(String(i), row(r))));
    // The first call found the model idle; the other nine waited for it and ran together.
    expect(runs).toBe(2);
    answers.forEach((out, i) => {
      const want = referenceMlp(DEMO_MLP_V1, [rows[i]!]);
      expect(out[0]!.shape).toEqual([1, 3]);
      Array.from(out[0]!.data as Float32Array).forEach((v, k) => expect(v).toBeCloseTo(want.logits[0]![k]!, 5));
    });
  });

  it("caps a batch at the maximum rows and never waits on the window once the model is idle", async () => {
    runs = 0;
    const b = new Batcher(run, { windowMs: 60_000, maxBatch: 4, maxRuns: 1 });
    await Promise.all([0, 1, 2, 3, 4, 5, 6, 7, 8].map((i) => b.submit(String(i), row([i, i, i, i]))));
    // 1 alone, then 4 + 4: a full batch launches without waiting for the 60 s window.
    expect(runs).toBe(3);
  });

  it("keeps calls with different requested outputs in different batches", async () => {
    runs = 0;
    const b = new Batcher(run, { windowMs: 10, maxBatch: 64, maxRuns: 1 });
    const [a, p] = await Promise.all([b.submit("a", row([1, 2, 3, 4]), ["logits"]), b.submit("p", row([1, 2, 3, 4]), ["probs"])]);
    expect(a.map((t) => t.name)).toEqual(["logits"]);
    expect(p.map((t) => t.name)).toEqual(["probs"]);
    expect(runs).toBe(2);
  });

  it("a cancelled call leaves the batch and the others still get their answers", async () => {
    const b = new Batcher(run, { windowMs: 30, maxBatch: 64, maxRuns: 1 });
    const first = b.submit("first", row([0, 0, 0, 0])); // keeps the model busy
    const keep = b.submit("keep", row([1, 1, 1, 1]));
    const gone = b.submit("gone", row([2, 2, 2, 2]));
    expect(b.cancel("gone")).toBe(true);
    await expect(gone).rejects.toBeInstanceOf(CancelledError);
    expect((await keep)[0]!.shape).toEqual([1, 3]);
    await first;
  });

  it("a bad call in a batch fails alone", async () => {
    const b = new Batcher(run, { windowMs: 20, maxBatch: 64, maxRuns: 1 });
    const first = b.submit("first", row([0, 0, 0, 0]));
    const good = b.submit("good", row([1, 2, 3, 4]));
    const bad = b.submit("bad", [{ name: "x", datatype: "FP32", shape: [1, 4], data: Float32Array.from([1, 2, 3]) }]);
    await expect(bad).rejects.toThrow();
    expect((await good)[0]!.shape).toEqual([1, 3]);
    await first;
  });
});
