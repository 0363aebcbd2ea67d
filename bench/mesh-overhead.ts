// What the mesh costs over running the model yourself. One run, one machine, the demo-mlp
// model with a [1,4] FP32 input, three ways:
//
//   direct      in-process onnxruntime-node session.run (the floor)
//   plain-http  a single-process Node HTTP server around the same model, in its own process
//               (bench/plain-http-server.ts), same OIP JSON in and out
//   mesh        the whole local mesh through the edge: workerd -> region router -> node agent
//
// Each gets a latency phase (sequential calls) and a throughput phase (16 concurrent callers).
// HTTP variants use keep-alive connections; every answer must be 200 with outputs equal to the
// direct result. The mesh's Server-Timing header says where its time goes.
//
// Run: npm run bench            (full: ~2000 sequential calls / ~6 s at c=16 per variant)
//      npx tsx bench/mesh-overhead.ts --quick   (smoke run, small counts)
//
// Prints a table and writes bench/results/mesh-overhead-<timestamp>.json and
// bench/results/mesh-overhead-latest.json. Targets are informational: exit 0 unless it crashed.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import os from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { ROOT, startMesh, type MeshHandle } from "../local/mesh.js";
import { makeDemoModels } from "../scripts/make-demo-models.js";
import {
  fmt,
  fmtSigned,
  formatTable,
  machineInfo,
  ratio,
  round,
  runPhase,
  summarize,
  writeResults,
  type PhaseOptions,
  type PhaseResult,
  type Summary,
} from "./stats.js";

const QUICK = process.argv.includes("--quick");
const MODEL = "demo-mlp";
const INPUT = [1, 2, 3, 4];
const SHAPE = [1, 4];
const OUTPUT_NAMES = ["logits", "probs"] as const;
const CONCURRENCY = 16;

const LATENCY: PhaseOptions = QUICK
  ? { warmup: 20, maxCalls: 200, maxMs: 1_500, concurrency: 1 }
  : { warmup: 200, maxCalls: 2_000, maxMs: 8_000, concurrency: 1 };
const THROUGHPUT: PhaseOptions = QUICK
  ? { warmup: 2 * CONCURRENCY, maxCalls: 3_000, maxMs: 1_000, concurrency: CONCURRENCY }
  : { warmup: 4 * CONCURRENCY, maxCalls: 200_000, maxMs: 6_000, concurrency: CONCURRENCY };

const TARGETS = {
  meshP50OverheadMs: 3,
  meshP99OverheadMs: 10,
  meshThroughputShareOfPlainHttp: 1 / 3,
};

const SERVER_TIMING_KEYS = ["edge", "network", "region", "queue", "load", "infer", "total"] as const;
/** Per-call extras next to Server-Timing: what the client measured, and the part outside the edge's total. */
const CLIENT_KEYS = ["client", "outside"] as const;

const err = (line: string) => process.stderr.write(line + "\n");
const say = (line = "") => process.stdout.write(line + "\n");

// ---------------------------------------------------------------------------------------------
// Cleanup: whatever was started is stopped at the end, on error, and on SIGINT/SIGTERM.

let tmpDir: string | null = null;
let meshStarting: Promise<MeshHandle> | null = null;
let plainChild: ChildProcess | null = null;
let directSession: ort.InferenceSession | null = null;
let keepTmp = false;
const agents: http.Agent[] = [];

let cleanupPromise: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleanupPromise ??= (async () => {
    for (const a of agents) a.destroy();
    await stopPlainServer();
    if (meshStarting) {
      // A mesh still starting is stopped once it is up (a failed start stops itself).
      const mesh = await meshStarting.catch(() => null);
      meshStarting = null;
      if (mesh) {
        err("[bench] stopping the mesh");
        await mesh.stop().catch((e: unknown) => err(`[bench] mesh stop failed: ${String(e)}`));
      }
    }
    await directSession?.release().catch(() => undefined);
    directSession = null;
    if (tmpDir && !keepTmp) await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
    else if (tmpDir) err(`[bench] kept ${tmpDir} (mesh logs under mesh/logs/)`);
  })();
  return cleanupPromise;
}

