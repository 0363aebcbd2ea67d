// What one small call costs the GPU node side in CPU: a real node agent (gpu-node/main.ts) with
// demo-mlp (or, --large, demo-matmul) loaded in its session child, driven by a minimal router stand-in over the real node
// socket (hello, welcome, load, infer frames in msgpack, as regions/node-link.ts sends them), and
// the agent's and the child's CPU read from /proc around each phase (every thread's schedstat;
// stat's ticks for the kernel's share), with no profiler in the measured processes. Baseline in
// the same rounds: onnxruntime's run of the same model in this process with the same intra-op
// threads, so each figure is also a ratio against the model's own cost. What the idle node spends
// meanwhile (heartbeats, its memory watch) is measured in an idle window each round and taken off.
// CPU per call grows several-fold when the machine is loaded (caches, wake-ups): compare only
// figures of one run.
//
//   npx tsx bench/node-call-cost.ts [--calls 3000] [--rounds 3] [--compare DIR] [--profile] [--large]
//
// --large: demo-matmul with a [64,1024] and b [1024,1] FP32 inputs (260 KiB a call, the large
//   tensor of bench/mesh-overhead.ts) instead of demo-mlp's [1,4]: the node's per-byte costs.
//
// --compare DIR: a second agent from another checkout (e.g. `git archive <base> | tar -x -C DIR`
//   with node_modules linked), measured in the same run, rounds interleaved (A, B, A, B...), so
//   "after" and "before" share the machine's noise; its rows carry a ratio against this one.
// --profile: also records V8 CPU profiles of the agents and children (bench/cpu-profile.mjs,
//   preloaded) and prints each process's hottest functions by self time per call; the /proc
//   figures of a profiled run include the sampler's own cost.
//
// Writes bench/results/node-call-cost-<ISO>.json and node-call-cost-latest.json.

import { existsSync, mkdirSync, readdirSync, readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import * as ort from "onnxruntime-node";
import type WebSocket from "ws";
import { parseNodeMessage, unbatch, type NodeToRouter, type RouterToNode } from "../protocol/messages.js";
import { localWire } from "../protocol/wire-version.js";
import { sha256Hex } from "../protocol/signing.js";
import { DEMO_MATMUL_NAME, makeDemoMatmul, makeDemoModels } from "../scripts/make-demo-models.js";
import { toOrt } from "../gpu-node/ort-tensors.js";
import type { WireTensor } from "../formats/tensor.js";
import { packTensor } from "../formats/binary-tensors.js";
import { ROOT } from "../local/mesh.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { serveArtifacts, standInRouter } from "./stand-in-router.js";
import { selfTimes, monotonicMicros, type CpuProfile } from "./process-profile.js";
import { fmt, printTable, ratio, round, summarize, type Summary } from "./stats.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const strArg = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const CALLS = arg("calls", QUICK ? 300 : 3000);
const ROUNDS = arg("rounds", QUICK ? 1 : 3);
const CONCURRENCY = 16;
/** onnxruntime intra-op threads per session child, and the baseline's. */
const THREADS = arg("threads", 1);
const COMPARE = strArg("compare");
const PROFILE = process.argv.includes("--profile");
const TICK_MS = 1000 / 100; // USER_HZ: /proc/<pid>/stat counts CPU in 1/100 s
const TOKEN = "bench-node-call-cost-token";
const LARGE = process.argv.includes("--large");
const pseudo = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => (((i * 7919 + seed) % 17) - 8) / 8);
/** The model called, its inputs, and its signature as a router's load frame gives it. */
const MODEL = LARGE
  ? {
      key: `${DEMO_MATMUL_NAME}@1`,
      label: "demo-matmul a [64,1024] x b [1024,1] FP32",
      inputs: [
        { name: "a", datatype: "FP32" as const, shape: [64, 1024], data: pseudo(64 * 1024, 1) },
        { name: "b", datatype: "FP32" as const, shape: [1024, 1], data: pseudo(1024, 2) },
      ] satisfies WireTensor[],
      signature: { inputs: [{ name: "a", datatype: "FP32" as const, shape: [-1, -1] }, { name: "b", datatype: "FP32" as const, shape: [-1, -1] }], outputs: [{ name: "y", datatype: "FP32" as const, shape: [-1, -1] }] },
    }
  : {
      key: "demo-mlp@1",
      label: "demo-mlp [1,4] FP32",
      inputs: [{ name: "x", datatype: "FP32" as const, shape: [1, 4], data: Float32Array.from([1, 2, 3, 4]) }] satisfies WireTensor[],
      signature: { inputs: [{ name: "x", datatype: "FP32" as const, shape: [-1, 4] }], outputs: [{ name: "logits", datatype: "FP32" as const, shape: [-1, 3] }, { name: "probs", datatype: "FP32" as const, shape: [-1, 3] }] },
    };
