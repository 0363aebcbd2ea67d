// Load time of a 500 MiB bundle (a graph plus its ONNX external-data file, scripts/bundle-model.ts)
// through the mesh against loading it in-process with onnxruntime-node, in one run.
//
// In-process: InferenceSession.create on the graph next to its data file, then one run.
// Through the mesh (one region, one node with MAX_MODELS=1): the bundle goes up with the upload
// command (`npm run upload -- graph --file weights.bin=...`), then the first call downloads both
// files into the node's cache and loads them (server-timing `load` is the router's view of
// download + load), a second call runs warm, a call to a tiny model pushes the bundle out of
// memory (not off the disk), and the next call loads it again from the disk cache only: that
// load is what compares with the in-process create.
//
// Run: npx tsx bench/bundle-load.ts [--rounds N]   (default 2 reloads)
// Prints a table and writes bench/results/bundle-load-<timestamp>.json and bundle-load-latest.json.

import { spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { bundleGraph, dataBytes, writeBundleWeights } from "../scripts/bundle-model.js";
import { encodeModel, OnnxType } from "../scripts/onnx-writer.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { fmt, printTable, round } from "./stats.js";

const roundsArg = process.argv.indexOf("--rounds");
const ROUNDS = roundsArg > 0 ? Math.max(1, Number(process.argv[roundsArg + 1])) : QUICK ? 1 : 2;
// 500 MiB of weights (quick: 62 MiB, a smoke run; the table says the size it used)
const SHAPE = { k: 1024, m: QUICK ? 16_000 : 128_000 };
const X = Array.from({ length: SHAPE.k }, (_, i) => i % 3);
const EXPECTED = SHAPE.m * X.reduce((a, b) => a + b, 0);

async function must(res: Response, what: string): Promise<{ body: any; headers: Headers }> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return { body: JSON.parse(text), headers: res.headers };
}

const serverTiming = (h: Headers, name: string) => Number(new RegExp(`${name};dur=([\\d.]+)`).exec(h.get("server-timing") ?? "")?.[1] ?? NaN);

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    p.stdout.on("data", (d: Buffer) => (out += d.toString()));
    p.on("exit", (code) => (code === 0 ? res(out) : rej(new Error(`${cmd} ${args.join(" ")} exited ${code}`))));
  });
}