let signalled = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (signalled) return;
    signalled = true;
    err(`\n[bench] ${sig}: cleaning up...`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// Output checking against the direct result

type Expected = Record<(typeof OUTPUT_NAMES)[number], Float32Array>;

function sameFloat32(got: unknown, want: Float32Array): boolean {
  if (!Array.isArray(got) || got.length !== want.length) return false;
  for (let i = 0; i < want.length; i++) {
    const v = got[i];
    if (typeof v !== "number" || Math.fround(v) !== want[i]) return false;
  }
  return true;
}

interface OipJsonResponse {
  outputs?: { name?: unknown; datatype?: unknown; shape?: unknown; data?: unknown }[];
}

/** Throws unless an OIP JSON answer carries exactly the direct run's outputs. */
function checkOipAnswer(text: string, expected: Expected): void {
  let body: OipJsonResponse;
  try {
    body = JSON.parse(text) as OipJsonResponse;
  } catch {
    throw new Error(`answer is not JSON: ${text.slice(0, 120)}`);
  }
  for (const name of OUTPUT_NAMES) {
    const out = body.outputs?.find((o) => o.name === name);
    if (!out) throw new Error(`answer has no output '${name}'`);
    if (out.datatype !== "FP32") throw new Error(`output '${name}' is ${String(out.datatype)}, not FP32`);
    if (JSON.stringify(out.shape) !== "[1,3]") throw new Error(`output '${name}' has shape ${JSON.stringify(out.shape)}`);
    if (!sameFloat32(out.data, expected[name])) {
      throw new Error(`output '${name}' differs from direct: ${JSON.stringify(out.data)} vs [${Array.from(expected[name])}]`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP client: node:http with a keep-alive agent (lighter than fetch, so the client takes less
// of the 2 CPUs from the servers it measures).

interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

function keepAliveAgent(): http.Agent {
  const a = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY, maxFreeSockets: CONCURRENCY, keepAliveMsecs: 30_000 });
  agents.push(a);
  return a;
}

function post(agent: http.Agent, url: URL, headers: Record<string, string>, body: Buffer): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        headers: { ...headers, "content-type": "application/json", "content-length": String(body.length) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
        res.on("error", reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error("request timed out after 30 s")));
    req.on("error", reject);
    req.end(body);
  });
}

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

function oipBody(): Buffer {
  return Buffer.from(JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: SHAPE, data: INPUT }] }));
}

async function startPlainServer(modelPath: string): Promise<string> {
  const child = spawn(process.execPath, ["--import", "tsx", join(ROOT, "bench/plain-http-server.ts"), modelPath, MODEL], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "inherit"],
  });
  plainChild = child;
  return new Promise((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("plain-http server did not start within 30 s")), 30_000);
    child.once("exit", (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`plain-http server exited (${code ?? sig}) before listening`));
    });
    child.stdout!.on("data", (c: Buffer) => {
      buf += c.toString();
      const m = /LISTENING (\d+)/.exec(buf);
      if (m) {
        clearTimeout(timer);
        resolve(`http://127.0.0.1:${m[1]}`);
      }
    });
  });
}

