// What the mesh costs over running the model yourself. One run, one machine, four cases: a
// small tensor (demo-mlp, x FP32 [1,4]) and a large one (demo-matmul, a FP32 [64,1024] times
// b [1024,1]), each as OIP JSON and as Triton's binary tensor data extension (binary inputs,
// binary outputs). Each case three ways:
//
//   direct      in-process onnxruntime-node session.run (the floor)
//   plain-http  a single-process Node HTTP server around the same model, in its own process
//               (bench/plain-http-server.ts), same OIP JSON (or binary) in and out
//   mesh        the whole local mesh through the edge: workerd -> region router -> node agent
//
// Each gets a latency phase (sequential calls) and a throughput phase (16 concurrent callers).
// HTTP variants use keep-alive connections; every answer must be 200 with outputs equal to the
// direct result. The mesh's Server-Timing header says where its time goes. Ratios are against
// plain-http in the same run (the issue's goals: p50 <= 2x, p99 <= 3x, throughput >= 1/3, and
// for the large tensor in binary >= 1/2 of plain-http's tensor bytes per second).
//
// Run: npm run bench            (full: ~2000 sequential calls / ~6 s at c=16 per variant)
//      npx tsx bench/mesh-overhead.ts --quick   (smoke run, small counts)
//      npx tsx bench/mesh-overhead.ts --cases large-binary   (only the named cases, comma-separated)
//      npx tsx bench/mesh-overhead.ts --profile (mesh only: CPU ms per call in each process,
//          Redis commands per call, and each process's hottest functions per case, from V8 CPU
//          profiles: bench/cpu-profile-preload.cjs in the Node processes, the inspector for
//          workerd; see bench/process-profile.ts; writes bench/results/mesh-profile-*.json;
//          MESH_EDGE_PROFILE_OUT=<file> also writes the edge isolate's whole CPU profile and each
//          case's window in it, for reading call stacks beyond the top self times)
//
// Prints a table and writes bench/results/mesh-overhead-<timestamp>.json and
// bench/results/mesh-overhead-latest.json. Targets are informational: exit 0 unless it crashed.

import { readFileSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { freePort } from "../local/free-port.js";
import { ROOT, waitFor, type MeshHandle } from "../local/mesh.js";
import { err, QUICK, runBench, say, type Bench } from "./harness.js";
import { keepAliveAgent, post, type HttpAnswer } from "./http-client.js";
import { cpuByPart, InspectorProfiler, monotonicMicros, pidsMatching, readNodeProfiles, redisCommandCounts, selfTimes, type CpuProfile, type SelfTime } from "./process-profile.js";
import { decodeInferResponse, encodeInferRequest, INFERENCE_HEADER } from "../formats/binary-tensors.js";
import { makeDemoMatmul, makeDemoModels, DEMO_MATMUL_NAME } from "../scripts/make-demo-models.js";
import { errorSampleLines, fmt, formatTable, machineInfo, phaseJson, ratio, round, rounded, runPhase, summarize, type PhaseOptions, type PhaseResult, type Summary } from "./stats.js";

const PROFILE = process.argv.includes("--profile");
const CONCURRENCY = 16;

const LATENCY: PhaseOptions = PROFILE
  ? { warmup: 20, maxCalls: 400, maxMs: 4_000, concurrency: 1 }
  : QUICK
  ? { warmup: 20, maxCalls: 200, maxMs: 1_500, concurrency: 1 }
  : { warmup: 200, maxCalls: 2_000, maxMs: 8_000, concurrency: 1 };
const THROUGHPUT: PhaseOptions = PROFILE
  ? { warmup: 2 * CONCURRENCY, maxCalls: 5_000, maxMs: 3_000, concurrency: CONCURRENCY }
  : QUICK
  ? { warmup: 2 * CONCURRENCY, maxCalls: 3_000, maxMs: 1_000, concurrency: CONCURRENCY }
  : { warmup: 4 * CONCURRENCY, maxCalls: 200_000, maxMs: 6_000, concurrency: CONCURRENCY };

const TARGETS = {
  p50VsPlain: 2,
  p99VsPlain: 3,
  throughputShareOfPlain: 1 / 3,
  largeBinaryBytesShareOfPlain: 1 / 2,
};

const SERVER_TIMING_KEYS = ["edge", "network", "region", "queue", "load", "infer", "total"] as const;
/** Per-call extras next to Server-Timing: what the client measured, and the part outside the edge's total. */
const CLIENT_KEYS = ["client", "outside"] as const;

// ---------------------------------------------------------------------------------------------
// Cleanup (children, temp folder, Ctrl-C): bench/harness.ts. What only this bench holds (the
// direct sessions, the HTTP agents) is handed to it as it is made.

/** This run's harness. */
let bench: Bench;
/** The mesh, once started: --profile stops it itself before reading the profiles. */
let meshStarted: Promise<MeshHandle> | null = null;

// ---------------------------------------------------------------------------------------------
// Cases

type Size = "small" | "large";

interface BenchCase {
  id: string;
  size: Size;
  binary: boolean;
  model: string;
  inputs: { name: string; shape: number[]; data: Float32Array }[];
  outputNames: string[];
  /** Input tensor bytes per call (the large case's bytes per second count these). */
  tensorBytes: number;
}

function pseudo(n: number, seed: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => (((i * 7919 + seed) % 17) - 8) / 8);
}