// A router's span, as regions/node-link.ts forwards one (the node opens its own under it).
const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/** CPU ms a process (all its threads) has used, from /proc/<pid>/stat (1/100 s ticks): user, system. */
function cpuOf(pid: number): { user: number; sys: number } {
  const s = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
  return { user: Number(f[11]) * TICK_MS, sys: Number(f[12]) * TICK_MS };
}

/**
 * CPU ms a process (all its threads) has used, from each thread's /proc/<pid>/task/<tid>/schedstat
 * (nanoseconds on a CPU): the same time as /proc/<pid>/stat's user + system, without its 10 ms
 * ticks, which the short idle windows and the per-call figures need.
 */
function cpuMs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      /* a thread that ended meanwhile */
    }
  }
  return ns / 1e6;
}

/** A process's direct children (the agent's session children). */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** One node agent on the stand-in router's socket. */
interface Agent {
  label: string;
  proc: ChildProcess;
  socket: WebSocket;
  send(m: RouterToNode): void;
  calls: Map<string, () => void>;
  childPids: number[];
}

interface Phase {
  calls: number;
  agentMs: number;
  /** Of agentMs, the kernel's share (syscalls: the sockets, the IPC pipe, /proc reads), from the ticks. */
  agentSysShare: number;
  childMs: number;
  wallMs: number;
  latency: number[];
}

