// What the region router itself costs, and what msgpack framing buys over JSON on the
// router <-> node socket. One run, one machine, the demo-mlp model with a [1,4] FP32 input:
//
//   direct          in-process onnxruntime-node session.run (the floor, same session options
//                   as the node agent)
//   router/msgpack  a real router process (regions/main.ts, no Redis) with 2 real node agents
//                   (gpu-node/main.ts, NODE_SLOTS=16, BATCH_MAX=1 so framing is measured, not
//                   batching), msgpack frames on the node sockets (the default)
//   router/json     the same with the nodes started with MESH_FRAMING=json (the router answers
//                   each socket in the framing of the node's first frame)
//
// The bench plays the edge: it sends signed msgpack RegionInferRequests to POST /v1/infer over
// keep-alive HTTP, and the nodes download the model through a signed URL from a tiny artifact
// server here (they check its sha256). Each variant gets a latency phase (concurrency 1) and a
// throughput phase (concurrency 32) with the [1,4] input, then a latency phase with a [1024,4]
// input (16 KiB in, 24 KiB out: a [1,4] call is too small for framing to matter), each bounded
// by time and count. Every answer must be 200 with outputs equal to the direct result. Both
// router set-ups stay up for the whole run and their phases are interleaved (msgpack json, then
// json msgpack, ...) so that drift on a shared machine does not all land on one framing.
//
//   end-to-end       the client's HTTP round trip (request written -> whole answer read); building,
//                    signing and decoding the message are the edge's work and stay outside it
//   node inferMs     what the node reports in the answer's timing (its batcher + onnxruntime)
//   overhead         end-to-end minus node inferMs: client HTTP stack, router (verify, decode,
//                    schedule, encode), both socket hops and the node's own framing
//   router-internal  the router's regionMs (arrival -> result) minus node inferMs
//
// Run: npm run bench:router                       (~1 min)
//      npx tsx bench/router-overhead.ts --quick   (smoke run, small counts)
//
// Prints tables and writes bench/results/router-overhead-<ISO>.json and -latest.json.
// Every process it starts listens on 127.0.0.1 only and is stopped at the end (also on error
// and SIGINT/SIGTERM; children also exit by themselves when this process dies).

import { randomBytes, createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { createCodec, MSGPACK_CONTENT_TYPE } from "../protocol/codec.js";
import { unpackAnswer } from "../formats/binary-tensors.js";
import { parseRegionInferResponse, type ModelRef, type RegionInferRequest } from "../protocol/messages.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import type { RegionReport } from "../protocol/region-report.js";
import { signRequest, signUrl, verifyUrl } from "../protocol/signing.js";
import { freePort } from "../local/free-port.js";
import { keepAliveAgent, post } from "./http-client.js";
import { waitFor } from "../local/mesh.js";
import { makeDemoModels } from "../scripts/make-demo-models.js";
import { errorSampleLines, fmt, formatTable, machineInfo, phaseJson, ratio, round, rounded, runPhase, summarize, type PhaseOptions, type PhaseResult, type Summary } from "./stats.js";
import { err, QUICK, runBench, say, type Bench, type BenchChild } from "./harness.js";

const MODEL = "demo-mlp";
const MODEL_KEY = "bench-demo-mlp@1";
const INPUT = [1, 2, 3, 4];
const SHAPE = [1, 4];
/** A larger call of the same model, where framing has something to chew on: [1024,4] in, 2 x [1024,3] out. */
const BIG_ROWS = 1024;
const BIG_SHAPE = [BIG_ROWS, 4];
const BIG_INPUT = Array.from({ length: BIG_ROWS * 4 }, (_, i) => ((i * 7) % 17) / 4 - 2);
const OUTPUT_NAMES = ["logits", "probs"] as const;
const CONCURRENCY = 32;
const NODES = 2;
const NODE_SLOTS = 16;
const FRAMINGS = ["msgpack", "json"] as const;
type Framing = (typeof FRAMINGS)[number];

const LATENCY: PhaseOptions = QUICK
  ? { warmup: 30, maxCalls: 300, maxMs: 1_500, concurrency: 1 }
  : { warmup: 300, maxCalls: 3_000, maxMs: 6_000, concurrency: 1 };
const THROUGHPUT: PhaseOptions = QUICK
  ? { warmup: 2 * CONCURRENCY, maxCalls: 5_000, maxMs: 1_500, concurrency: CONCURRENCY }
  : { warmup: 4 * CONCURRENCY, maxCalls: 300_000, maxMs: 6_000, concurrency: CONCURRENCY };
const BIG_LATENCY: PhaseOptions = QUICK
  ? { warmup: 10, maxCalls: 100, maxMs: 1_000, concurrency: 1 }
  : { warmup: 50, maxCalls: 1_000, maxMs: 4_000, concurrency: 1 };


// ---------------------------------------------------------------------------------------------
// Cleanup (children, temp folder, Ctrl-C): bench/harness.ts; what only this bench holds is
// handed to it in main().

type Child = BenchChild;

/** This run's harness; loops check `bench.interrupted` to stop early on Ctrl-C. */
let bench: Bench;
let artifactServer: http.Server | null = null;
let directSession: ort.InferenceSession | null = null;

function spawnTsx(name: string, script: string, env: Record<string, string>): Child {
  // No Redis: the router runs without reports or policies.
  return bench.spawnTsx(name, script, [], { REDIS_URL: undefined, REDIS_TOKEN: undefined, ...env });
}

// ---------------------------------------------------------------------------------------------
// The artifact server: what the edge's /internal/artifacts route does, with the same signing.

interface Artifact {
  bytes: Buffer;
  sha256: string;
}

async function startArtifactServer(secret: string, artifact: Artifact): Promise<{ origin: string; downloads: () => number }> {
  let downloads = 0;
  const server = http.createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      const check = await verifyUrl(secret, url);
      if (req.method !== "GET" || !check.ok) {
        res.writeHead(401, { "content-type": "application/json" }).end(JSON.stringify({ error: check.ok ? "GET only" : check.reason }));
        return;
      }
      if (url.pathname !== `/internal/artifacts/${artifact.sha256}`) {
        res.writeHead(404).end();
        return;
      }
      downloads++;
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": String(artifact.bytes.length) }).end(artifact.bytes);
    })();
  });
  artifactServer = server;
  await new Promise<void>((r, j) => server.listen(0, "127.0.0.1", () => r()).once("error", j));
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, downloads: () => downloads };
}

