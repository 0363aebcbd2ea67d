// One session child (gpu-node/session-process.ts) on its own, real processes: it runs with
// onnxruntime's threads spinning between runs or not (NODE_ORT_SPINNING), a load past its
// timeout or its memory bound is killed and refused, as is a run past its memory bound, an abort mid-run kills the child at once
// (the run does not go on), a child that dies while idle is reported, and the pool behind
// OnnxRuntime replaces a killed child and keeps serving.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OnnxRuntime } from "../gpu-node/onnx-runtime.js";
import { rssOf, SessionProcess, SessionProcessError, type SessionOptions } from "../gpu-node/session-process.js";
import type { WireTensor } from "../formats/tensor.js";
import { waitUntil } from "./helpers/region-harness.js";
import { memoryBombModel, runMemoryBombModel, spinModel } from "./helpers/slow-models.js";

let dir: string;
let spinPath: string;
let bombPath: string;
let runBombPath: string;
const SIZE = 128;

const spin = (n: number): WireTensor[] => [
  { name: "n", datatype: "INT64", shape: [1], data: BigInt64Array.from([BigInt(n)]) },
  { name: "x", datatype: "FP32", shape: [SIZE, SIZE], data: new Float32Array(SIZE * SIZE).fill(0.01) },
];
const opts = (over: Partial<SessionOptions> = {}): SessionOptions => ({
  path: spinPath,
  threads: 1,
  executionProviders: ["cpu"],
  memoryLimitBytes: 512 * 2 ** 20,
  loadTimeoutMs: 60_000,
  ...over,
});
const gone = async (pid: number) => (await rssOf(pid)) === null;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "session-process-"));
  spinPath = join(dir, "spin.onnx");
  bombPath = join(dir, "bomb.onnx");
  await writeFile(spinPath, spinModel(SIZE));
  await writeFile(bombPath, memoryBombModel(600));
  runBombPath = join(dir, "run-bomb.onnx");
  await writeFile(runBombPath, runMemoryBombModel());
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("session child", () => {
  it("loads, runs, and measures the session's memory", async () => {
    const p = await SessionProcess.start(opts());
    const r = await p.run(spin(2), undefined);
    expect(r.outputs[0]!.shape).toEqual([SIZE, SIZE]);
    expect(r.computeMs).toBeGreaterThan(0);
    expect(p.memoryBytes).toBeGreaterThan(0);
    p.kill();
    await waitUntil("child gone", 5_000, async () => ((await gone(p.pid)) ? true : undefined));
  }, 30_000);

  it("runs with several threads whether onnxruntime's threads spin between runs or sleep, with the same answer", async () => {
    const answers: unknown[] = [];
    for (const spinning of [false, true]) {
      const p = await SessionProcess.start(opts({ threads: 2, spinning }));
      answers.push((await p.run(spin(2), undefined)).outputs);
      p.kill();
      await waitUntil("child gone", 5_000, async () => ((await gone(p.pid)) ? true : undefined));
    }
    expect(answers[0]).toEqual(answers[1]);
  }, 30_000);

  it("kills a load past its timeout", async () => {
    const err = await SessionProcess.start(opts({ loadTimeoutMs: 1 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SessionProcessError);
    expect((err as SessionProcessError).kind).toBe("timeout");
  }, 30_000);

  it("kills a load whose memory passes the bound (constant folding into a 600 MiB constant, bound 100 MiB)", async () => {
    const err = await SessionProcess.start(opts({ path: bombPath, memoryLimitBytes: 100 * 2 ** 20 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SessionProcessError);
    expect((err as SessionProcessError).kind).toBe("too_big");
    expect((err as Error).message).toMatch(/more than 100 MiB/);
  }, 60_000);

  it("kills a run whose memory passes the bound (1 GiB in a run, bound 128 MiB), one that starts after the child sat idle too", async () => {
    const p = await SessionProcess.start(opts({ path: runBombPath, memoryLimitBytes: 128 * 2 ** 20 }));
    // Idle past the watch's idle period first, so the run starts with the watch at its slow pace.
    await new Promise((r) => setTimeout(r, 1_500));
    const mib512 = [512, (512 * 2 ** 20) / 4 / 512]; // Expand's and Tanh's outputs: 512 MiB each
    const inputs: WireTensor[] = [
      { name: "x", datatype: "FP32", shape: [1, 1], data: Float32Array.from([0.5]) },
      { name: "shape", datatype: "INT64", shape: [2], data: BigInt64Array.from(mib512.map(BigInt)) },
    ];
    const err = await p.run(inputs, undefined).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SessionProcessError);
    expect((err as SessionProcessError).kind).toBe("too_big");
    expect(p.alive).toBe(false);
  }, 60_000);

  it("an abort mid-run kills the child at once: the run stops, it does not finish in the background", async () => {
    const p = await SessionProcess.start(opts());
    const pid = p.pid;
    const controller = new AbortController();
    // Minutes of compute.
    const run = p.run(spin(5_000_000), undefined, controller.signal).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 300));
    controller.abort("deadline");
    const err = await run;
    expect(err).toBeInstanceOf(SessionProcessError);
    expect((err as SessionProcessError).kind).toBe("aborted");
    await waitUntil("child gone", 5_000, async () => ((await gone(pid)) ? true : undefined));
    expect(p.alive).toBe(false);
  }, 30_000);

  it("reports a child that dies while idle", async () => {
    const p = await SessionProcess.start(opts());
    const died = new Promise<SessionProcessError>((r) => (p.onDeath = r));
    process.kill(p.pid, "SIGKILL");
    expect((await died).kind).toBe("crashed");
  }, 30_000);
});

describe("OnnxRuntime pool", () => {
  it("replaces a child killed by an abort and keeps serving the model", async () => {
    const rt = new OnnxRuntime({ executionProviders: ["cpu"], workersPerModel: 1, threadsPerWorker: 1, loadTimeoutMs: 60_000 });
    await rt.load("spin", spinPath, 512);
    // Two keys naming the same bytes at once share one load: one child, not two.
    await Promise.all([rt.load("spin", spinPath, 512), rt.load("spin", spinPath, 512)]);
    const [first] = rt.pids("spin");
    expect(rt.pids("spin")).toHaveLength(1);
    const controller = new AbortController();
    const run = rt.run("spin", spin(5_000_000), undefined, controller.signal).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    controller.abort("cancelled");
    expect(await run).toBeInstanceOf(SessionProcessError);
    // A call sent meanwhile waits for the replacement and gets its answer.
    const next = await rt.run("spin", spin(1), undefined);
    expect(next.outputs[0]!.shape).toEqual([SIZE, SIZE]);
    expect(rt.pids("spin")).toHaveLength(1);
    expect(rt.pids("spin")[0]).not.toBe(first);
    await rt.releaseAll();
  }, 60_000);
});