async function main(b: import("./harness.js").Bench): Promise<void> {
  const mlp = LARGE ? await makeDemoMatmul(join(b.tmpDir, "models")) : (await makeDemoModels(join(b.tmpDir, "models"))).find((f) => f.name === "demo-mlp" && f.version === "1")!;
  const bytes = await readFile(mlp.path);
  const sha = await sha256Hex(bytes);

  // The artifact, as an edge's signed URL would serve it; the router stand-in welcomes each
  // node, loads the model on it, sends calls and reads answers.
  const artifactUrl = (await serveArtifacts(b, { "model.onnx": bytes }))("model.onnx");
  const router = await standInRouter(b, TOKEN);
  const { codec } = router;
  const routerUrl = router.url;

  const profDir = join(b.tmpDir, "profiles");
  if (PROFILE) mkdirSync(profDir, { recursive: true });

  const startAgent = async (label: string, root: string): Promise<Agent> => {
    const nodeId = `bench-${label}`;
    const connected = router.node(nodeId);
    const env: Record<string, string> = {
      ROUTER_URL: routerUrl,
      NODE_TOKEN: TOKEN,
      NODE_ID: nodeId,
      MODEL_CACHE_DIR: join(b.tmpDir, `cache-${label}`),
      MEMORY_BUDGET_MB: "4096",
      MESH_EXECUTION_PROVIDER: "cpu",
      NODE_THREADS_PER_WORKER: String(THREADS),
      MESH_PARENT_PID: String(process.pid),
      ...(PROFILE ? { NODE_OPTIONS: `--import ${join(ROOT, "bench/cpu-profile.mjs")}`, BENCH_CPU_PROF_DIR: profDir, BENCH_CPU_PROF_NAME: label } : {}),
    };
    mkdirSync(join(b.tmpDir, "logs"), { recursive: true });
    // Another checkout's agent runs from its own root; this one's through the harness.
    const proc =
      root === ROOT
        ? b.spawnTsx(`agent-${label}`, "gpu-node/main.ts", [], env).child
        : spawn(process.execPath, ["--import", "tsx", join(root, "gpu-node/main.ts")], { cwd: root, env: { ...process.env, ...env }, stdio: "ignore" });
    if (root !== ROOT) b.defer(() => proc.kill("SIGTERM"));
    const { socket } = await connected;
    const calls = new Map<string, () => void>();
    let loadedResolve!: () => void;
    let loadFailed!: (e: Error) => void;
    const loaded = new Promise<void>((res, rej) => ((loadedResolve = res), (loadFailed = rej)));
    socket.on("message", (data) => {
      for (const m of unbatch(codec.decode(data as Buffer), parseNodeMessage) as NodeToRouter[]) {
        if (m.t === "loaded") loadedResolve();
        else if (m.t === "load_failed") loadFailed(new Error(m.message));
        else if (m.t === "result") calls.get(m.id)?.();
        else if (m.t === "error") throw new Error(`call ${m.id} failed on ${label}: ${m.code} ${m.message}`);
      }
    });
    const send = (m: RouterToNode) => socket.send(codec.encode(m), { binary: true });
    send({ t: "welcome", region: "bench", wire: localWire() });
    send({
      t: "load",
      key: MODEL.key,
      url: artifactUrl,
      sha256: sha,
      size: bytes.length,
      signature: MODEL.signature,
    });
    await loaded;
    const childPids = childrenOf(proc.pid!);
    if (childPids.length !== 1) throw new Error(`expected one session child of agent ${label}, found ${childPids.length}`);
    err(`[bench] agent ${label}: pid ${proc.pid}, session child pid ${childPids[0]}`); // for perf record -p
    return { label, proc, socket, send, calls, childPids };
  };

  let nextId = 0;
  const packed = MODEL.inputs.map(packTensor);
  const call = (a: Agent): Promise<void> =>
    new Promise<void>((resolve) => {
      const id = String(++nextId);
      a.calls.set(id, () => {
        a.calls.delete(id);
        resolve();
      });
      a.send({ t: "infer", id, key: MODEL.key, sha256: sha, inputs: packed, deadline: Date.now() + 30_000, requestId: `req-${id}`, traceparent: TRACEPARENT });
    });

  const measure = async (a: Agent, n: number, concurrency: number): Promise<Phase> => {
    const latency: number[] = [];
    let left = n;
    const a0 = cpuMs(a.proc.pid!);
    const k0 = cpuOf(a.proc.pid!);
    const c0 = a.childPids.reduce((s, p) => s + cpuMs(p), 0);
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (left > 0) {
          left--;
          const t = performance.now();
          await call(a);
          latency.push(performance.now() - t);
        }
      }),
    );
    const wallMs = performance.now() - t0;
    const k1 = cpuOf(a.proc.pid!);
    const ticks = k1.user + k1.sys - k0.user - k0.sys;
    return { calls: n, agentMs: cpuMs(a.proc.pid!) - a0, agentSysShare: ticks > 0 ? (k1.sys - k0.sys) / ticks : NaN, childMs: a.childPids.reduce((s, p) => s + cpuMs(p), 0) - c0, wallMs, latency };
  };

  /** CPU ms the idle agent and child spend in `ms` (heartbeats, the memory watch), added to `into`. */
  const idleFor = async (a: Agent, ms: number, into: { agent: number; child: number; ms: number }) => {
    const a0 = cpuMs(a.proc.pid!);
    const c0 = a.childPids.reduce((s, p) => s + cpuMs(p), 0);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, ms));
    into.agent += cpuMs(a.proc.pid!) - a0;
    into.child += a.childPids.reduce((s, p) => s + cpuMs(p), 0) - c0;
    into.ms += performance.now() - t0;
  };

  const agents: Agent[] = [await startAgent("this", ROOT)];
  if (COMPARE) {
    const root = resolve(COMPARE);
    if (!existsSync(join(root, "gpu-node/main.ts"))) throw new Error(`--compare ${root}: no gpu-node/main.ts there`);
    agents.push(await startAgent("base", root));
  }

  // Warm-up: JIT, the tsx loader's first compiles, the session's first runs.
  for (const a of agents) {
    await measure(a, Math.min(500, CALLS), 1);
    await measure(a, Math.min(500, CALLS), CONCURRENCY);
  }
  // Idle windows in every round too: their rate (CPU ms per ms) is what is taken off.
  const idleSum = new Map(agents.map((a) => [a.label, { agent: 0, child: 0, ms: 0 }]));

  // The baseline: the same model run in this process, same threads, in the same rounds.
  const session = await ort.InferenceSession.create(mlp.path, { intraOpNumThreads: THREADS, interOpNumThreads: 1, graphOptimizationLevel: "all" });
  b.defer(() => session.release());
  const feeds = () => Object.fromEntries(MODEL.inputs.map((t) => [t.name, toOrt(t)]));
  for (let i = 0; i < 500; i++) await session.run(feeds());
  const ortRuns: number[] = [];

  // Rounds interleave the agents and the baseline, so all see the machine's same moments.
  const results = new Map<string, { seq: Phase[]; conc: Phase[] }>(agents.map((a) => [a.label, { seq: [], conc: [] }]));
  const profWindows: [number, number][] = [];
  for (let r = 0; r < ROUNDS && !b.interrupted; r++) {
    for (const a of agents) {
      const from = monotonicMicros();
      results.get(a.label)!.seq.push(await measure(a, CALLS, 1));
      results.get(a.label)!.conc.push(await measure(a, CALLS, CONCURRENCY));
      if (r === 0 && a === agents[0]) profWindows.push([from, monotonicMicros()]);
      await idleFor(a, QUICK ? 500 : 1000, idleSum.get(a.label)!);
    }
    const u0 = process.cpuUsage();
    for (let i = 0; i < CALLS; i++) await session.run(feeds());
    const u = process.cpuUsage(u0);
    ortRuns.push((u.user + u.system) / 1000 / CALLS);
    err(`[bench] round ${r + 1}/${ROUNDS} done`);
  }
  const ortMs = summarize(ortRuns).p50;
  const idle = new Map([...idleSum].map(([k, v]) => [k, { agent: v.agent / v.ms, child: v.child / v.ms }]));

  // ---------------------------------------------------------------- report
  type Row = { agent: string; mode: string; agentMsPerCall: number; agentSysShare: number; childMsPerCall: number; nodeMsPerCall: number; wallP50: number; callsPerS: number };
  const rows: Row[] = [];
  for (const a of agents) {
    const res = results.get(a.label)!;
    const rate = idle.get(a.label)!;
    for (const [mode, phases] of [["c=1", res.seq], [`c=${CONCURRENCY}`, res.conc]] as const) {
      // Per call, the median of the rounds, less the idle node's CPU over the phase.
      const per = (f: (p: Phase) => number) => summarize(phases.map(f)).p50;
      const agentMs = per((p) => (p.agentMs - rate.agent * p.wallMs) / p.calls);
      const childMs = per((p) => (p.childMs - rate.child * p.wallMs) / p.calls);
      const lat: Summary = summarize(phases.flatMap((p) => p.latency));
      rows.push({ agent: a.label, mode, agentMsPerCall: agentMs, agentSysShare: per((p) => p.agentSysShare), childMsPerCall: childMs, nodeMsPerCall: agentMs + childMs, wallP50: lat.p50, callsPerS: per((p) => (p.calls / p.wallMs) * 1000) });
    }
  }
  const base = (r: Row) => rows.find((x) => x.agent === "this" && x.mode === r.mode)!;
  say(`\nnode-call-cost: ${MODEL.label}, ${CALLS} calls x ${ROUNDS} rounds per mode, ${THREADS} intra-op thread(s), ${b.machine.cpus} CPUs${PROFILE ? " (PROFILED: figures include the sampler)" : ""}`);
  say(`baseline: onnxruntime in-process run ${fmt(ortMs, 4)} CPU ms/call; idle node ${agents.map((a) => `${a.label} agent ${fmt(idle.get(a.label)!.agent * 1000, 1)} + child ${fmt(idle.get(a.label)!.child * 1000, 1)} CPU ms/s`).join(", ")} (taken off)\n`);
  printTable(
    ["agent", "mode", "agent CPU ms/call", "of it kernel", "child CPU ms/call", "node total", "x ort run", "wall p50 ms", "calls/s", ...(COMPARE ? ["total vs this"] : [])],
    rows.map((r) => [
      r.agent,
      r.mode,
      fmt(r.agentMsPerCall, 3),
      `${fmt(r.agentSysShare * 100, 0)}%`,
      fmt(r.childMsPerCall, 3),
      fmt(r.nodeMsPerCall, 3),
      fmt(ratio(r.nodeMsPerCall, ortMs), 1),
      fmt(r.wallP50, 3),
      fmt(r.callsPerS, 0),
      ...(COMPARE ? [fmt(ratio(r.nodeMsPerCall, base(r).nodeMsPerCall))] : []),
    ]),
    ["left", "left", "right", "right", "right", "right", "right", "right", "right", "right"],
  );

  let hot: Record<string, { busyMsPerCall: number; top: { fn: string; msPerCall: number; share: number }[] }> = {};
  if (PROFILE) {
    const a = agents[0]!;
    for (const pid of [a.proc.pid!, ...a.childPids]) process.kill(pid, "SIGUSR2");
    const want = 1 + a.childPids.length;
    const until = Date.now() + 10_000;
    const files = () => readdirSync(profDir).filter((f) => f.startsWith(`${a.label}-`));
    while (files().length < want && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const callsInWindow = 2 * CALLS;
    const [from, to] = profWindows[0]!;
    for (const f of files()) {
      const pid = Number(/-(\d+)\.cpuprofile$/.exec(f)?.[1]);
      const part = pid === a.proc.pid ? "agent" : "child";
      const prof = JSON.parse(await readFile(join(profDir, f), "utf8")) as CpuProfile;
      const s = selfTimes([prof], from, to, 15);
      hot[part] = { busyMsPerCall: s.busyMs / callsInWindow, top: s.top.map((t) => ({ fn: t.fn, msPerCall: t.ms / callsInWindow, share: t.share })) };
      say(`\n${part} (profiled busy ${fmt(s.busyMs / callsInWindow, 3)} ms/call, round 1, both modes):`);
      for (const t of s.top) say(`  ${fmt(t.share * 100, 1).padStart(5)}%  ${fmt((t.ms / callsInWindow) * 1000, 1).padStart(6)} µs/call  ${t.fn}`);
    }
  }

  await b.saveResults({
    model: `${MODEL.key} ${MODEL.label}`,
    calls: CALLS,
    rounds: ROUNDS,
    concurrency: CONCURRENCY,
    threads: THREADS,
    profiled: PROFILE,
    compare: COMPARE ?? null,
    baseline: { ortRunCpuMsPerCall: round(ortMs, 4) },
    idleCpuMsPerS: Object.fromEntries([...idle].map(([k, v]) => [k, { agent: round(v.agent * 1000, 2), child: round(v.child * 1000, 2) }])),
    rows: rows.map((r) => ({
      agent: r.agent,
      mode: r.mode,
      agentCpuMsPerCall: round(r.agentMsPerCall, 4),
      agentKernelShare: round(r.agentSysShare, 3),
      childCpuMsPerCall: round(r.childMsPerCall, 4),
      nodeCpuMsPerCall: round(r.nodeMsPerCall, 4),
      ratioToOrtRun: round(ratio(r.nodeMsPerCall, ortMs), 2),
      ...(COMPARE ? { ratioToThis: round(ratio(r.nodeMsPerCall, base(r).nodeMsPerCall), 3) } : {}),
      wallP50Ms: round(r.wallP50, 3),
      callsPerS: round(r.callsPerS, 0),
    })),
    ...(PROFILE ? { hot } : {}),
  });
  for (const a of agents) a.socket.close();
}

void runBench("node-call-cost", main, { watchdogMs: 15 * 60_000 });
