// Device check of MESH_EXECUTION_PROVIDER=webgpu end to end: two REAL node agents
// (gpu-node/main.ts), one with MESH_EXECUTION_PROVIDER=webgpu and one with =cpu, driven by the
// stand-in router (bench/stand-in-router.ts) over the real node socket, each loading the same
// models from the same artifact URLs: a big dense MLP (Gemm+Relu layers of WIDTH x WIDTH float32,
// as scripts/device/make-mlp.py makes, built here with scripts/onnx-writer.ts so no python is
// needed), demo-mlp, and a one-node Det graph (an operator the WebGPU provider may lack: the
// CPU provider listed after it must take it). Every answer is compared with an in-process CPU
// session's (max |diff| <= 1e-4 x max(1, max |reference|)); calls are timed through each agent
// (p50 wall ms per call, rounds interleaved), and the table gives webgpu / cpu per model.
// Exits non-zero on a mismatch, a failed call, or a webgpu agent that refuses to start (no
// WebGPU adapter: its refusal is printed, and the cpu half still runs, so a machine without a
// GPU checks everything but the GPU). Writes bench/results/webgpu-node-*.json.
//
//   node --import tsx scripts/device/webgpu-node.ts [--width 4096] [--layers 4] [--batch 64] [--rounds 3] [--quick]
//
// --quick: a 1024-wide MLP and fewer calls, for a local try.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import type WebSocket from "ws";
import { err, QUICK, runBench, say, type Bench, type BenchChild } from "../../bench/harness.js";
import { fmt, printTable, ratio, round, summarize } from "../../bench/stats.js";
import { serveArtifacts, standInRouter, type StandInRouter } from "../../bench/stand-in-router.js";
import { packTensor, toWireTensor } from "../../formats/binary-tensors.js";
import type { WireTensor } from "../../formats/tensor.js";
import { toOrt } from "../../gpu-node/ort-tensors.js";
import { unbatch, parseNodeMessage, type NodeToRouter, type RouterToNode } from "../../protocol/messages.js";
import { sha256Hex } from "../../protocol/signing.js";
import { localWire } from "../../protocol/wire-version.js";
import { makeDemoModels } from "../make-demo-models.js";
import { encodeModel, OnnxType } from "../onnx-writer.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const WIDTH = arg("width", QUICK ? 1024 : 4096);
const LAYERS = arg("layers", 4);
const BATCH = arg("batch", 64);
const ROUNDS = arg("rounds", QUICK ? 1 : 3);
const TOKEN = "device-webgpu-node-token";
const TOLERANCE = 1e-4;

/** Seeded uniform values in [-1, 1) (an LCG: the same on every machine). */
function seeded(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s / 2 ** 32) * 2 - 1) * scale;
  }
  return a;
}

/** LAYERS x (Gemm + Relu) of WIDTH, weights scaled so activations stay near 1 through the layers. */
function mlpModel(): Uint8Array {
  const nodes = [];
  const initializers = [];
  let prev = "x";
  for (let i = 0; i < LAYERS; i++) {
    const w = seeded(WIDTH * WIDTH, 7 + i, Math.sqrt(3 / WIDTH) * Math.SQRT2);
    initializers.push({ name: `w${i}`, elemType: OnnxType.FLOAT, dims: [WIDTH, WIDTH], values: new Uint8Array(w.buffer) });
    initializers.push({ name: `b${i}`, elemType: OnnxType.FLOAT, dims: [WIDTH], values: new Uint8Array(WIDTH * 4) });
    nodes.push({ opType: "Gemm", inputs: [prev, `w${i}`, `b${i}`], outputs: [`h${i}`] });
    nodes.push({ opType: "Relu", inputs: [`h${i}`], outputs: [`r${i}`] });
    prev = `r${i}`;
  }
  nodes.push({ opType: "Identity", inputs: [prev], outputs: ["y"] });
  return encodeModel({
    graph: {
      name: "mlp",
      nodes,
      initializers,
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: ["batch", WIDTH] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: ["batch", WIDTH] }],
    },
  });
}

/** y = det(x) for a batch of 3x3 matrices: one operator, which the WebGPU provider may not have. */
const detModel = (): Uint8Array =>
  encodeModel({
    graph: {
      name: "det",
      nodes: [{ opType: "Det", inputs: ["x"], outputs: ["y"] }],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: ["batch", 3, 3] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: ["batch"] }],
    },
  });