async function stopPlainServer(): Promise<void> {
  const child = plainChild;
  plainChild = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
  await exited;
  clearTimeout(t);
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = new Date();
  const machine = machineInfo();
  err(`[bench] mesh-overhead${QUICK ? " (--quick)" : ""}: ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}`);
  tmpDir = await mkdtemp(join(os.tmpdir(), "mesh-bench-"));
  const files = await makeDemoModels(join(tmpDir, "models"));
  const modelFile = files.find((f) => f.name === MODEL && f.version === "1");
  if (!modelFile) throw new Error(`makeDemoModels wrote no ${MODEL} v1`);

  // --- direct ---------------------------------------------------------------------------------
  // Same session options as the node agent (gpu-node/onnx-runtime.ts) on a CPU machine.
  directSession = await ort.InferenceSession.create(modelFile.path, { executionProviders: ["cpu"], graphOptimizationLevel: "all" });
  const session = directSession;
  const inputData = Float32Array.from(INPUT);
  const runDirect = async () => session.run({ x: new ort.Tensor("float32", inputData, SHAPE) }, [...OUTPUT_NAMES]);
  const first = await runDirect();
  const expected = Object.fromEntries(OUTPUT_NAMES.map((n) => [n, first[n]!.data as Float32Array])) as Expected;
  err(`[bench] direct result: logits [${Array.from(expected.logits).map((v) => v.toFixed(4))}], probs [${Array.from(expected.probs).map((v) => v.toFixed(4))}]`);
  const direct = await measure("direct", async () => {
    const r = await runDirect();
    for (const n of OUTPUT_NAMES) {
      const d = r[n]?.data as Float32Array | undefined;
      if (!d || d.length !== expected[n].length || d.some((v, i) => v !== expected[n][i])) throw new Error(`direct output '${n}' changed`);
    }
  });

  // --- plain-http -----------------------------------------------------------------------------
  const body = oipBody();
  err("[bench] starting the plain-http server (separate process)");
  const plainBase = await startPlainServer(modelFile.path);
  const plainUrl = new URL(`/v2/models/${MODEL}/infer`, plainBase);
  const plainAgent = keepAliveAgent();
  const plain = await measure("plain-http", async () => {
    const r = await post(plainAgent, plainUrl, {}, body);
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.text.slice(0, 200)}`);
    checkOipAnswer(r.text, expected);
  });
  plainAgent.destroy();
  await stopPlainServer();

  // --- mesh -----------------------------------------------------------------------------------
  // A mesh that fails to start or answer still leaves the other variants reported (exit 1).
  let meshRun: MeshRun | null = null;
  let meshError: string | null = null;
  try {
    meshRun = await measureMesh(body, expected);
  } catch (e) {
    if (signalled) throw new Error("interrupted");
    meshError = e instanceof Error ? e.message : String(e);
    keepTmp = true;
    err(`[bench] mesh failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
  // An interrupted run reports nothing (and leaves mesh-overhead-latest.json alone).
  if (signalled) throw new Error("interrupted");
  const finishedAt = new Date();
  report({ startedAt, finishedAt, machine, direct, plain, meshRun, meshError });
  const written = await writeResults("mesh-overhead", resultJson({ startedAt, finishedAt, machine, direct, plain, meshRun, meshError }), undefined, startedAt);
  say();
  say(`results: ${written.file}`);
  say(`         ${written.latest}`);
  if (meshError) throw new Error(`mesh variant failed: ${meshError}`);
}

type TimingKey = (typeof SERVER_TIMING_KEYS)[number] | (typeof CLIENT_KEYS)[number];

interface MeshRun {
  result: VariantResult;
  startMs: number;
  coldFirstCallMs: number;
  coldTiming: Record<string, number>;
  regionsSeen: Record<string, number>;
  timing: { latency: Record<TimingKey, Summary>; throughput: Record<TimingKey, Summary> };
}

async function measureMesh(body: Buffer, expected: Expected): Promise<MeshRun> {
  if (signalled) throw new Error("interrupted");
  err("[bench] starting the mesh (not timed)");
  const meshStart = performance.now();
  meshStarting = startMesh({ stateDir: join(tmpDir!, "mesh"), progress: err });
  const mesh = await meshStarting;
  const startMs = performance.now() - meshStart;
  const meshUrl = new URL(`/v2/models/${MODEL}/infer`, mesh.edge);
  const meshHeaders = { authorization: `Bearer ${mesh.apiKey}` };
  const meshAgent = keepAliveAgent();
  const regionsSeen: Record<string, number> = {};
  const samples = { latency: [] as Record<string, number>[], throughput: [] as Record<string, number>[] };
  const meshCall = async () => {
    const r = await post(meshAgent, meshUrl, meshHeaders, body);
    if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.text.slice(0, 200)}`);
    checkOipAnswer(r.text, expected);
    const region = String(r.headers["x-mesh-region"] ?? "?");
    regionsSeen[region] = (regionsSeen[region] ?? 0) + 1;
    return parseServerTiming(r.headers["server-timing"]);
  };
  // The first call loads the model on a node; time it, then warm every path (phase warm-up).
  const cold0 = performance.now();
  const coldTiming = await meshCall();
  const coldFirstCallMs = performance.now() - cold0;
  err(`[bench] mesh: first (cold) call ${fmt(coldFirstCallMs, 1)} ms, Server-Timing ${JSON.stringify(coldTiming)}`);
  for (const k of Object.keys(regionsSeen)) delete regionsSeen[k];
  const result = await measure("mesh", meshCall, (phase) => (v, ms) => {
    const t = v as Record<string, number>;
    t.client = ms;
    // Time outside the edge's own total: client, wrangler's dev proxy, sockets.
    if (t.total !== undefined) t.outside = ms - t.total;
    samples[phase].push(t);
  });
  meshAgent.destroy();
  const summarizeTimings = (phase: "latency" | "throughput") =>
    Object.fromEntries(
      [...SERVER_TIMING_KEYS, ...CLIENT_KEYS].map((k) => [k, summarize(samples[phase].map((t) => t[k]).filter((x): x is number => x !== undefined && Number.isFinite(x)))]),
    ) as Record<TimingKey, Summary>;
  return {
    result,
    startMs,
    coldFirstCallMs,
    coldTiming,
    regionsSeen,
    timing: { latency: summarizeTimings("latency"), throughput: summarizeTimings("throughput") },
  };
}

// ---------------------------------------------------------------------------------------------
// Report

interface RunFacts {
  startedAt: Date;
  finishedAt: Date;
  machine: ReturnType<typeof machineInfo>;
  direct: VariantResult;
  plain: VariantResult;
  meshRun: MeshRun | null;
  meshError: string | null;
}

function variantsOf(f: RunFacts): [string, VariantResult][] {
  return [["direct", f.direct], ["plain-http", f.plain], ...(f.meshRun ? [["mesh", f.meshRun.result] as [string, VariantResult]] : [])];
}

function comparisons(f: RunFacts) {
  const d = f.direct.latency.latency;
  const dTput = f.direct.throughput.okPerSec;
  return Object.fromEntries(
    variantsOf(f).map(([name, v]) => {
      const l = v.latency.latency;
      return [
        name,
        {
          p50Ms: l.p50,
          p99Ms: l.p99,
          p50Ratio: ratio(l.p50, d.p50),
          p99Ratio: ratio(l.p99, d.p99),
          p50OverheadMs: l.p50 - d.p50,
          p99OverheadMs: l.p99 - d.p99,
          callsPerSec: v.throughput.okPerSec,
          throughputRatio: ratio(v.throughput.okPerSec, dTput),
          errors: v.latency.errors + v.throughput.errors,
          warmupErrors: v.latency.warmupErrors + v.throughput.warmupErrors,
        },
      ];
    }),
  );
}

function targetsOf(f: RunFacts) {
  const c = comparisons(f).mesh;
  const share = f.meshRun ? ratio(f.meshRun.result.throughput.okPerSec, f.plain.throughput.okPerSec) : NaN;
  const p50 = c?.p50OverheadMs ?? NaN;
  const p99 = c?.p99OverheadMs ?? NaN;
  return {
    meshP50OverheadMs: { label: "mesh p50 overhead over direct", target: TARGETS.meshP50OverheadMs, actual: p50, pass: p50 < TARGETS.meshP50OverheadMs, text: `${fmt(p50, 3)} ms (target < ${TARGETS.meshP50OverheadMs} ms)` },
    meshP99OverheadMs: { label: "mesh p99 overhead over direct", target: TARGETS.meshP99OverheadMs, actual: p99, pass: p99 < TARGETS.meshP99OverheadMs, text: `${fmt(p99, 3)} ms (target < ${TARGETS.meshP99OverheadMs} ms)` },
    meshThroughputShareOfPlainHttp: {
      label: "mesh throughput share of plain-http",
      target: TARGETS.meshThroughputShareOfPlainHttp,
      actual: share,
      pass: share >= TARGETS.meshThroughputShareOfPlainHttp,
      text: `${fmt(share * 100, 1)}% (target >= ${fmt(TARGETS.meshThroughputShareOfPlainHttp * 100, 1)}%)`,
    },
  };
}

function report(f: RunFacts): void {
  const comp = comparisons(f);
  const rows = Object.entries(comp).map(([name, c]) => [
    name,
    fmt(c.p50Ms, 3),
    fmt(c.p99Ms, 3),
    fmt(c.p50Ratio, 1) + "x",
    fmt(c.p99Ratio, 1) + "x",
    name === "direct" ? "-" : fmtSigned(c.p50OverheadMs, 3),
    name === "direct" ? "-" : fmtSigned(c.p99OverheadMs, 3),
    fmt(c.callsPerSec, 0),
    fmt(c.throughputRatio, 3) + "x",
    String(c.errors + c.warmupErrors),
  ]);
  if (!f.meshRun) rows.push(["mesh", "FAILED", "", "", "", "", "", "", "", ""]);
  const { machine } = f;
  say();
  say(`mesh-overhead${QUICK ? " (--quick)" : ""}: ${MODEL}, input x FP32 [${SHAPE}], ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}`);
  say(`latency: c=1, ${LATENCY.warmup} warm-up + up to ${LATENCY.maxCalls} calls / ${LATENCY.maxMs / 1000} s; throughput: c=${CONCURRENCY}, up to ${THROUGHPUT.maxMs / 1000} s`);
  say();
  say(formatTable(["variant", "p50 ms", "p99 ms", "p50 vs direct", "p99 vs direct", "+p50 ms", "+p99 ms", "calls/s (c=16)", "calls/s vs direct", "errors"], rows));
  say();
  const targets = targetsOf(f);
  if (f.meshRun) {
    const m = comp.mesh!;
    say(`mesh overhead over direct: p50 ${fmtSigned(m.p50OverheadMs, 3)} ms, p99 ${fmtSigned(m.p99OverheadMs, 3)} ms`);
    say(`mesh throughput = ${fmt(targets.meshThroughputShareOfPlainHttp.actual * 100, 1)}% of plain-http (${fmt(m.callsPerSec, 0)} vs ${fmt(f.plain.throughput.okPerSec, 0)} calls/s)`);
    say();
    const { latency: tl, throughput: tt } = f.meshRun.timing;
    say("mesh Server-Timing per part, ms (edge and total are whole ms: workerd's clock only moves across I/O);");
    say("'outside edge total' = client-measured minus total, per call (client, wrangler's dev proxy, sockets):");
    say(
      formatTable(
        ["part", "p50 c=1", "p99 c=1", "p50 c=16", "p99 c=16"],
        [...SERVER_TIMING_KEYS, ...CLIENT_KEYS].map((k) => [
          k === "client" ? "client-measured" : k === "outside" ? "outside edge total" : k,
          fmt(tl[k].p50, 2),
          fmt(tl[k].p99, 2),
          fmt(tt[k].p50, 2),
          fmt(tt[k].p99, 2),
        ]),
      ),
    );
    const regions = Object.entries(f.meshRun.regionsSeen).map(([k, v]) => `${k} x${v}`).join(", ") || "-";
    say(`regions that answered (warm-up included): ${regions}; cold first call ${fmt(f.meshRun.coldFirstCallMs, 1)} ms`);
  } else {
    say(`mesh: FAILED: ${f.meshError}`);
  }
  say();
  say("targets (informational):");
  for (const t of Object.values(targets)) say(`  ${t.pass ? "PASS" : f.meshRun ? "MISS" : "n/a "}  ${t.label}: ${f.meshRun ? t.text : "mesh failed"}`);
  const errorSamples = variantsOf(f).flatMap(([name, v]) => [...v.latency.errorSamples, ...v.throughput.errorSamples].map((e) => `${name}: ${e}`));
  if (errorSamples.length) {
    say();
    say("error samples:");
    for (const e of errorSamples.slice(0, 10)) say(`  ${e}`);
  }
}

function resultJson(f: RunFacts) {
  const phaseJson = (p: PhaseResult) => ({
    calls: p.calls,
    errors: p.errors,
    warmupErrors: p.warmupErrors,
    errorSamples: p.errorSamples,
    elapsedMs: round(p.elapsedMs, 1),
    callsPerSec: round(p.callsPerSec, 1),
    okPerSec: round(p.okPerSec, 1),
    latencyMs: Object.fromEntries(Object.entries(p.latency).map(([k, v]) => [k, k === "count" ? v : round(v, 4)])),
  });
  const summaryJson = (s: Record<string, Summary>) =>
    Object.fromEntries(Object.entries(s).map(([k, v]) => [k, { count: v.count, p50: round(v.p50, 3), p99: round(v.p99, 3), mean: round(v.mean, 3) }]));
  const roundAll = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number.isInteger(v) ? v : round(v, 4)]));
  const targets = targetsOf(f);
  return {
    bench: "mesh-overhead",
    quick: QUICK,
    startedAt: f.startedAt.toISOString(),
    finishedAt: f.finishedAt.toISOString(),
    machine: f.machine,
    model: { name: MODEL, version: 1, input: { name: "x", datatype: "FP32", shape: SHAPE, data: INPUT } },
    config: {
      latency: LATENCY,
      throughput: THROUGHPUT,
      order: ["direct", "plain-http", "mesh"],
      client: "node:http keep-alive agent in the bench process",
      plainHttp: "bench/plain-http-server.ts in its own node process",
    },
    variants: Object.fromEntries(variantsOf(f).map(([k, v]) => [k, { latency: phaseJson(v.latency), throughput: phaseJson(v.throughput) }])),
    comparison: Object.fromEntries(Object.entries(comparisons(f)).map(([k, c]) => [k, roundAll(c)])),
    mesh: f.meshRun
      ? {
          ok: true,
          startMs: round(f.meshRun.startMs, 0),
          coldFirstCallMs: round(f.meshRun.coldFirstCallMs, 1),
          coldFirstCallServerTiming: f.meshRun.coldTiming,
          regionsAnswered: f.meshRun.regionsSeen,
          throughputShareOfPlainHttp: round(targets.meshThroughputShareOfPlainHttp.actual, 4),
          serverTimingMs: { latency: summaryJson(f.meshRun.timing.latency), throughput: summaryJson(f.meshRun.timing.throughput) },
        }
      : { ok: false, error: f.meshError },
    targets: Object.fromEntries(
      Object.entries(targets).map(([k, t]) => [k, { description: t.label, target: round(t.target, 4), actual: round(t.actual, 4), pass: t.pass }]),
    ),
  };
}

let exitCode = 0;
try {
  await main();
} catch (e) {
  exitCode = 1;
  if (!signalled) keepTmp = true;
  if (!signalled) err(`[bench] failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
} finally {
  await cleanup();
}
process.exit(signalled ? 130 : exitCode);
