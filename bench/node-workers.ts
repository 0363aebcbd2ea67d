// Node execution in session child processes (gpu-node/onnx-runtime.ts), measured in one run so
// every figure is a ratio against a baseline taken on the same machine a moment before:
//
// 1. A fast model's latency while a slow model runs on the same node, against the fast model
//    alone (goal: p99 within 2x). The in-process row is what the node did before: onnxruntime
//    on the agent's own thread, where the slow run holds every other call until it ends.
// 2. The same through a real router and node agent (test/helpers/region-harness.ts): signed
//    calls, the node's socket, its batcher and session children.
// 3. Throughput of a compute-bound model with N session children (one intra-op thread each)
//    against one child with one thread, and one child with N threads (goal: close to N).
//
// Run: npx tsx bench/node-workers.ts [--seconds 4]. Prints tables, writes
// bench/results/node-workers-<ISO>.json and node-workers-latest.json.

import { writeFile } from "node:fs/promises";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { OnnxRuntime } from "../gpu-node/onnx-runtime.js";
import { toOrt } from "../gpu-node/ort-tensors.js";
import type { WireTensor } from "../formats/tensor.js";
import { makeDemoModels } from "../scripts/make-demo-models.js";
import { fp32, RegionHarness } from "../test/helpers/region-harness.js";
import { spinModel } from "../test/helpers/slow-models.js";
import { QUICK, runBench, type Bench } from "./harness.js";
import { fmt, printTable, ratio, round, summarize, type Summary } from "./stats.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const SECONDS = arg("seconds", QUICK ? 1 : 4);
const CORES = availableParallelism();
const SIZE = 256;

const spinInputs = (n: number): WireTensor[] => [
  { name: "n", datatype: "INT64", shape: [1], data: BigInt64Array.from([BigInt(n)]) },
  { name: "x", datatype: "FP32", shape: [SIZE, SIZE], data: new Float32Array(SIZE * SIZE).fill(0.01) },
];
const mlpInputs: WireTensor[] = [{ name: "x", datatype: "FP32", shape: [1, 4], data: Float32Array.from([1, 2, 3, 4]) }];

function runtime(workers: number, threads: number): OnnxRuntime {
  return new OnnxRuntime({ executionProviders: ["cpu"], workersPerModel: workers, threadsPerWorker: threads, loadTimeoutMs: 120_000 });
}

/** Sequential fast calls for `ms`, latencies in ms. */
async function fastLoop(call: () => Promise<unknown>, ms: number): Promise<number[]> {
  const out: number[] = [];
  const until = performance.now() + ms;
  while (performance.now() < until) {
    const t = performance.now();
    await call();
    out.push(performance.now() - t);
    // A 2 ms gap, as calls arriving from the network would have: lets the loop breathe.
    await new Promise((r) => setTimeout(r, 2));
  }
  return out;
}

/** Keeps the slow model busy (one call after another) until stopped. */
function slowLoop(call: () => Promise<unknown>): { stop(): Promise<void> } {
  let stopped = false;
  const done = (async () => {
    while (!stopped) await call();
  })();
  return {
    async stop() {
      stopped = true;
      await done;
    },
  };
}