// ---------------------------------------------------------------------------------------------
// Output checking against the direct result

type Expected = Record<(typeof OUTPUT_NAMES)[number], Float32Array>;
type Size = "small" | "big";

function sameFloats(got: unknown, want: Float32Array): boolean {
  if (!(got instanceof Float32Array) || got.length !== want.length) return false;
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Variants

interface Sample {
  e2eMs: number;
  inferMs: number;
  regionMs: number;
  queueMs: number;
  node: string;
}

type PartKey = "e2e" | "infer" | "region" | "overhead" | "routerInternal" | "outsideRouter" | "queue";
const PARTS: { key: PartKey; label: string; of: (s: Sample) => number }[] = [
  { key: "e2e", label: "end-to-end (client HTTP round trip)", of: (s) => s.e2eMs },
  { key: "infer", label: "node inferMs (reported)", of: (s) => s.inferMs },
  { key: "overhead", label: "overhead = end-to-end - inferMs", of: (s) => s.e2eMs - s.inferMs },
  { key: "region", label: "router regionMs (arrival -> result)", of: (s) => s.regionMs },
  { key: "routerInternal", label: "router-internal = regionMs - inferMs", of: (s) => s.regionMs - s.inferMs },
  { key: "outsideRouter", label: "outside router = end-to-end - regionMs", of: (s) => s.e2eMs - s.regionMs },
  { key: "queue", label: "router queueMs", of: (s) => s.queueMs },
];

interface VariantResult {
  latency: PhaseResult;
  throughput: PhaseResult;
  /** c=1 with the [1024,4] input. */
  big: PhaseResult;
}

/** How a router set-up came up (before anything was measured). */
interface SetupFacts {
  framing: Framing;
  replicasWarm: number;
  warmupBursts: number;
  coldFirstCallMs: number;
  startMs: number;
  nodeFramingConfirmed: boolean;
  downloads: number;
}

interface RouterRun extends SetupFacts {
  result: VariantResult;
  parts: { latency: Record<PartKey, Summary>; throughput: Record<PartKey, Summary>; big: Record<PartKey, Summary> };
  nodesAnswered: { latency: Record<string, number>; throughput: Record<string, number> };
}

type Phase = "latency" | "throughput" | "big";

async function measure<T>(name: string, call: (size: Size) => Promise<T>, onSample?: (phase: Phase) => (v: T, ms: number) => void): Promise<VariantResult> {
  err(`[bench] ${name}: latency phase (c=1, ${LATENCY.warmup} warm-up, up to ${LATENCY.maxCalls} calls / ${LATENCY.maxMs / 1000} s)`);
  const latency = await runPhase(() => call("small"), LATENCY, onSample?.("latency"));
  err(`[bench] ${name}: p50 ${fmt(latency.latency.p50, 3)} ms, p99 ${fmt(latency.latency.p99, 3)} ms over ${latency.calls} calls, ${latency.errors} errors`);
  err(`[bench] ${name}: throughput phase (c=${CONCURRENCY}, up to ${THROUGHPUT.maxMs / 1000} s)`);
  const throughput = await runPhase(() => call("small"), THROUGHPUT, onSample?.("throughput"));
  err(`[bench] ${name}: ${fmt(throughput.okPerSec, 0)} calls/s over ${throughput.calls} calls, ${throughput.errors} errors`);
  err(`[bench] ${name}: large-input phase ([${BIG_SHAPE}], c=1, up to ${BIG_LATENCY.maxCalls} calls / ${BIG_LATENCY.maxMs / 1000} s)`);
  const big = await runPhase(() => call("big"), BIG_LATENCY, onSample?.("big"));
  err(`[bench] ${name}: [${BIG_SHAPE}] p50 ${fmt(big.latency.p50, 3)} ms, p99 ${fmt(big.latency.p99, 3)} ms over ${big.calls} calls, ${big.errors} errors`);
  return { latency, throughput, big };
}

interface Secrets {
  meshSecret: string;
  nodeToken: string;
}

interface RouterSetup extends SetupFacts {
  call: (size: Size) => Promise<Sample>;
  stop: () => Promise<void>;
}

/** A router and its nodes up, the model warm on both nodes (as far as the scheduler goes). */
async function setupRouter(framing: Framing, secrets: Secrets, ref: ModelRef, expected: Record<Size, Expected>, downloads: () => number): Promise<RouterSetup> {
  if (bench.interrupted) throw new Error("interrupted");
  const downloadsBefore = downloads();
  const t0 = performance.now();
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const router = spawnTsx(`router-${framing}`, "regions/main.ts", {
    MESH_REGION: "bench",
    HOST: "127.0.0.1",
    PORT: String(port),
    MESH_SECRET: secrets.meshSecret,
    NODE_TOKEN: secrets.nodeToken,
    DRAIN_TIMEOUT_MS: "2000",
  });
  await waitFor("router", 30_000, async () => ((await fetch(base + "/healthz")).ok ? true : undefined), router);
  const status = async (): Promise<RegionReport> => {
    const headers = await signRequest(secrets.meshSecret, "GET", "/v1/status");
    const res = await fetch(base + "/v1/status", { headers });
    if (!res.ok) throw new Error(`status ${res.status}`);
    return (await res.json()) as RegionReport;
  };
  const nodes = Array.from({ length: NODES }, (_, i) =>
    spawnTsx(`node-${framing}-${i + 1}`, "gpu-node/main.ts", {
      NODE_ID: `bench-${framing}-node-${i + 1}`,
      ROUTER_URL: base.replace(/^http/, "ws") + "/v1/nodes",
      NODE_TOKEN: secrets.nodeToken,
      MODEL_CACHE_DIR: join(bench.tmpDir, "cache", `${framing}-${i + 1}`),
      MEMORY_BUDGET_MB: "4096",
      MESH_EXECUTION_PROVIDER: "cpu",
      NODE_SLOTS: String(NODE_SLOTS),
      BATCH_MAX: "1",
      MESH_FRAMING: framing,
      DRAIN_TIMEOUT_MS: "2000",
    }),
  );
  await waitFor(`${NODES} nodes`, 30_000, async () => ((await status()).nodes.length === NODES ? true : undefined), router);
  const startMs = performance.now() - t0;
  // The node prints its configuration at start: check it really speaks this framing.
  const nodeFramingConfirmed = nodes.every((n) => readFileSync(n.log, "utf8").includes(`"framing":"${framing}"`));
  if (!nodeFramingConfirmed) throw new Error(`a node did not start with framing ${framing}; see ${nodes.map((n) => n.log).join(", ")}`);
  err(`[bench] router/${framing}: router + ${NODES} nodes up in ${fmt(startMs / 1000, 1)} s (${base})`);

  const codec = createCodec();
  const url = new URL("/v1/infer", base);
  const agent = keepAliveAgent(bench, CONCURRENCY);
  let seq = 0;
  const call = async (size: Size, via = agent): Promise<Sample> => {
    const request: RegionInferRequest = {
      requestId: `bench-${framing}-${++seq}`,
      model: ref,
      inputs: [
        size === "small"
          ? { name: "x", datatype: "FP32", shape: SHAPE, data: Float32Array.from(INPUT) }
          : { name: "x", datatype: "FP32", shape: BIG_SHAPE, data: Float32Array.from(BIG_INPUT) },
      ],
      deadline: Date.now() + 30_000,
    };
    const body = codec.encode(request);
    const headers = await signRequest(secrets.meshSecret, "POST", "/v1/infer", body);
    const started = performance.now();
    const res = await post(via, url, { ...headers, "content-type": MSGPACK_CONTENT_TYPE, "x-request-id": request.requestId }, body);
    const e2eMs = performance.now() - started;
    const answer = unpackAnswer(parseRegionInferResponse(codec.decode(res.body)));
    if (!answer.ok) throw new Error(`HTTP ${res.status} ${answer.code}: ${answer.message}`);
    if (res.status !== 200) throw new Error(`HTTP ${res.status} with an ok answer`);
    for (const n of OUTPUT_NAMES) {
      const out = answer.outputs.find((o) => o.name === n);
      if (!out || !sameFloats(out.data, expected[size][n])) throw new Error(`output '${n}' differs from direct (${size} input)`);
    }
    return { e2eMs, inferMs: answer.timing.inferMs, regionMs: answer.timing.regionMs, queueMs: answer.timing.queueMs, node: answer.node };
  };

  // The first call loads the model (download through the signed URL, sha256, onnxruntime).
  const c0 = performance.now();
  const cold = await call("small");
  const coldFirstCallMs = performance.now() - c0;
  err(`[bench] router/${framing}: cold first call ${fmt(coldFirstCallMs, 1)} ms (node ${cold.node})`);
  // A second replica: the scheduler adds one when more calls queue than the warm node has slots
  // (its warm policy would want ~10k calls/s for this model), so bursts of 4x its slots of the
  // slower large-input call, on their own connections, bring the model up on the other node too.
  let bursts = 0;
  let replicas = 1;
  const burstAgent = keepAliveAgent(bench, 4 * NODE_SLOTS);
  while (bursts < 5) {
    replicas = (await status()).nodes.filter((n) => n.warm.includes(MODEL_KEY)).length;
    if (replicas >= NODES) break;
    bursts++;
    await Promise.all(Array.from({ length: 4 * NODE_SLOTS }, () => call("big", burstAgent).catch(() => undefined)));
    await new Promise((r) => setTimeout(r, 500));
  }
  burstAgent.destroy();
  replicas = (await status()).nodes.filter((n) => n.warm.includes(MODEL_KEY)).length;
  err(`[bench] router/${framing}: model warm on ${replicas}/${NODES} nodes after ${bursts} warm-up burst(s)`);

  return {
    framing,
    call: (size) => call(size),
    replicasWarm: replicas,
    warmupBursts: bursts,
    coldFirstCallMs,
    startMs,
    nodeFramingConfirmed,
    downloads: downloads() - downloadsBefore,
    stop: async () => {
      agent.destroy();
      await Promise.all(nodes.map((n) => bench.stopChild(n)));
      await bench.stopChild(router);
    },
  };
}

/**
 * The phases of every router set-up, interleaved so that drift on a shared machine (other
 * load, CPU clocks) does not all land on one framing: A B for the first phase, B A for the
 * next, and so on.
 */
async function measureRouters(setups: RouterSetup[]): Promise<{ runs: RouterRun[]; order: string[] }> {
  const samples = new Map(setups.map((r) => [r.framing, { latency: [] as Sample[], throughput: [] as Sample[], big: [] as Sample[] }]));
  const results = new Map(setups.map((r) => [r.framing, {} as Partial<VariantResult>]));
  const phases: [Phase, Size, PhaseOptions, string][] = [
    ["latency", "small", LATENCY, `latency phase (c=1, ${LATENCY.warmup} warm-up, up to ${LATENCY.maxCalls} calls / ${LATENCY.maxMs / 1000} s)`],
    ["throughput", "small", THROUGHPUT, `throughput phase (c=${CONCURRENCY}, up to ${THROUGHPUT.maxMs / 1000} s)`],
    ["big", "big", BIG_LATENCY, `large-input phase ([${BIG_SHAPE}], c=1, up to ${BIG_LATENCY.maxCalls} calls / ${BIG_LATENCY.maxMs / 1000} s)`],
  ];
  const order: string[] = [];
  for (const [i, [phase, size, opts, what]] of phases.entries()) {
    for (const r of i % 2 === 0 ? setups : [...setups].reverse()) {
      if (bench.interrupted) throw new Error("interrupted");
      const name = `router/${r.framing}`;
      order.push(`${phase}:${r.framing}`);
      err(`[bench] ${name}: ${what}`);
      const list = samples.get(r.framing)![phase];
      const res = await runPhase(() => r.call(size), opts, (v) => list.push(v));
      results.get(r.framing)![phase] = res;
      err(
        `[bench] ${name}: ${phase === "throughput" ? `${fmt(res.okPerSec, 0)} calls/s` : `p50 ${fmt(res.latency.p50, 3)} ms, p99 ${fmt(res.latency.p99, 3)} ms`} ` +
          `over ${res.calls} calls, ${res.errors} errors`,
      );
    }
  }
  const partsOf = (list: Sample[]) => Object.fromEntries(PARTS.map((p) => [p.key, summarize(list.map(p.of))])) as Record<PartKey, Summary>;
  const nodesOf = (list: Sample[]) => list.reduce<Record<string, number>>((m, x) => ((m[x.node] = (m[x.node] ?? 0) + 1), m), {});
  const runs = setups.map((r): RouterRun => {
    const smp = samples.get(r.framing)!;
    return {
      framing: r.framing,
      result: results.get(r.framing) as VariantResult,
      parts: { latency: partsOf(smp.latency), throughput: partsOf(smp.throughput), big: partsOf(smp.big) },
      nodesAnswered: { latency: nodesOf(smp.latency), throughput: nodesOf(smp.throughput) },
      replicasWarm: r.replicasWarm,
      warmupBursts: r.warmupBursts,
      coldFirstCallMs: r.coldFirstCallMs,
      startMs: r.startMs,
      nodeFramingConfirmed: r.nodeFramingConfirmed,
      downloads: r.downloads,
    };
  });
  return { runs, order };
}

// ---------------------------------------------------------------------------------------------
// Report

interface Facts {
  startedAt: Date;
  finishedAt: Date;
  machine: ReturnType<typeof machineInfo>;
  loadAvgEnd: number[];
  direct: VariantResult;
  routers: RouterRun[];
  /** The order the router phases ran in (interleaved). */
  order: string[];
}

const errorsOf = (v: VariantResult) =>
  [v.latency, v.throughput, v.big].reduce((n, p) => n + p.errors + p.warmupErrors, 0);

function comparison(f: Facts) {
  const d = f.direct;
  const rows: Record<string, Record<string, number>> = {
    direct: {
      p50Ms: d.latency.latency.p50,
      p99Ms: d.latency.latency.p99,
      p50VsDirect: 1,
      p99VsDirect: 1,
      callsPerSec: d.throughput.okPerSec,
      callsPerSecVsDirect: 1,
      bigP50Ms: d.big.latency.p50,
      bigP50VsDirect: 1,
      errors: errorsOf(d),
    },
  };
  for (const r of f.routers) {
    const l = r.parts.latency;
    rows[`router/${r.framing}`] = {
      // Router latency is the client's HTTP round trip (the e2e part), not runPhase's per-call
      // time, which also counts building and signing the request.
      p50Ms: l.e2e.p50,
      p99Ms: l.e2e.p99,
      p50VsDirect: ratio(l.e2e.p50, d.latency.latency.p50),
      p99VsDirect: ratio(l.e2e.p99, d.latency.latency.p99),
      callsPerSec: r.result.throughput.okPerSec,
      callsPerSecVsDirect: ratio(r.result.throughput.okPerSec, d.throughput.okPerSec),
      overheadP50Ms: l.overhead.p50,
      overheadP99Ms: l.overhead.p99,
      overheadP50VsDirectP50: ratio(l.overhead.p50, d.latency.latency.p50),
      overheadP50AtC32Ms: r.parts.throughput.overhead.p50,
      overheadP99AtC32Ms: r.parts.throughput.overhead.p99,
      routerInternalP50Ms: l.routerInternal.p50,
      routerInternalP99Ms: l.routerInternal.p99,
      bigP50Ms: r.parts.big.e2e.p50,
      bigP50VsDirect: ratio(r.parts.big.e2e.p50, d.big.latency.p50),
      bigOverheadP50Ms: r.parts.big.overhead.p50,
      errors: errorsOf(r.result),
    };
  }
  return rows;
}

function framingRatios(f: Facts) {
  const m = f.routers.find((r) => r.framing === "msgpack");
  const j = f.routers.find((r) => r.framing === "json");
  if (!m || !j) return null;
  return {
    p50: ratio(m.parts.latency.e2e.p50, j.parts.latency.e2e.p50),
    p99: ratio(m.parts.latency.e2e.p99, j.parts.latency.e2e.p99),
    overheadP50: ratio(m.parts.latency.overhead.p50, j.parts.latency.overhead.p50),
    overheadP99: ratio(m.parts.latency.overhead.p99, j.parts.latency.overhead.p99),
    routerInternalP50: ratio(m.parts.latency.routerInternal.p50, j.parts.latency.routerInternal.p50),
    overheadP50AtC32: ratio(m.parts.throughput.overhead.p50, j.parts.throughput.overhead.p50),
    callsPerSec: ratio(m.result.throughput.okPerSec, j.result.throughput.okPerSec),
    bigP50: ratio(m.parts.big.e2e.p50, j.parts.big.e2e.p50),
    bigOverheadP50: ratio(m.parts.big.overhead.p50, j.parts.big.overhead.p50),
  };
}

function report(f: Facts): void {
  const comp = comparison(f);
  const { machine } = f;
  say();
  say(`router-overhead${QUICK ? " (--quick)" : ""}: ${MODEL} [${SHAPE}] FP32, ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}`);
  say(
    `router: regions/main.ts (no Redis); ${NODES} nodes: gpu-node/main.ts, NODE_SLOTS=${NODE_SLOTS}, BATCH_MAX=1, CPU provider; ` +
      `client, router and nodes share this machine's ${machine.cpus} CPUs`,
  );
  say(
    `latency: c=1, ${LATENCY.warmup} warm-up + up to ${LATENCY.maxCalls} calls / ${LATENCY.maxMs / 1000} s; throughput: c=${CONCURRENCY}, up to ${THROUGHPUT.maxMs / 1000} s; ` +
      `large input: [${BIG_SHAPE}], c=1, up to ${BIG_LATENCY.maxCalls} calls / ${BIG_LATENCY.maxMs / 1000} s; ` +
      `router latency = client HTTP round trip of a signed msgpack RegionInferRequest`,
  );
  say(
    `router phases interleaved: ${f.order.join(" ")}; both set-ups up throughout; ` +
      `load average ${f.machine.loadAvg.join("/")} at start, ${f.loadAvgEnd.join("/")} at end (other work on this machine skews results)`,
  );
  say();
  say(
    formatTable(
      ["variant", "p50 ms", "p99 ms", "p50 vs direct", "p99 vs direct", `calls/s (c=${CONCURRENCY})`, "calls/s vs direct", "overhead p50", "overhead p99", "overhead p50 c=32", `[${BIG_SHAPE}] p50`, "vs direct", "errors"],
      Object.entries(comp).map(([name, c]) => [
        name,
        fmt(c.p50Ms, 3),
        fmt(c.p99Ms, 3),
        fmt(c.p50VsDirect, 2) + "x",
        fmt(c.p99VsDirect, 2) + "x",
        fmt(c.callsPerSec, 0),
        fmt(c.callsPerSecVsDirect, 3) + "x",
        name === "direct" ? "-" : fmt(c.overheadP50Ms, 3),
        name === "direct" ? "-" : fmt(c.overheadP99Ms, 3),
        name === "direct" ? "-" : fmt(c.overheadP50AtC32Ms, 3),
        fmt(c.bigP50Ms, 3),
        fmt(c.bigP50VsDirect, 2) + "x",
        String(c.errors),
      ]),
    ),
  );
  say("(overhead = end-to-end minus the node's reported inferMs, per call, ms)");
  say();
  const fr = framingRatios(f);
  if (fr) {
    say(
      `msgpack vs json (msgpack / json): p50 ${fmt(fr.p50, 3)}x, p99 ${fmt(fr.p99, 3)}x, overhead p50 ${fmt(fr.overheadP50, 3)}x ` +
        `(c=32: ${fmt(fr.overheadP50AtC32, 3)}x), router-internal p50 ${fmt(fr.routerInternalP50, 3)}x, calls/s ${fmt(fr.callsPerSec, 3)}x; ` +
        `[${BIG_SHAPE}] input: p50 ${fmt(fr.bigP50, 3)}x, overhead p50 ${fmt(fr.bigOverheadP50, 3)}x`,
    );
    say();
  }
  say("where the time goes, ms (per call; each row its own percentile, so rows do not add up exactly):");
  const headers = [
    "part",
    ...f.routers.flatMap((r) => [`${r.framing} p50 c=1`, `${r.framing} p99 c=1`, `${r.framing} p50 c=32`, `${r.framing} p99 c=32`, `${r.framing} p50 [${BIG_SHAPE}]`]),
  ];
  say(
    formatTable(
      headers,
      PARTS.map((p) => [
        p.label,
        ...f.routers.flatMap((r) => [
          fmt(r.parts.latency[p.key].p50, 3),
          fmt(r.parts.latency[p.key].p99, 3),
          fmt(r.parts.throughput[p.key].p50, 3),
          fmt(r.parts.throughput[p.key].p99, 3),
          fmt(r.parts.big[p.key].p50, 3),
        ]),
      ]),
    ),
  );
  say();
  for (const r of f.routers) {
    const nodes = (m: Record<string, number>) => Object.entries(m).map(([k, v]) => `${k.replace(/^bench-\w+-/, "")} x${v}`).join(", ") || "-";
    say(
      `router/${r.framing}: up in ${fmt(r.startMs / 1000, 1)} s; cold first call ${fmt(r.coldFirstCallMs, 1)} ms (${r.downloads} artifact download(s)); ` +
        `warm on ${r.replicasWarm}/${NODES} nodes; answered c=1: ${nodes(r.nodesAnswered.latency)}; c=32: ${nodes(r.nodesAnswered.throughput)}`,
    );
  }
  const errorSamples = errorSampleLines([["direct", f.direct] as const, ...f.routers.map((r) => [`router/${r.framing}`, r.result] as const)].map(([n, v]) => [n, [v.latency, v.throughput, v.big]] as const));
  if (errorSamples.length) {
    say();
    say("error samples:");
    for (const e of errorSamples) say(`  ${e}`);
  }
}

function resultJson(f: Facts) {
  const partsJson = (s: Record<PartKey, Summary>) =>
    Object.fromEntries(Object.entries(s).map(([k, v]) => [k, rounded(v, ["count", "p50", "p90", "p99", "mean"], 4)]));
  const roundAll = (o: Record<string, number>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, Number.isInteger(v) ? v : round(v, 4)]));
  const fr = framingRatios(f);
  return {
    // bench, quick, startedAt, machine: b.saveResults; finishedAt: when measuring ended.
    finishedAt: f.finishedAt.toISOString(),
    loadAvgEnd: f.loadAvgEnd,
    phaseOrder: f.order,
    model: { name: MODEL, key: MODEL_KEY, input: { name: "x", datatype: "FP32", shape: SHAPE, data: INPUT } },
    config: {
      latency: LATENCY,
      throughput: THROUGHPUT,
      bigInput: { ...BIG_LATENCY, shape: BIG_SHAPE },
      nodes: NODES,
      nodeSlots: NODE_SLOTS,
      batchMax: 1,
      executionProvider: "cpu",
      redis: false,
      client: "node:http keep-alive agent in the bench process; signed msgpack RegionInferRequest to POST /v1/infer",
      definitions: {
        e2e: "client HTTP round trip: request written -> whole answer read (building, signing and decoding outside)",
        overhead: "e2e minus the node's reported inferMs",
        routerInternal: "router regionMs minus node inferMs",
        perCallMs: "runPhase's per-call time, which also counts building/signing the request and decoding the answer",
      },
    },
    direct: { latency: phaseJson(f.direct.latency, "perCallMs"), throughput: phaseJson(f.direct.throughput, "perCallMs"), bigInput: phaseJson(f.direct.big, "perCallMs") },
    routers: Object.fromEntries(
      f.routers.map((r) => [
        r.framing,
        {
          latency: phaseJson(r.result.latency, "perCallMs"),
          throughput: phaseJson(r.result.throughput, "perCallMs"),
          bigInput: phaseJson(r.result.big, "perCallMs"),
          partsMs: { latency: partsJson(r.parts.latency), throughput: partsJson(r.parts.throughput), bigInput: partsJson(r.parts.big) },
          nodesAnswered: r.nodesAnswered,
          replicasWarm: r.replicasWarm,
          warmupBursts: r.warmupBursts,
          coldFirstCallMs: round(r.coldFirstCallMs, 1),
          startMs: round(r.startMs, 0),
          artifactDownloads: r.downloads,
          nodeFramingConfirmed: r.nodeFramingConfirmed,
        },
      ]),
    ),
    comparison: Object.fromEntries(Object.entries(comparison(f)).map(([k, c]) => [k, roundAll(c)])),
    msgpackVsJson: fr ? roundAll(fr) : null,
  };
}

