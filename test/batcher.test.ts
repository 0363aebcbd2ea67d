// The node's dynamic batcher against a real onnxruntime session (in its session child):
// gathered calls run once and each caller gets exactly its own rows back. Then its races with a
// fake run: a cancel or deadline that meets a finishing run settles the call exactly once, and
// a run is aborted (its session child killed) only when no call riding on it still waits.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { Batcher, CancelledError, isBatchable, type RunResult } from "../gpu-node/batcher.js";
import { OnnxRuntime } from "../gpu-node/onnx-runtime.js";
import type { StopSignal } from "../gpu-node/session-process.js";
import type { WireTensor } from "../formats/tensor.js";
import { DEMO_MLP_V1, makeDemoModels, referenceMlp } from "../scripts/make-demo-models.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import { readFile } from "node:fs/promises";

let dir: string;
const runtime = new OnnxRuntime({ executionProviders: ["cpu"], workersPerModel: 1, threadsPerWorker: 1, loadTimeoutMs: 60_000 });
let runs = 0;
const run = async (inputs: WireTensor[], outputs: string[] | undefined, signal: StopSignal) => {
  runs++;
  return runtime.run("mlp", inputs, outputs, signal);
};

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "batcher-"));
  const files = await makeDemoModels(dir);
  const mlp = files.find((f) => f.name === "demo-mlp" && f.version === "1")!;
  await runtime.load("mlp", mlp.path, 1024);
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
    answers.forEach(({ outputs: out }, i) => {
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
    expect(a.outputs.map((t) => t.name)).toEqual(["logits"]);
    expect(p.outputs.map((t) => t.name)).toEqual(["probs"]);
    expect(runs).toBe(2);
  });

  it("a cancelled call leaves the batch and the others still get their answers", async () => {
    const b = new Batcher(run, { windowMs: 30, maxBatch: 64, maxRuns: 1 });
    const first = b.submit("first", row([0, 0, 0, 0])); // keeps the model busy
    const keep = b.submit("keep", row([1, 1, 1, 1]));
    const gone = b.submit("gone", row([2, 2, 2, 2]));
    expect(b.cancel("gone")).toBe(true);
    await expect(gone).rejects.toBeInstanceOf(CancelledError);
    expect((await keep).outputs[0]!.shape).toEqual([1, 3]);
    await first;
  });

  it("a bad call in a batch fails alone", async () => {
    const b = new Batcher(run, { windowMs: 20, maxBatch: 64, maxRuns: 1 });
    const first = b.submit("first", row([0, 0, 0, 0]));
    const good = b.submit("good", row([1, 2, 3, 4]));
    const bad = b.submit("bad", [{ name: "x", datatype: "FP32", shape: [1, 4], data: Float32Array.from([1, 2, 3]) }]);
    await expect(bad).rejects.toThrow();
    expect((await good).outputs[0]!.shape).toEqual([1, 3]);
    await first;
  });
});

/** A run the test finishes by hand; records each run's signal. */
function manualRuns() {
  const flights: { inputs: WireTensor[]; signal: StopSignal; finish: (r: RunResult) => void; fail: (e: Error) => void }[] = [];
  const run = (inputs: WireTensor[], _outputs: string[] | undefined, signal: StopSignal) =>
    new Promise<RunResult>((resolve, reject) => flights.push({ inputs, signal, finish: resolve, fail: reject }));
  return { flights, run };
}

const answer = (rows: number): RunResult => ({
  outputs: [{ name: "y", datatype: "FP32", shape: [rows, 1], data: new Float32Array(rows) }],
  computeMs: 40,
});
const settled = async <T>(p: Promise<T>) => p.then((v) => ({ ok: true as const, v }), (e: Error) => ({ ok: false as const, e }));