async function main(b: Bench): Promise<void> {
  const dir = b.tmpDir;
  const mlpPath = (await makeDemoModels(dir)).find((f) => f.name === "demo-mlp" && f.version === "1")!.path;
  const spinPath = join(dir, "spin.onnx");
  await writeFile(spinPath, spinModel(SIZE));
  const ms = SECONDS * 1000;

  // Calibrate one slow call at about 500 ms here.
  const cal = runtime(1, 1);
  await cal.load("spin", spinPath, 4096);
  const t0 = performance.now();
  await cal.run("spin", spinInputs(400), undefined);
  const per = (performance.now() - t0) / 400;
  const slowN = Math.max(100, Math.round(500 / per));
  await cal.releaseAll();

  // ---------------------------------------------------------------- 1. fast beside slow
  const rt = runtime(1, Math.max(1, Math.floor(CORES / 2)));
  await rt.load("mlp", mlpPath, 4096);
  await rt.load("spin", spinPath, 4096);
  const fast = () => rt.run("mlp", mlpInputs, undefined);
  await fastLoop(fast, 300); // warm-up
  const alone = summarize(await fastLoop(fast, ms));
  const slow = slowLoop(() => rt.run("spin", spinInputs(slowN), undefined));
  const beside = summarize(await fastLoop(fast, ms));
  await slow.stop();
  await rt.releaseAll();

  // Before: both sessions on this thread, as the agent ran them.
  const inproc = async (path: string) => ort.InferenceSession.create(path, { intraOpNumThreads: Math.max(1, Math.floor(CORES / 2)) });
  const mlpS = await inproc(mlpPath);
  const spinS = await inproc(spinPath);
  const feedsOf = (ts: WireTensor[]) => Object.fromEntries(ts.map((t) => [t.name, toOrt(t)]));
  const fastIn = () => mlpS.run(feedsOf(mlpInputs));
  await fastLoop(fastIn, 300);
  const inAlone = summarize(await fastLoop(fastIn, ms));
  const slowIn = slowLoop(() => spinS.run(feedsOf(spinInputs(slowN))));
  const inBeside = summarize(await fastLoop(fastIn, ms));
  await slowIn.stop();
  await mlpS.release();
  await spinS.release();

  // ---------------------------------------------------------------- 2. through router and node
  const h = await RegionHarness.create("bench-node-workers");
  let closed = false;
  b.defer(() => closed || h.close()); // when the phase below did not get to it
  let meshAlone: Summary;
  let meshBeside: Summary;
  try {
    await h.startRouter();
    await h.startNode("bench-node", { NODE_THREADS_PER_WORKER: String(Math.max(1, Math.floor(CORES / 2))) });
    const mlpRef = await h.model("demo-mlp", 1);
    const spinRef = await h.addModel("spin", 1, spinModel(SIZE));
    const fastMesh = async () => {
      const a = await h.infer(mlpRef, [fp32("x", [[1, 2, 3, 4]])]);
      if (!a.response.ok) throw new Error(`fast call failed: ${a.response.message}`);
    };
    await h.infer(spinRef, spinInputs(1));
    await fastLoop(fastMesh, 500);
    meshAlone = summarize(await fastLoop(fastMesh, ms));
    const slowMesh = slowLoop(() => h.infer(spinRef, spinInputs(slowN), { deadlineMs: 60_000 }));
    meshBeside = summarize(await fastLoop(fastMesh, ms));
    await slowMesh.stop();
  } finally {
    closed = true;
    await h.close();
  }

  // ---------------------------------------------------------------- 3. N children vs one
  const throughput = async (workers: number, threads: number): Promise<{ callsPerS: number; latency: Summary }> => {
    const r = runtime(workers, threads);
    await r.load("spin", spinPath, 4096);
    const n = Math.max(20, Math.round(slowN / 5)); // ~100 ms calls
    await r.run("spin", spinInputs(n), undefined);
    const lat: number[] = [];
    const until = performance.now() + ms;
    let calls = 0;
    const started = performance.now();
    // Twice as many callers as children keep every child busy.
    await Promise.all(
      Array.from({ length: Math.max(2, workers * 2) }, async () => {
        while (performance.now() < until) {
          const t = performance.now();
          await r.run("spin", spinInputs(n), undefined);
          lat.push(performance.now() - t);
          calls++;
        }
      }),
    );
    const elapsed = (performance.now() - started) / 1000;
    await r.releaseAll();
    return { callsPerS: calls / elapsed, latency: summarize(lat) };
  };
  const one = await throughput(1, 1);
  const oneWide = await throughput(1, CORES);
  const many = await throughput(CORES, 1);


  console.log(`\nnode-workers: ${CORES} cores, slow call ~${Math.round(per * slowN)} ms (spin n=${slowN}), ${SECONDS} s per phase\n`);
  console.log("1. fast model (demo-mlp) latency, ms; ratio = p99 against the same runtime's fast model alone");
  printTable(
    ["runtime", "case", "calls", "p50", "p99", "max", "p99 ratio"],
    [
      ["session children", "alone", String(alone.count), fmt(alone.p50), fmt(alone.p99), fmt(alone.max), "1.00"],
      ["session children", "beside slow", String(beside.count), fmt(beside.p50), fmt(beside.p99), fmt(beside.max), fmt(ratio(beside.p99, alone.p99))],
      ["in-process (before)", "alone", String(inAlone.count), fmt(inAlone.p50), fmt(inAlone.p99), fmt(inAlone.max), "1.00"],
      ["in-process (before)", "beside slow", String(inBeside.count), fmt(inBeside.p50), fmt(inBeside.p99), fmt(inBeside.max), fmt(ratio(inBeside.p99, inAlone.p99))],
    ],
    ["left", "left", "right", "right", "right", "right", "right"],
  );
  console.log("\n2. the same through a real router and node agent (signed calls over HTTP, node socket)");
  printTable(
    ["case", "calls", "p50", "p99", "max", "p99 ratio"],
    [
      ["alone", String(meshAlone.count), fmt(meshAlone.p50), fmt(meshAlone.p99), fmt(meshAlone.max), "1.00"],
      ["beside slow", String(meshBeside.count), fmt(meshBeside.p50), fmt(meshBeside.p99), fmt(meshBeside.max), fmt(ratio(meshBeside.p99, meshAlone.p99))],
    ],
    ["left", "right", "right", "right", "right", "right"],
  );
  console.log("\n3. compute-bound model (spin), throughput against 1 child x 1 thread");
  printTable(
    ["children x threads", "calls/s", "p50 ms", "speed-up"],
    [
      ["1 x 1", fmt(one.callsPerS), fmt(one.latency.p50), "1.00"],
      [`1 x ${CORES}`, fmt(oneWide.callsPerS), fmt(oneWide.latency.p50), fmt(ratio(oneWide.callsPerS, one.callsPerS))],
      [`${CORES} x 1`, fmt(many.callsPerS), fmt(many.latency.p50), fmt(ratio(many.callsPerS, one.callsPerS))],
    ],
    ["left", "right", "right", "right"],
  );
  await b.saveResults({
    seconds: SECONDS,
    slowCallMs: round(per * slowN, 1),
    fastBesideSlow: {
      children: { alone, beside, p99Ratio: round(ratio(beside.p99, alone.p99)) },
      inProcessBefore: { alone: inAlone, beside: inBeside, p99Ratio: round(ratio(inBeside.p99, inAlone.p99)) },
      throughRouterAndNode: { alone: meshAlone, beside: meshBeside, p99Ratio: round(ratio(meshBeside.p99, meshAlone.p99)) },
    },
    throughput: {
      oneByOne: one,
      oneChildAllThreads: { ...oneWide, speedup: round(ratio(oneWide.callsPerS, one.callsPerS)) },
      childPerCore: { ...many, speedup: round(ratio(many.callsPerS, one.callsPerS)) },
    },
  });
}

await runBench("node-workers", main);