interface Model {
  key: string;
  file: string;
  bytes: Uint8Array;
  sha256: string;
  signature: Extract<RouterToNode, { t: "load" }>["signature"];
}

interface Case {
  name: string;
  model: Model;
  input: WireTensor;
  calls: number;
}

type Loaded = Extract<NodeToRouter, { t: "loaded" }>;
type Result = Extract<NodeToRouter, { t: "result" }>;

/** One agent on the stand-in router: loads and calls by frame, as regions/node-link.ts does. */
class AgentLink {
  private nextId = 0;
  private readonly calls = new Map<string, { resolve: (r: Result) => void; reject: (e: Error) => void }>();
  private readonly loads = new Map<string, { resolve: (l: Loaded) => void; reject: (e: Error) => void }>();
  constructor(
    readonly provider: string,
    readonly proc: BenchChild,
    readonly hello: Extract<NodeToRouter, { t: "hello" }>,
    private readonly socket: WebSocket,
    private readonly router: StandInRouter,
  ) {
    socket.on("message", (data) => {
      for (const m of unbatch(router.codec.decode(data as Buffer), parseNodeMessage) as NodeToRouter[]) {
        if (m.t === "loaded") this.loads.get(m.key)?.resolve(m);
        else if (m.t === "load_failed") this.loads.get(m.key)?.reject(new Error(`load of ${m.key} failed on ${provider}: ${m.message}`));
        else if (m.t === "result") this.calls.get(m.id)?.resolve(m);
        else if (m.t === "error") this.calls.get(m.id)?.reject(new Error(`call failed on ${provider}: ${m.code} ${m.message}`));
      }
    });
    this.send({ t: "welcome", region: "device", wire: localWire() });
  }

  send(m: RouterToNode): void {
    this.socket.send(this.router.codec.encode(m), { binary: true });
  }

  load(m: Model, url: string): Promise<Loaded> {
    return new Promise((resolve, reject) => {
      this.loads.set(m.key, { resolve, reject });
      this.send({ t: "load", key: m.key, url, sha256: m.sha256, size: m.bytes.length, signature: m.signature });
    }).finally(() => this.loads.delete(m.key)) as Promise<Loaded>;
  }

  infer(m: Model, input: WireTensor): Promise<WireTensor[]> {
    const id = String(++this.nextId);
    return new Promise<Result>((resolve, reject) => {
      this.calls.set(id, { resolve, reject });
      this.send({ t: "infer", id, key: m.key, sha256: m.sha256, inputs: [packTensor(input)], deadline: Date.now() + 60_000, requestId: `device-${id}` });
    })
      .finally(() => this.calls.delete(id))
      .then((r) => r.outputs.map(toWireTensor));
  }
}

/** Max |a - b| over all outputs, and max |reference|. */
function compare(got: WireTensor[], want: Record<string, ort.Tensor>): { maxDiff: number; maxRef: number } {
  let maxDiff = 0;
  let maxRef = 0;
  for (const [name, ref] of Object.entries(want)) {
    const g = got.find((t) => t.name === name);
    if (!g) throw new Error(`output ${name} missing from the agent's answer`);
    const a = ref.data as Float32Array;
    const b = g.data as Float32Array;
    if (a.length !== b.length) throw new Error(`output ${name}: ${b.length} values, expected ${a.length}`);
    for (let i = 0; i < a.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
      maxRef = Math.max(maxRef, Math.abs(a[i]!));
    }
  }
  return { maxDiff, maxRef };
}

async function startAgent(b: Bench, router: StandInRouter, provider: "webgpu" | "cpu"): Promise<AgentLink | { refused: string }> {
  const nodeId = `device-${provider}`;
  const connected = router.node(nodeId);
  const proc = b.spawnTsx(`agent-${provider}`, "gpu-node/main.ts", [], {
    ROUTER_URL: router.url,
    NODE_TOKEN: TOKEN,
    NODE_ID: nodeId,
    MODEL_CACHE_DIR: join(b.tmpDir, `cache-${provider}`),
    MESH_EXECUTION_PROVIDER: provider,
  });
  const exited = new Promise<number | null>((r) => proc.child.once("exit", (code) => r(code)));
  const first = await Promise.race([connected, exited.then((code) => ({ code }))]);
  if ("code" in first) {
    // The agent refused to start: its own words are the last error line of its log.
    const log = await readFile(proc.log, "utf8");
    const line = log.split("\n").filter((l) => l.includes('"level":"error"')).at(-1);
    const msg = line ? (JSON.parse(line) as { msg: string }).msg : `exit ${first.code}; see ${proc.log}`;
    b.keep();
    return { refused: msg };
  }
  return new AgentLink(provider, proc, first.hello, first.socket, router);
}