describe("batcher races (fake runs)", () => {
  it("a cancel that arrives after the run's result settles nothing twice and kills nothing", async () => {
    const { flights, run } = manualRuns();
    const b = new Batcher(run, { windowMs: 0, maxBatch: 1 });
    const call = settled(b.submit("a", row([1, 2, 3, 4])));
    flights[0]!.finish(answer(1));
    // Same tick as the result: the result's settlement is queued, the call is no longer running.
    const cancelled = b.cancel("a");
    const r = await call;
    expect(r.ok || r.e instanceof CancelledError).toBe(true);
    if (r.ok) expect(cancelled).toBe(false);
    expect(b.cancel("a")).toBe(false); // never twice
  });

  it("a cancel just before the result wins: the caller hears 'cancelled' once, the run is aborted, the late result is dropped", async () => {
    const { flights, run } = manualRuns();
    const b = new Batcher(run, { windowMs: 0, maxBatch: 1 });
    const call = settled(b.submit("a", row([1, 2, 3, 4])));
    expect(b.cancel("a")).toBe(true);
    expect(flights[0]!.signal.aborted).toBe(true);
    flights[0]!.finish(answer(1)); // the run's answer comes anyway
    const r = await call;
    expect(r.ok).toBe(false);
    expect(!r.ok && r.e).toBeInstanceOf(CancelledError);
  });

  it("a deadline firing at the same moment as the result settles the call with exactly one of them", async () => {
    class Deadline extends Error {}
    for (const order of ["result-first", "deadline-first"] as const) {
      const { flights, run } = manualRuns();
      const b = new Batcher(run, { windowMs: 0, maxBatch: 1 });
      let settlements = 0;
      const call = b.submit("a", row([1, 2, 3, 4])).then(
        (v) => (settlements++, v),
        (e: Error) => {
          settlements++;
          throw e;
        },
      );
      if (order === "result-first") {
        flights[0]!.finish(answer(1));
        b.cancel("a", new Deadline());
      } else {
        b.cancel("a", new Deadline());
        flights[0]!.finish(answer(1));
      }
      const r = await settled(call);
      await new Promise((res) => setTimeout(res, 5));
      expect(settlements).toBe(1);
      if (order === "deadline-first") expect(!r.ok && r.e).toBeInstanceOf(Deadline);
    }
  });

  it("one caller leaving a running batch does not stop it for the others; the last one leaving aborts it", async () => {
    const { flights, run } = manualRuns();
    const b = new Batcher(run, { windowMs: 0, maxBatch: 8, maxRuns: 1 });
    const first = settled(b.submit("first", row([0, 0, 0, 0]))); // runs alone
    const x = settled(b.submit("x", row([1, 1, 1, 1])));
    const y = settled(b.submit("y", row([2, 2, 2, 2])));
    flights[0]!.finish(answer(1));
    await first;
    await new Promise((res) => setTimeout(res, 0));
    expect(flights).toHaveLength(2); // x and y ride one run
    expect(b.cancel("x")).toBe(true);
    expect(flights[1]!.signal.aborted).toBe(false);
    flights[1]!.finish(answer(2));
    const ry = await y;
    expect(ry.ok && ry.v.outputs[0]!.shape).toEqual([1, 1]);
    expect(ry.ok && ry.v.computeMs).toBe(20); // its share of the run, by rows

    const block = settled(b.submit("block", row([0, 0, 0, 0])));
    const p = settled(b.submit("p", row([0, 0, 0, 0])));
    const q = settled(b.submit("q", row([0, 0, 0, 0])));
    flights[2]!.finish(answer(1));
    await block;
    await new Promise((res) => setTimeout(res, 0));
    const flight = flights[3]!;
    b.cancel("p");
    expect(flight.signal.aborted).toBe(false);
    b.cancel("q");
    expect(flight.signal.aborted).toBe(true);
    flight.fail(new Error("killed"));
    expect((await p).ok).toBe(false);
    expect((await q).ok).toBe(false);
    expect((await x).ok).toBe(false);
  });

  it("runs at most two batches of a model at once by default, and starts a waiting one as soon as one ends", async () => {
    let now = 0;
    let peak = 0;
    const ends: (() => void)[] = [];
    const fake = (_inputs: WireTensor[]) =>
      new Promise<RunResult>((resolve) => {
        peak = Math.max(peak, ++now);
        ends.push(() => {
          now--;
          resolve({ outputs: [], computeMs: 1 });
        });
      });
    const b = new Batcher(fake, { windowMs: 0, maxBatch: 64 });
    // Four shapes that cannot share a batch: four batches, of which two may run.
    const calls = [1, 2, 3, 4].map((w) => b.submit(`c${w}`, [{ name: "x", datatype: "FP32", shape: [1, w], data: new Float32Array(w) }]));
    await vi.waitFor(() => expect(ends.length).toBe(2));
    expect(b.queued).toBe(2);
    ends.shift()!();
    await vi.waitFor(() => expect(ends.length).toBe(2));
    while (ends.length > 0) ends.shift()!();
    await vi.waitFor(() => expect(ends.length).toBe(1));
    ends.shift()!();
    await Promise.all(calls);
    expect(peak).toBe(2);
  });
});