// ---------------------------------------------------------------------------------------------

async function main(b: Bench): Promise<void> {
  bench = b;
  b.defer(async () => {
    if (artifactServer) {
      const s = artifactServer;
      artifactServer = null;
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    await directSession?.release().catch(() => undefined);
    directSession = null;
  });
  const { startedAt, machine } = b;
  const files = await makeDemoModels(join(b.tmpDir, "models"));
  const modelFile = files.find((f) => f.name === MODEL && f.version === "1");
  if (!modelFile) throw new Error(`makeDemoModels wrote no ${MODEL} v1`);
  const bytes = await readFile(modelFile.path);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const info = readOnnxSignature(bytes);

  // --- direct -----------------------------------------------------------------------------------
  directSession = await ort.InferenceSession.create(modelFile.path, { executionProviders: ["cpu"], graphOptimizationLevel: "all" });
  const session = directSession;
  const inputData = Float32Array.from(INPUT);
  const bigData = Float32Array.from(BIG_INPUT);
  const runDirect = (size: Size) =>
    session.run({ x: size === "small" ? new ort.Tensor("float32", inputData, SHAPE) : new ort.Tensor("float32", bigData, BIG_SHAPE) }, [...OUTPUT_NAMES]);
  const expectedOf = async (size: Size) => {
    const r = await runDirect(size);
    return Object.fromEntries(OUTPUT_NAMES.map((n) => [n, r[n]!.data as Float32Array])) as Expected;
  };
  const expected: Record<Size, Expected> = { small: await expectedOf("small"), big: await expectedOf("big") };
  const direct = await measure("direct", async (size) => {
    const r = await runDirect(size);
    for (const n of OUTPUT_NAMES) if (!sameFloats(r[n]?.data, expected[size][n])) throw new Error(`direct output '${n}' changed`);
  });

  // --- routers ----------------------------------------------------------------------------------
  const secrets: Secrets = { meshSecret: randomBytes(24).toString("base64url"), nodeToken: randomBytes(24).toString("base64url") };
  const artifacts = await startArtifactServer(secrets.meshSecret, { bytes, sha256 });
  const ref: ModelRef = {
    key: MODEL_KEY,
    account: "bench",
    name: MODEL,
    version: 1,
    sha256,
    size: bytes.length,
    artifactUrl: await signUrl(secrets.meshSecret, new URL(`/internal/artifacts/${sha256}`, artifacts.origin), "bench", Date.now() + 60 * 60_000),
    signature: { inputs: info.inputs, outputs: info.outputs },
  };
  // Both set-ups stay up for the whole run (an idle router + nodes cost a heartbeat a second),
  // so their phases can be interleaved.
  const setups: RouterSetup[] = [];
  for (const framing of FRAMINGS) setups.push(await setupRouter(framing, secrets, ref, expected, artifacts.downloads));
  const { runs: routers, order } = await measureRouters(setups);
  for (const r of setups) await r.stop();

  const finishedAt = new Date();
  const facts: Facts = { startedAt, finishedAt, machine, loadAvgEnd: machineInfo().loadAvg, direct, routers, order };
  report(facts);
  await b.saveResults(resultJson(facts));
}

await runBench("router-overhead", main);
process.exit();