const SMALL_INPUTS = [{ name: "x", shape: [1, 4], data: Float32Array.from([1, 2, 3, 4]) }];
const LARGE_INPUTS = [
  { name: "a", shape: [64, 1024], data: pseudo(64 * 1024, 1) },
  { name: "b", shape: [1024, 1], data: pseudo(1024, 2) },
];
const MODELS: Record<Size, { model: string; inputs: BenchCase["inputs"]; outputNames: string[] }> = {
  small: { model: "demo-mlp", inputs: SMALL_INPUTS, outputNames: ["logits", "probs"] },
  large: { model: DEMO_MATMUL_NAME, inputs: LARGE_INPUTS, outputNames: ["y"] },
};
/** `--cases large-binary,small-json` runs only those cases (quicker A/B runs of one case). */
const ONLY = (() => {
  const i = process.argv.indexOf("--cases");
  return i < 0 ? null : new Set(process.argv[i + 1]!.split(","));
})();
const CASES: BenchCase[] = (["small", "large"] as const)
  .flatMap((size) =>
    [false, true].map((binary) => ({
      id: `${size}-${binary ? "binary" : "json"}`,
      size,
      binary,
      ...MODELS[size],
      tensorBytes: MODELS[size].inputs.reduce((n, t) => n + t.data.byteLength, 0),
    })),
  )
  .filter((c) => ONLY === null || ONLY.has(c.id));

/** The request body and headers of a case: OIP JSON, or binary inputs asking for binary outputs. */
function requestOf(c: BenchCase): { body: Buffer; headers: Record<string, string> } {
  if (!c.binary) {
    const json = { inputs: c.inputs.map((t) => ({ name: t.name, datatype: "FP32", shape: t.shape, data: Array.from(t.data) })) };
    return { body: Buffer.from(JSON.stringify(json)), headers: { "content-type": "application/json" } };
  }
  const { body, headerLength } = encodeInferRequest(
    { parameters: { binary_data_output: true } },
    c.inputs.map((t) => ({ name: t.name, datatype: "FP32" as const, shape: t.shape, data: t.data, binary: true })),
  );
  return { body: Buffer.from(body.buffer, body.byteOffset, body.byteLength), headers: { "content-type": "application/octet-stream", [INFERENCE_HEADER]: String(headerLength) } };
}

// ---------------------------------------------------------------------------------------------
// Output checking against the direct result

type Expected = Record<string, Float32Array>;

function sameFloat32(got: unknown, want: Float32Array): boolean {
  if (got instanceof Float32Array) return got.length === want.length && got.every((v, i) => Object.is(v, want[i]));
  if (!Array.isArray(got) || got.length !== want.length) return false;
  for (let i = 0; i < want.length; i++) {
    const v = got[i];
    if (typeof v !== "number" || Math.fround(v) !== want[i]) return false;
  }
  return true;
}

/** Throws unless an answer (JSON or binary) carries exactly the direct run's outputs. */
function checkAnswer(r: HttpAnswer, expected: Expected, binary: boolean): void {
  const headerLength = r.headers[INFERENCE_HEADER];
  if (binary !== (typeof headerLength === "string")) throw new Error(`answer is ${binary ? "not binary" : "binary"}: ${r.body.toString("utf8", 0, 120)}`);
  let outputs: { name: string; datatype: string; data: unknown }[];
  try {
    outputs = decodeInferResponse(r.body, typeof headerLength === "string" ? headerLength : null).outputs;
  } catch {
    throw new Error(`answer does not decode: ${r.body.toString("utf8", 0, 120)}`);
  }
  for (const [name, want] of Object.entries(expected)) {
    const out = outputs.find((o) => o.name === name);
    if (!out) throw new Error(`answer has no output '${name}'`);
    if (out.datatype !== "FP32") throw new Error(`output '${name}' is ${String(out.datatype)}, not FP32`);
    if (!sameFloat32(out.data, want)) throw new Error(`output '${name}' differs from direct`);
  }
}

// ---------------------------------------------------------------------------------------------
// Server-Timing