await runBench("bundle-load", async (b) => {
  const dir = b.tmpDir;
  const bundleDir = join(dir, "bundle");
  await mkdir(bundleDir);
  err(`writing a bundle with ${dataBytes(SHAPE)} bytes of external data`);
  await writeBundleWeights(join(bundleDir, "weights.bin"), SHAPE, 1);
  await writeFile(join(bundleDir, "model.onnx"), bundleGraph(SHAPE, "weights.bin"));

  // In-process: what the node's session child does, without the mesh around it.
  const inCreate: number[] = [];
  const inRun: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(join(bundleDir, "model.onnx"));
    const t1 = performance.now();
    const out = await session.run({ x: new ort.Tensor("float32", Float32Array.from(X), [1, SHAPE.k]) });
    const t2 = performance.now();
    if ((out.y!.data as Float32Array)[0] !== EXPECTED) throw new Error(`in-process output ${(out.y!.data as Float32Array)[0]}, expected ${EXPECTED}`);
    await session.release();
    inCreate.push(t1 - t0);
    inRun.push(t2 - t1);
  }

  err("starting the mesh");
  const mesh = await b.startMesh({
    regions: [{ name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 }],
    demo: false,
    nodeEnv: { MAX_MODELS: "1" },
    edgeVars: { INFER_TIMEOUT_MS: "300000" },
    progress: (l) => process.env.BENCH_VERBOSE && err(l),
  });
  const E = mesh.edge;
  const account = await must(
    await fetch(`${E}/v1/accounts`, { method: "POST", headers: { authorization: `Bearer ${mesh.adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ name: "bench" }) }),
    "account",
  );
  const key = account.body.apiKey.key as string;
  const auth = { authorization: `Bearer ${key}` };
  const json = { ...auth, "content-type": "application/json" };
  for (const name of ["big", "tiny"]) await must(await fetch(`${E}/v1/models`, { method: "POST", headers: json, body: JSON.stringify({ name }) }), `create ${name}`);
  const tiny = encodeModel({
    graph: {
      name: "tiny",
      nodes: [{ opType: "Identity", inputs: ["x"], outputs: ["y"] }],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1] }],
    },
  }) as Uint8Array<ArrayBuffer>;
  await must(await fetch(`${E}/v1/models/tiny/versions`, { method: "POST", headers: { ...auth, "content-type": "application/octet-stream" }, body: tiny }), "tiny");

  err("uploading the bundle with npm run upload");
  const u0 = performance.now();
  await run(process.execPath, ["--import", "tsx", "scripts/upload.ts", join(bundleDir, "model.onnx"), "--file", `weights.bin=${join(bundleDir, "weights.bin")}`, "--model", "big", "--edge", E, "--key", key, "--part-size", "32"]);
  const uploadS = (performance.now() - u0) / 1000;

  const call = async (model: string, x: number[], shape: number[]) => {
    const t0 = performance.now();
    const a = await must(
      await fetch(`${E}/v2/models/${model}/infer`, { method: "POST", headers: { ...json, "x-mesh-timeout-ms": "300000" }, body: JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape, data: x }] }) }),
      `call ${model}`,
    );
    return { ms: performance.now() - t0, loadMs: serverTiming(a.headers, "load"), data: a.body.outputs[0].data as number[] };
  };
  const big = async () => {
    const a = await call("big", X, [1, SHAPE.k]);
    if (a.data[0] !== EXPECTED) throw new Error(`mesh output ${a.data[0]}, expected ${EXPECTED}`);
    return a;
  };
  const cold = await big();
  const warm = await big();
  const reloads: { ms: number; loadMs: number }[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    await call("tiny", [1], [1]); // MAX_MODELS=1: the bundle leaves memory, stays on disk
    reloads.push(await big());
  }

  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
  const inCreateMs = median(inCreate);
  const reloadLoadMs = median(reloads.map((r) => r.loadMs));
  const table = [
    ["in-process InferenceSession.create", fmt(inCreateMs, 0), "1.00", `median of ${ROUNDS}`],
    ["in-process first run", fmt(median(inRun), 0), "", ""],
    ["mesh: first call, load (download + load)", fmt(cold.loadMs, 0), fmt(cold.loadMs / inCreateMs, 2), `whole call ${fmt(cold.ms, 0)} ms`],
    ["mesh: load again from the node's disk cache", fmt(reloadLoadMs, 0), fmt(reloadLoadMs / inCreateMs, 2), `median of ${ROUNDS}; whole call ${fmt(median(reloads.map((r) => r.ms)), 0)} ms`],
    ["mesh: warm call", fmt(warm.ms, 0), "", "no load"],
  ];
  say();
  say(`a bundle of ${fmt(dataBytes(SHAPE) / 2 ** 20, 0)} MiB external data + ${fmt(bundleGraph(SHAPE, "weights.bin").length / 1024, 0)} KiB graph; upload (npm run upload, data file + graph) took ${fmt(uploadS, 1)} s`);
  printTable(["what", "ms", "x in-process create", "note"], table, ["left", "right", "right", "left"]);
  await b.saveResults({
    dataBytes: dataBytes(SHAPE),
    rounds: ROUNDS,
    uploadSeconds: round(uploadS, 2),
    inProcess: { createMs: inCreate.map((x) => round(x, 1)), firstRunMs: inRun.map((x) => round(x, 1)) },
    mesh: {
      cold: { callMs: round(cold.ms, 1), loadMs: round(cold.loadMs, 1) },
      warmCallMs: round(warm.ms, 1),
      reloads: reloads.map((r) => ({ callMs: round(r.ms, 1), loadMs: round(r.loadMs, 1) })),
    },
    ratio: { coldLoadToInProcessCreate: round(cold.loadMs / inCreateMs, 3), diskReloadToInProcessCreate: round(reloadLoadMs / inCreateMs, 3) },
  });
});