async function main(b: Bench): Promise<void> {
  err(`[device] onnxruntime-node ${ort.env.versions.common}; backends ${JSON.stringify(ort.listSupportedBackends())}`);
  const demo = (await makeDemoModels(join(b.tmpDir, "models"))).find((f) => f.name === "demo-mlp" && f.version === "1")!;
  const t0 = performance.now();
  const mlpBytes = mlpModel();
  err(`[device] MLP ${LAYERS} x ${WIDTH}: ${(mlpBytes.length / 2 ** 20).toFixed(0)} MiB built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const model = async (key: string, file: string, bytes: Uint8Array, signature: Model["signature"]): Promise<Model> => ({ key, file, bytes, sha256: await sha256Hex(bytes), signature });
  const mlp = await model("mlp@1", "mlp.onnx", mlpBytes, { inputs: [{ name: "x", datatype: "FP32", shape: [-1, WIDTH] }], outputs: [{ name: "y", datatype: "FP32", shape: [-1, WIDTH] }] });
  const demoMlp = await model("demo-mlp@1", "demo-mlp.onnx", new Uint8Array(await readFile(demo.path)), {
    inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }],
    outputs: [{ name: "logits", datatype: "FP32", shape: [-1, 3] }, { name: "probs", datatype: "FP32", shape: [-1, 3] }],
  });
  const det = await model("det@1", "det.onnx", detModel(), { inputs: [{ name: "x", datatype: "FP32", shape: [-1, 3, 3] }], outputs: [{ name: "y", datatype: "FP32", shape: [-1] }] });
  const models = [mlp, demoMlp, det];
  const x = (shape: number[], seed: number): WireTensor => ({ name: "x", datatype: "FP32", shape, data: seeded(shape.reduce((p, d) => p * d, 1), seed) });
  const cases: Case[] = [
    { name: `mlp ${LAYERS}x${WIDTH} batch ${BATCH}`, model: mlp, input: x([BATCH, WIDTH], 11), calls: QUICK ? 5 : 20 },
    { name: `mlp ${LAYERS}x${WIDTH} batch 1`, model: mlp, input: x([1, WIDTH], 12), calls: QUICK ? 10 : 40 },
    { name: "demo-mlp [1,4]", model: demoMlp, input: x([1, 4], 13), calls: QUICK ? 50 : 200 },
    { name: "det (CPU fallback) [8,3,3]", model: det, input: x([8, 3, 3], 14), calls: QUICK ? 20 : 50 },
  ];

  // The reference: onnxruntime's CPU provider in this process.
  const reference = new Map<Case, Record<string, ort.Tensor>>();
  for (const c of cases) {
    const s = await ort.InferenceSession.create(Buffer.from(c.model.bytes), { executionProviders: ["cpu"], graphOptimizationLevel: "all" });
    reference.set(c, await s.run({ x: toOrt(c.input) }));
    await s.release();
  }

  const urlOf = await serveArtifacts(b, Object.fromEntries(models.map((m) => [m.file, m.bytes])));
  const router = await standInRouter(b, TOKEN);
  const failures: string[] = [];
  const agents: AgentLink[] = [];
  const loadInfo: Record<string, unknown> = {};
  for (const provider of ["webgpu", "cpu"] as const) {
    const a = await startAgent(b, router, provider);
    if ("refused" in a) {
      say(`${provider} agent refused to start: ${a.refused}`);
      failures.push(`${provider} agent refused to start`);
      continue;
    }
    err(`[device] ${provider} agent: executionProvider ${a.hello.executionProvider}, accelerator ${JSON.stringify(a.hello.accelerator)}, memory budget ${a.hello.memoryBudgetMb} MiB`);
    if (a.hello.executionProvider !== provider) failures.push(`${provider} agent reports executionProvider ${a.hello.executionProvider}`);
    for (const m of models) {
      const t = performance.now();
      const l = await a.load(m, urlOf(m.file));
      loadInfo[`${provider} ${m.key}`] = { loadWallMs: round(performance.now() - t, 0), loadMs: round(l.loadMs, 0), memoryMb: round(l.memoryMb, 0) };
      err(`[device] ${provider}: ${m.key} loaded in ${fmt(performance.now() - t, 0)} ms, ${fmt(l.memoryMb, 0)} MiB counted`);
    }
    agents.push(a);
  }

  // Correctness, then timing: rounds interleave the agents so both see the machine's same moments.
  const diffs = new Map<string, { maxDiff: number; maxRef: number }>();
  for (const a of agents) {
    for (const c of cases) {
      const d = compare(await a.infer(c.model, c.input), reference.get(c)!);
      diffs.set(`${a.provider} ${c.name}`, d);
      if (!(d.maxDiff <= TOLERANCE * Math.max(1, d.maxRef))) failures.push(`${a.provider} ${c.name}: max |diff| ${d.maxDiff} (max |ref| ${d.maxRef})`);
    }
  }
  const times = new Map<string, number[]>();
  for (let r = 0; r < ROUNDS && !b.interrupted; r++) {
    for (const c of cases) {
      for (const a of agents) {
        for (let i = 0; i < 3; i++) await a.infer(c.model, c.input);
        const key = `${a.provider} ${c.name}`;
        const t = times.get(key) ?? [];
        for (let i = 0; i < c.calls; i++) {
          const s = performance.now();
          await a.infer(c.model, c.input);
          t.push(performance.now() - s);
        }
        times.set(key, t);
      }
    }
  }

  const p50 = (provider: string, c: Case) => {
    const t = times.get(`${provider} ${c.name}`);
    return t ? summarize(t).p50 : NaN;
  };
  const rows = cases.map((c) => ({
    case: c.name,
    cpuP50Ms: p50("cpu", c),
    webgpuP50Ms: p50("webgpu", c),
    webgpuVsCpu: ratio(p50("webgpu", c), p50("cpu", c)),
    cpuMaxDiff: diffs.get(`cpu ${c.name}`)?.maxDiff ?? NaN,
    webgpuMaxDiff: diffs.get(`webgpu ${c.name}`)?.maxDiff ?? NaN,
    maxRef: diffs.get(`cpu ${c.name}`)?.maxRef ?? diffs.get(`webgpu ${c.name}`)?.maxRef ?? NaN,
  }));
  say(`\nwebgpu-node: p50 wall ms per call through a real node agent (stand-in router, c=1), ${ROUNDS} round(s), ${b.machine.cpus} CPUs`);
  printTable(
    ["case", "cpu agent ms", "webgpu agent ms", "webgpu / cpu", "max |diff| cpu", "max |diff| webgpu", "max |ref|"],
    rows.map((r) => [r.case, fmt(r.cpuP50Ms, 3), fmt(r.webgpuP50Ms, 3), fmt(r.webgpuVsCpu, 2), fmt(r.cpuMaxDiff, 7), fmt(r.webgpuMaxDiff, 7), fmt(r.maxRef, 3)]),
    ["left", "right", "right", "right", "right", "right", "right"],
  );
  await b.saveResults({
    width: WIDTH,
    layers: LAYERS,
    batch: BATCH,
    rounds: ROUNDS,
    tolerance: TOLERANCE,
    agents: Object.fromEntries(agents.map((a) => [a.provider, { executionProvider: a.hello.executionProvider, accelerator: a.hello.accelerator, memoryBudgetMb: a.hello.memoryBudgetMb }])),
    loads: loadInfo,
    rows: rows.map((r) => ({ ...r, cpuP50Ms: round(r.cpuP50Ms, 4), webgpuP50Ms: round(r.webgpuP50Ms, 4), webgpuVsCpu: round(r.webgpuVsCpu, 3) })),
    failures,
  });
  if (failures.length) throw new Error(`${failures.length} failure(s):\n  ${failures.join("\n  ")}`);
  say("\nwebgpu-node: OK (every answer within tolerance of onnxruntime's CPU provider)");
}

void runBench("webgpu-node", main, { watchdogMs: 85_000 });