function parseServerTiming(header: string | string[] | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  const text = Array.isArray(header) ? header.join(", ") : (header ?? "");
  for (const part of text.split(",")) {
    const [name, ...params] = part.trim().split(";");
    if (!name) continue;
    for (const p of params) {
      const [k, v] = p.trim().split("=");
      if (k === "dur" && v !== undefined) out[name] = Number(v);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Variants

interface VariantResult {
  latency: PhaseResult;
  throughput: PhaseResult;
}

async function measure(
  name: string,
  call: () => Promise<unknown>,
  onSample?: (phase: "latency" | "throughput") => (v: unknown, ms: number) => void,
): Promise<VariantResult> {
  err(`[bench] ${name}: latency phase (c=1, ${LATENCY.warmup} warm-up, up to ${LATENCY.maxCalls} calls / ${LATENCY.maxMs / 1000} s)`);
  const latency = await runPhase(call, LATENCY, onSample?.("latency"));
  err(`[bench] ${name}: p50 ${fmt(latency.latency.p50, 3)} ms, p99 ${fmt(latency.latency.p99, 3)} ms over ${latency.calls} calls, ${latency.errors} errors`);
  err(`[bench] ${name}: throughput phase (c=${CONCURRENCY}, up to ${THROUGHPUT.maxCalls} calls / ${THROUGHPUT.maxMs / 1000} s)`);
  const throughput = await runPhase(call, THROUGHPUT, onSample?.("throughput"));
  err(`[bench] ${name}: ${fmt(throughput.okPerSec, 0)} calls/s over ${throughput.calls} calls, ${throughput.errors} errors`);
  return { latency, throughput };
}

/** bench/plain-http-server.ts in its own process, stopped at the end (or by stopChild). */
async function startPlainServer(modelPath: string, model: string) {
  const child = bench.spawnTsx(`plain-http-${model}`, "bench/plain-http-server.ts", [modelPath, model]);
  const port = await waitFor("plain-http server", 30_000, async () => /LISTENING (\d+)/.exec(readFileSync(child.log, "utf8"))?.[1], child);
  return { child, base: `http://127.0.0.1:${port}` };
}

// ---------------------------------------------------------------------------------------------

async function main(b: Bench): Promise<void> {
  bench = b;
  const { startedAt, machine } = b;
  const files = [...(await makeDemoModels(join(b.tmpDir, "models"))), await makeDemoMatmul(join(b.tmpDir, "models"))];
  const pathOf = (model: string) => {
    const f = files.find((x) => x.name === model && x.version === "1");
    if (!f) throw new Error(`no ${model} v1 was written`);
    return f.path;
  };

  // --- direct: per tensor size (JSON or binary is a wire matter; the run is the same) -----------
  const expected = {} as Record<Size, Expected>;
  const direct = {} as Record<Size, VariantResult>;
  for (const size of ["small", "large"] as const) {
    const { model, inputs, outputNames } = MODELS[size];
    // Same session options as the node agent (gpu-node/onnx-runtime.ts) on a CPU machine.
    const session = await ort.InferenceSession.create(pathOf(model), { executionProviders: ["cpu"], graphOptimizationLevel: "all" });
    b.defer(() => session.release());
    const run = () => session.run(Object.fromEntries(inputs.map((t) => [t.name, new ort.Tensor("float32", t.data, t.shape)])), outputNames);
    const first = await run();
    const want = Object.fromEntries(outputNames.map((n) => [n, first[n]!.data as Float32Array]));
    expected[size] = want;
    direct[size] = await measure(`direct ${size}`, async () => {
      const r = await run();
      for (const n of outputNames) if (!sameFloat32(r[n]?.data, want[n]!)) throw new Error(`direct output '${n}' changed`);
    });
  }

  if (PROFILE) return profileMesh(startedAt, machine, expected, await readFile(pathOf(DEMO_MATMUL_NAME)));

  // --- plain-http -----------------------------------------------------------------------------
  err("[bench] starting the plain-http servers (separate processes)");
  const plainServers = {
    small: await startPlainServer(pathOf(MODELS.small.model), MODELS.small.model),
    large: await startPlainServer(pathOf(MODELS.large.model), MODELS.large.model),
  };
  const plain: Record<string, VariantResult> = {};
  for (const c of CASES) {
    const url = new URL(`/v2/models/${c.model}/infer`, plainServers[c.size].base);
    const agent = keepAliveAgent(b, CONCURRENCY);
    const { body, headers } = requestOf(c);
    plain[c.id] = await measure(`plain-http ${c.id}`, async () => {
      const r = await post(agent, url, headers, body);
      if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.toString("utf8", 0, 200)}`);
      checkAnswer(r, expected[c.size], c.binary);
    });
    agent.destroy();
  }
  for (const p of Object.values(plainServers)) await b.stopChild(p.child);

  // --- mesh -----------------------------------------------------------------------------------
  // A mesh that fails to start or answer still leaves the other variants reported (exit 1).
  let meshRun: MeshRun | null = null;
  let meshError: string | null = null;
  try {
    meshRun = await measureMesh(expected, await readFile(pathOf(DEMO_MATMUL_NAME)));
  } catch (e) {
    if (b.interrupted) throw new Error("interrupted");
    meshError = e instanceof Error ? e.message : String(e);
    b.keep();
    err(`[bench] mesh failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
  // An interrupted run reports nothing (and leaves mesh-overhead-latest.json alone).
  if (b.interrupted) throw new Error("interrupted");
  const finishedAt = new Date();
  const facts: RunFacts = { startedAt, finishedAt, machine, direct, plain, meshRun, meshError };
  report(facts);
  await b.saveResults(resultJson(facts));
  if (meshError) throw new Error(`mesh variant failed: ${meshError}`);
}

type TimingKey = (typeof SERVER_TIMING_KEYS)[number] | (typeof CLIENT_KEYS)[number];

interface MeshCaseRun {
  result: VariantResult;
  coldFirstCallMs: number;
  timing: { latency: Record<TimingKey, Summary>; throughput: Record<TimingKey, Summary> };
}

interface MeshRun {
  startMs: number;
  cases: Record<string, MeshCaseRun>;
  regionsSeen: Record<string, number>;
}

/** Hooks around each mesh case (the --profile mode's measurements). */
interface CaseProbe {
  started(mesh: MeshHandle): Promise<void>;
  before(caseId: string): void;
  after(caseId: string, calls: number): void;
}

async function measureMesh(expected: Record<Size, Expected>, matmulBytes: Buffer, probe?: CaseProbe): Promise<MeshRun> {
  if (bench.interrupted) throw new Error("interrupted");
  err("[bench] starting the mesh (not timed)");
  const meshStart = performance.now();
  meshStarted = bench.startMesh();
  const mesh = await meshStarted;
  const startMs = performance.now() - meshStart;
  const meshHeaders = { authorization: `Bearer ${mesh.apiKey}` };
  // demo-matmul is not one of the models the mesh deploys: upload it as a user would.
  const admin = keepAliveAgent(bench, CONCURRENCY);
  const created = await post(admin, new URL("/v1/models", mesh.edge), meshHeaders, Buffer.from(JSON.stringify({ name: DEMO_MATMUL_NAME })));
  if (created.status !== 201) throw new Error(`creating ${DEMO_MATMUL_NAME}: HTTP ${created.status} ${created.body.toString("utf8", 0, 200)}`);
  const uploaded = await post(admin, new URL(`/v1/models/${DEMO_MATMUL_NAME}/versions`, mesh.edge), { ...meshHeaders, "content-type": "application/octet-stream" }, matmulBytes);
  if (uploaded.status !== 201) throw new Error(`uploading ${DEMO_MATMUL_NAME}: HTTP ${uploaded.status} ${uploaded.body.toString("utf8", 0, 200)}`);
  admin.destroy();
  await probe?.started(mesh);
  const regionsSeen: Record<string, number> = {};
  const cases: Record<string, MeshCaseRun> = {};
  for (const c of CASES) {
    const url = new URL(`/v2/models/${c.model}/infer`, mesh.edge);
    const agent = keepAliveAgent(bench, CONCURRENCY);
    const { body, headers } = requestOf(c);
    const samples = { latency: [] as Record<string, number>[], throughput: [] as Record<string, number>[] };
    let calls = 0;
    const meshCall = async () => {
      calls++;
      const r = await post(agent, url, { ...meshHeaders, ...headers }, body);
      if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.toString("utf8", 0, 200)}`);
      checkAnswer(r, expected[c.size], c.binary);
      const region = String(r.headers["x-mesh-region"] ?? "?");
      regionsSeen[region] = (regionsSeen[region] ?? 0) + 1;
      return parseServerTiming(r.headers["server-timing"]);
    };
    // The first call of a model loads it on a node; time it, then warm every path (phase warm-up).
    const cold0 = performance.now();
    await meshCall();
    const coldFirstCallMs = performance.now() - cold0;
    probe?.before(c.id);
    calls = 0;
    const result = await measure(`mesh ${c.id}`, meshCall, (phase) => (v, ms) => {
      const t = v as Record<string, number>;
      t.client = ms;
      // Time outside the edge's own total: client, wrangler's dev proxy, sockets.
      if (t.total !== undefined) t.outside = ms - t.total;
      samples[phase].push(t);
    });
    probe?.after(c.id, calls);
    agent.destroy();
    const summarizeTimings = (phase: "latency" | "throughput") =>
      Object.fromEntries(
        [...SERVER_TIMING_KEYS, ...CLIENT_KEYS].map((k) => [k, summarize(samples[phase].map((t) => t[k]).filter((x): x is number => x !== undefined && Number.isFinite(x)))]),
      ) as Record<TimingKey, Summary>;
    cases[c.id] = { result, coldFirstCallMs, timing: { latency: summarizeTimings("latency"), throughput: summarizeTimings("throughput") } };
  }
  return { startMs, cases, regionsSeen };
}

// ---------------------------------------------------------------------------------------------
// --profile: where each process of the mesh spends CPU per call, and on what

const PARTS = ["edge workerd", "edge Miniflare (node)", "router", "node agent", "node session child", "redis-server", "bench client + Upstash REST"] as const;

function partOf(root: string, row: { comm: string; cmdline: string }): string {
  if (root === "edge") return row.comm === "workerd" ? "edge workerd" : "edge Miniflare (node)";
  if (root.startsWith("router-")) return "router";
  if (root.startsWith("node-")) return row.cmdline.includes("session-child") ? "node session child" : "node agent";
  if (root === "redis") return "redis-server";
  return root;
}

interface CaseProfile {
  calls: number;
  wallMs: number;
  /** Net of what the idle mesh spends in the same time. */
  cpuMsPerCall: Record<string, number>;
  redisPerCall: Record<string, number>;
  /** As measured, idle spending included. */
  rawCpuMsPerCall: Record<string, number>;
  /** Per part: busy CPU ms per call in the profile, and the hottest functions (ms per call). */
  hot: Record<string, { busyMsPerCall: number; top: SelfTime[] }>;
}

async function profileMesh(startedAt: Date, machine: ReturnType<typeof machineInfo>, expected: Record<Size, Expected>, matmul: Buffer): Promise<void> {
  const profDir = join(bench.tmpDir, "cpu-prof");
  const inspectorPort = await freePort();
  // Inherited by every process the mesh starts (not by this one: Node reads it at start).
  process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ""} --require ${join(ROOT, "bench/cpu-profile-preload.cjs")}`.trim();
  process.env.MESH_CPU_PROF_DIR = profDir;
  process.env.EDGE_INSPECTOR_PORT = String(inspectorPort);
  const roots: Record<string, number> = {};
  let redisPort = 0;
  let edgeProfiler: InspectorProfiler | null = null;
  const pidParts = new Map<number, string>();
  const open = new Map<string, { from: number; cpu: Record<string, number>; bench: NodeJS.CpuUsage; redis: Record<string, number>; wall: number }>();
  const done = new Map<string, { from: number; to: number; calls: number; wallMs: number; cpuMs: Record<string, number>; redis: Record<string, number> }>();
  const snapshot = () => {
    const { cpuMs, pids } = cpuByPart(roots, partOf);
    for (const [pid, part] of pids) pidParts.set(pid, part);
    return cpuMs;
  };
  /** What the mesh spends with no calls (reports, heartbeats, memory polls), per second. */
  let idle = { cpuMsPerS: {} as Record<string, number>, redisPerS: {} as Record<string, number> };
  const IDLE_MS = 5_000;
  const probe: CaseProbe = {
    async started(mesh) {
      for (const p of mesh.processes) if (p.child.pid !== undefined && p.child.exitCode === null) roots[p.name] = p.child.pid;
      redisPort = mesh.redis.port;
      const redisPid = pidsMatching("redis-server", String(redisPort))[0];
      if (redisPid !== undefined) roots.redis = redisPid;
      try {
        edgeProfiler = await InspectorProfiler.connect(`ws://127.0.0.1:${inspectorPort}/edge`);
        await edgeProfiler.start();
      } catch (e) {
        err(`[bench] no CPU profile of workerd: ${String(e)}`);
      }
      err(`[bench] measuring the idle mesh for ${IDLE_MS / 1000} s`);
      const cpu0 = snapshot();
      const bench0 = process.cpuUsage();
      const redis0 = redisCommandCounts(redisPort);
      const t0 = performance.now();
      await new Promise((r) => setTimeout(r, IDLE_MS));
      const s = (performance.now() - t0) / 1000;
      const cpu1 = snapshot();
      const bench1 = process.cpuUsage(bench0);
      const redis1 = redisCommandCounts(redisPort);
      idle = {
        cpuMsPerS: { ...Object.fromEntries(Object.keys(cpu1).map((k) => [k, (cpu1[k]! - (cpu0[k] ?? 0)) / s])), "bench client + Upstash REST": (bench1.user + bench1.system) / 1000 / s },
        redisPerS: Object.fromEntries(Object.keys(redis1).map((k) => [k, (redis1[k]! - (redis0[k] ?? 0)) / s])),
      };
    },
    before(id) {
      open.set(id, { from: monotonicMicros(), cpu: snapshot(), bench: process.cpuUsage(), redis: redisCommandCounts(redisPort), wall: performance.now() });
    },
    after(id, calls) {
      const o = open.get(id)!;
      const cpu = snapshot();
      const bench = process.cpuUsage(o.bench);
      const redis = redisCommandCounts(redisPort);
      const cpuMs = Object.fromEntries(Object.keys(cpu).map((k) => [k, cpu[k]! - (o.cpu[k] ?? 0)]));
      cpuMs["bench client + Upstash REST"] = (bench.user + bench.system) / 1000;
      const redisDelta = Object.fromEntries(Object.keys(redis).map((k) => [k, redis[k]! - (o.redis[k] ?? 0)]).filter(([, v]) => (v as number) > 0));
      done.set(id, { from: o.from, to: monotonicMicros(), calls, wallMs: performance.now() - o.wall, cpuMs, redis: redisDelta });
    },
  };
  const run = await measureMesh(expected, matmul, probe);
  const edgeProfile: CpuProfile | null = edgeProfiler ? await (edgeProfiler as InspectorProfiler).stop().catch(() => null) : null;
  // Node writes its profiles when a process exits: stop the mesh now, then read them.
  // (stop() is idempotent: the harness's own stop at cleanup then does nothing.)
  await (await meshStarted!).stop();
  const nodeProfiles = readNodeProfiles(profDir);
  const profilesOf = (part: string): CpuProfile[] =>
    part === "edge workerd" ? (edgeProfile ? [edgeProfile] : []) : [...nodeProfiles].filter(([pid]) => pidParts.get(pid) === part).map(([, p]) => p);

  const cases: Record<string, CaseProfile> = {};
  for (const c of CASES) {
    const d = done.get(c.id)!;
    const per = (v: number) => v / d.calls;
    const hot: CaseProfile["hot"] = {};
    for (const part of PARTS) {
      const profiles = profilesOf(part);
      if (profiles.length === 0) continue;
      const s = selfTimes(profiles, d.from, d.to, 8);
      hot[part] = { busyMsPerCall: per(s.busyMs), top: s.top.map((t) => ({ ...t, ms: per(t.ms) })) };
    }
    const s = d.wallMs / 1000;
    cases[c.id] = {
      calls: d.calls,
      wallMs: d.wallMs,
      cpuMsPerCall: Object.fromEntries(Object.entries(d.cpuMs).map(([k, v]) => [k, Math.max(0, per(v - (idle.cpuMsPerS[k] ?? 0) * s))])),
      redisPerCall: Object.fromEntries(Object.entries(d.redis).map(([k, v]) => [k, Math.max(0, per(v - (idle.redisPerS[k] ?? 0) * s))]).filter(([, v]) => (v as number) >= 0.005)),
      rawCpuMsPerCall: Object.fromEntries(Object.entries(d.cpuMs).map(([k, v]) => [k, per(v)])),
      hot,
    };
  }

  say();
  say(`mesh-overhead --profile: CPU ms per call in each process (from /proc), over both phases of each case (c=1 then c=${CONCURRENCY}), less what the idle mesh spends in the same time; ${machine.cpus} CPUs (${machine.cpuModel})`);
  say(`idle mesh, CPU ms per s: ${PARTS.map((k) => `${k} ${fmt(idle.cpuMsPerS[k], 1)}`).join(", ")}`);
  say(
    formatTable(
      ["case", "calls", ...PARTS, "all parts", "c=1 p50 ms"],
      CASES.map((c) => {
        const p = cases[c.id]!;
        const total = Object.values(p.cpuMsPerCall).reduce((a, b) => a + b, 0);
        return [c.id, String(p.calls), ...PARTS.map((k) => fmt(p.cpuMsPerCall[k], 3)), fmt(total, 3), fmt(run.cases[c.id]!.result.latency.latency.p50, 2)];
      }),
    ),
  );
  say();
  say("Redis commands per call, less the idle mesh's (INFO commandstats):");
  for (const c of CASES) {
    const r = cases[c.id]!.redisPerCall;
    say(`  ${c.id}: ${Object.entries(r).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(", ") || "none"}`);
  }
  for (const c of CASES) {
    say();
    say(`hottest functions, ${c.id} (self CPU ms per call; share of the process's busy time):`);
    for (const [part, h] of Object.entries(cases[c.id]!.hot)) {
      say(`  ${part} (profiled busy ${fmt(h.busyMsPerCall, 3)} ms/call):`);
      for (const t of h.top) say(`    ${fmt(t.ms, 4)}  ${fmt(t.share * 100, 1)}%  ${t.fn}`);
    }
  }
  await bench.saveResults({ bench: "mesh-overhead --profile", latency: LATENCY, throughput: THROUGHPUT, idleMs: IDLE_MS, idle, cases }, "mesh-profile");
  // The isolate's whole profile and each case's window (µs, the profile's clock), for reading
  // call stacks beyond the top self times (MESH_EDGE_PROFILE_OUT=<file>).
  const out = process.env.MESH_EDGE_PROFILE_OUT;
  if (out && edgeProfile) {
    await writeFile(out, JSON.stringify({ windows: Object.fromEntries(CASES.map((c) => [c.id, [done.get(c.id)!.from, done.get(c.id)!.to, done.get(c.id)!.calls]])), profile: edgeProfile }));
    err(`[bench] the edge isolate's CPU profile: ${out}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Report

interface RunFacts {
  startedAt: Date;
  finishedAt: Date;
  machine: ReturnType<typeof machineInfo>;
  direct: Record<Size, VariantResult>;
  plain: Record<string, VariantResult>;
  meshRun: MeshRun | null;
  meshError: string | null;
}

interface Row {
  p50Ms: number;
  p99Ms: number;
  callsPerSec: number;
  p50VsPlain: number;
  p99VsPlain: number;
  throughputVsPlain: number;
  p50VsDirect: number;
  /** Input tensor bytes per second at c=16. */
  tensorBytesPerSec: number;
  errors: number;
}

function rowOf(v: VariantResult, plain: VariantResult, direct: VariantResult, c: BenchCase): Row {
  const l = v.latency.latency;
  return {
    p50Ms: l.p50,
    p99Ms: l.p99,
    callsPerSec: v.throughput.okPerSec,
    p50VsPlain: ratio(l.p50, plain.latency.latency.p50),
    p99VsPlain: ratio(l.p99, plain.latency.latency.p99),
    throughputVsPlain: ratio(v.throughput.okPerSec, plain.throughput.okPerSec),
    p50VsDirect: ratio(l.p50, direct.latency.latency.p50),
    tensorBytesPerSec: v.throughput.okPerSec * c.tensorBytes,
    errors: v.latency.errors + v.throughput.errors + v.latency.warmupErrors + v.throughput.warmupErrors,
  };
}

function comparisons(f: RunFacts): Record<string, Record<string, Row>> {
  return Object.fromEntries(
    CASES.map((c) => {
      const plain = f.plain[c.id]!;
      const direct = f.direct[c.size];
      const mesh = f.meshRun?.cases[c.id];
      return [
        c.id,
        {
          direct: rowOf(direct, plain, direct, c),
          "plain-http": rowOf(plain, plain, direct, c),
          ...(mesh ? { mesh: rowOf(mesh.result, plain, direct, c) } : {}),
        },
      ];
    }),
  );
}

function targetsOf(f: RunFacts) {
  const comp = comparisons(f);
  const out: Record<string, { label: string; target: number; actual: number; pass: boolean; text: string }> = {};
  for (const c of CASES) {
    const m = comp[c.id]!.mesh;
    const p50 = m?.p50VsPlain ?? NaN;
    const p99 = m?.p99VsPlain ?? NaN;
    const tput = m?.throughputVsPlain ?? NaN;
    out[`${c.id}.p50`] = { label: `${c.id}: mesh p50 / plain p50`, target: TARGETS.p50VsPlain, actual: p50, pass: p50 <= TARGETS.p50VsPlain, text: `${fmt(p50, 2)}x (target <= ${TARGETS.p50VsPlain}x)` };
    out[`${c.id}.p99`] = { label: `${c.id}: mesh p99 / plain p99`, target: TARGETS.p99VsPlain, actual: p99, pass: p99 <= TARGETS.p99VsPlain, text: `${fmt(p99, 2)}x (target <= ${TARGETS.p99VsPlain}x)` };
    out[`${c.id}.throughput`] = {
      label: `${c.id}: mesh throughput / plain`,
      target: TARGETS.throughputShareOfPlain,
      actual: tput,
      pass: tput >= TARGETS.throughputShareOfPlain,
      text: `${fmt(tput * 100, 1)}% (target >= ${fmt(TARGETS.throughputShareOfPlain * 100, 1)}%)`,
    };
  }
  const lb = comp["large-binary"]!.mesh?.throughputVsPlain ?? NaN;
  out["large-binary.bytes"] = {
    label: "large-binary: mesh tensor bytes/s / plain",
    target: TARGETS.largeBinaryBytesShareOfPlain,
    actual: lb,
    pass: lb >= TARGETS.largeBinaryBytesShareOfPlain,
    text: `${fmt(lb * 100, 1)}% (target >= ${fmt(TARGETS.largeBinaryBytesShareOfPlain * 100, 1)}%)`,
  };
  return out;
}

const mb = (bytesPerSec: number) => fmt(bytesPerSec / 1e6, 1);

function report(f: RunFacts): void {
  const comp = comparisons(f);
  const rows: string[][] = [];
  for (const c of CASES) {
    for (const [variant, r] of Object.entries(comp[c.id]!)) {
      rows.push([
        c.id,
        variant,
        fmt(r.p50Ms, 3),
        fmt(r.p99Ms, 3),
        fmt(r.callsPerSec, 0),
        variant === "plain-http" ? "1x" : fmt(r.p50VsPlain, 2) + "x",
        variant === "plain-http" ? "1x" : fmt(r.p99VsPlain, 2) + "x",
        variant === "plain-http" ? "1x" : fmt(r.throughputVsPlain, 3) + "x",
        c.size === "large" ? mb(r.tensorBytesPerSec) : "-",
        String(r.errors),
      ]);
    }
    if (!f.meshRun) rows.push([c.id, "mesh", "FAILED", "", "", "", "", "", "", ""]);
  }
  const { machine } = f;
  say();
  say(`mesh-overhead${QUICK ? " (--quick)" : ""}: small = demo-mlp x FP32 [1,4]; large = demo-matmul a FP32 [64,1024] x b [1024,1]; ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}`);
  say(`latency: c=1, ${LATENCY.warmup} warm-up + up to ${LATENCY.maxCalls} calls / ${LATENCY.maxMs / 1000} s; throughput: c=${CONCURRENCY}, up to ${THROUGHPUT.maxMs / 1000} s; binary = binary inputs and outputs`);
  say();
  say(formatTable(["case", "variant", "p50 ms", "p99 ms", "calls/s (c=16)", "p50 vs plain", "p99 vs plain", "calls/s vs plain", "tensor MB/s", "errors"], rows));
  say();
  if (f.meshRun) {
    say("mesh Server-Timing per part, p50 ms at c=1 (edge and total are whole ms: workerd's clock only moves across I/O):");
    say(
      formatTable(
        ["case", ...SERVER_TIMING_KEYS, "client", "outside"],
        CASES.map((c) => {
          const t = f.meshRun!.cases[c.id]!.timing.latency;
          return [c.id, ...[...SERVER_TIMING_KEYS, ...CLIENT_KEYS].map((k) => fmt(t[k].p50, 2))];
        }),
      ),
    );
    const regions = Object.entries(f.meshRun.regionsSeen).map(([k, v]) => `${k} x${v}`).join(", ") || "-";
    say(`regions that answered (warm-up included): ${regions}`);
  } else {
    say(`mesh: FAILED: ${f.meshError}`);
  }
  say();
  say("targets (informational):");
  for (const t of Object.values(targetsOf(f))) say(`  ${t.pass ? "PASS" : f.meshRun ? "MISS" : "n/a "}  ${t.label}: ${f.meshRun ? t.text : "mesh failed"}`);
  const all: [string, VariantResult][] = [
    ...Object.entries(f.direct).map(([k, v]) => [`direct ${k}`, v] as [string, VariantResult]),
    ...Object.entries(f.plain).map(([k, v]) => [`plain-http ${k}`, v] as [string, VariantResult]),
    ...Object.entries(f.meshRun?.cases ?? {}).map(([k, v]) => [`mesh ${k}`, v.result] as [string, VariantResult]),
  ];
  const errorSamples = errorSampleLines(all.map(([name, v]) => [name, [v.latency, v.throughput]] as const));
  if (errorSamples.length) {
    say();
    say("error samples:");
    for (const e of errorSamples) say(`  ${e}`);
  }
}

function resultJson(f: RunFacts) {
  const variantJson = (v: VariantResult) => ({ latency: phaseJson(v.latency), throughput: phaseJson(v.throughput) });
  const summaryJson = (s: Record<string, Summary>) =>
    Object.fromEntries(Object.entries(s).map(([k, v]) => [k, rounded(v, ["count", "p50", "p99", "mean"])]));
  const roundAll = (o: object) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "number" && !Number.isInteger(v) ? round(v, 4) : v]));
  return {
    // bench, quick, startedAt, machine: b.saveResults; finishedAt: when measuring ended.
    finishedAt: f.finishedAt.toISOString(),
    cases: CASES.map((c) => ({ id: c.id, model: c.model, binary: c.binary, inputs: c.inputs.map((t) => ({ name: t.name, datatype: "FP32", shape: t.shape })), tensorBytes: c.tensorBytes })),
    config: {
      latency: LATENCY,
      throughput: THROUGHPUT,
      order: ["direct", "plain-http", "mesh"],
      client: "node:http keep-alive agent in the bench process",
      plainHttp: "bench/plain-http-server.ts in its own node process, one per model",
      binary: "binary cases send every input binary and ask binary_data_output: true",
    },
    variants: {
      direct: Object.fromEntries(Object.entries(f.direct).map(([k, v]) => [k, variantJson(v)])),
      "plain-http": Object.fromEntries(Object.entries(f.plain).map(([k, v]) => [k, variantJson(v)])),
      mesh: Object.fromEntries(Object.entries(f.meshRun?.cases ?? {}).map(([k, v]) => [k, variantJson(v.result)])),
    },
    comparison: Object.fromEntries(Object.entries(comparisons(f)).map(([k, rows]) => [k, Object.fromEntries(Object.entries(rows).map(([v, r]) => [v, roundAll(r)]))])),
    mesh: f.meshRun
      ? {
          ok: true,
          startMs: round(f.meshRun.startMs, 0),
          regionsAnswered: f.meshRun.regionsSeen,
          cases: Object.fromEntries(
            Object.entries(f.meshRun.cases).map(([k, v]) => [
              k,
              { coldFirstCallMs: round(v.coldFirstCallMs, 1), serverTimingMs: { latency: summaryJson(v.timing.latency), throughput: summaryJson(v.timing.throughput) } },
            ]),
          ),
        }
      : { ok: false, error: f.meshError },
    targets: Object.fromEntries(
      Object.entries(targetsOf(f)).map(([k, t]) => [k, { description: t.label, target: round(t.target, 4), actual: round(t.actual, 4), pass: t.pass }]),
    ),
  };
}

await runBench("mesh-overhead", main);
