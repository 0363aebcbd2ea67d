// What writing the usage rows costs the edge (issue 14): the same mesh, two copies of the edge
// Worker in their own isolates of one workerd (local/edge-server.ts EDGE_EXTRA_PORTS), one with
// USAGE_WRITE=drizzle (the baseline: drizzle builds the insert on every flush, as before) and
// one with the default (statements prepared once per isolate, only values bound per flush).
// Both answer on their own sockets, so their calls take the same path. Rounds alternate the
// two (ABBA...), each a closed loop of real demo-mlp [1,4] JSON calls at 16 concurrent callers;
// a round ends when GET /v1/usage counts every call answered 200 (so no row is lost, and the
// round's CPU includes its rows' flushes). Per variant, medians over the rounds:
//
//   calls/s, p50, p99          client side
//   workerd CPU ms per call    /proc: the workerd process over the round (both isolates, D1's
//                              simulator, Miniflare's entry), less what it spends idle
//   usage write share          each isolate's V8 CPU profile (its inspector, /edge-2 and
//                              /edge-3) over its rounds: the busy samples whose stack holds the
//                              usage writer (recordUsage/flushUsage and what they call), and
//                              those under D1's binding (any D1 call, usage or not)
//
// Run: npm run bench:usage      (3 rounds of 6 s per variant)
//      npx tsx bench/usage-write.ts --quick
// Prints a table; writes bench/results/usage-write-<timestamp>.json, -latest.json, and the two
// isolates' profiles as bench/results/usage-write-profile-<variant>.json (for a profiler UI).

import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort } from "../local/free-port.js";
import { err, QUICK, runBench, say, type Bench } from "./harness.js";
import { keepAliveAgent, post } from "./http-client.js";
import { cpuByPart, inclusiveTimes, INSPECTOR_SAMPLING_US, InspectorProfiler, monotonicMicros, type CallFrame, type CpuProfile } from "./process-profile.js";
import { fmt, formatTable, RESULTS_DIR, round, runPhase, type PhaseOptions } from "./stats.js";

const CONCURRENCY = 16;
const ROUNDS = QUICK ? 2 : 6;
const PHASE: PhaseOptions = QUICK
  ? { warmup: CONCURRENCY, maxCalls: 3_000, maxMs: 1_500, concurrency: CONCURRENCY }
  : { warmup: CONCURRENCY, maxCalls: 200_000, maxMs: 6_000, concurrency: CONCURRENCY };
const IDLE_MS = 3_000;
const MODEL = "demo-mlp";
const BODY = Buffer.from(JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] }));

const VARIANTS = [
  { id: "drizzle", label: "before: drizzle builds the insert per flush", edge: 1, inspector: "edge-2", vars: { USAGE_WRITE: "drizzle" } },
  { id: "prepared", label: "after: statements prepared once per isolate", edge: 2, inspector: "edge-3", vars: {} },
] as const;
type VariantId = (typeof VARIANTS)[number]["id"];

/** The usage writer's own functions (edge/usage.ts): a sample under one of them is the write's. */
const USAGE_FNS = new Set(["recordUsage", "flushUsage", "writePrepared", "preparedInserts", "insertOf", "writeWithDrizzle"]);
const CATEGORIES: Record<string, (f: CallFrame) => boolean> = {
  "usage write": (f) => USAGE_FNS.has(f.functionName),
  "D1 binding (any D1 call)": (f) => /d1/i.test(f.url) && !/index\.js$/.test(f.url),
};

interface Round {
  variant: VariantId;
  calls: number;
  callsPerSec: number;
  p50: number;
  p99: number;
  workerdCpuMsPerCall: number;
  window: [number, number];
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

async function main(b: Bench): Promise<void> {
  const inspectorPort = await freePort();
  process.env.EDGE_INSPECTOR_PORT = String(inspectorPort);
  err("[bench] starting the mesh (not timed): two extra edge isolates, one per writer");
  const mesh = await b.startMesh({ extraEdges: 2, extraEdgeVars: VARIANTS.map((v) => v.vars) });
  const edgePid = mesh.processes.find((p) => p.name === "edge")?.child.pid;
  if (edgePid === undefined) throw new Error("no edge process");
  const workerdMs = () => cpuByPart({ edge: edgePid }, (_, row) => (row.comm === "workerd" ? "workerd" : "node")).cpuMs.workerd ?? 0;
  const agent = keepAliveAgent(b, CONCURRENCY);
  const auth = { authorization: `Bearer ${mesh.apiKey}` };

  let answered = 0;
  const callOn = (edge: string) => {
    const url = new URL(`/v2/models/${MODEL}/infer`, edge);
    return async () => {
      const r = await post(agent, url, auth, BODY);
      if (r.status !== 200) throw new Error(`HTTP ${r.status}: ${r.body.toString("utf8", 0, 200)}`);
      answered++;
    };
  };
  /** Calls GET /v1/usage counts for the model (every version, shadows none). */
  const usageUrl = new URL(`/v1/usage?model=${MODEL}&from=${Date.now() - 86_400_000}&to=${Date.now() + 86_400_000}`, mesh.edge);
  const rowsWritten = async () => {
    const r = await fetch(usageUrl, { headers: auth });
    if (r.status !== 200) throw new Error(`GET /v1/usage: HTTP ${r.status}`);
    return ((await r.json()) as { totals: { calls: number } }).totals.calls;
  };
  /** Waits until every call answered so far has its row: a lost row fails the bench. */
  const allRowsWritten = async () => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const n = await rowsWritten();
      if (n === answered) return;
      if (n > answered) throw new Error(`usage rows ${n} > calls answered ${answered}`);
      if (Date.now() > deadline) throw new Error(`usage rows lost: ${n} written of ${answered} calls answered`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  // The model loads on the first call; every path warm before anything is measured.
  for (const v of VARIANTS) for (let i = 0; i < 50; i++) await callOn(mesh.edges[v.edge]!)();
  await allRowsWritten();

  const profilers = new Map<VariantId, InspectorProfiler>();
  for (const v of VARIANTS) {
    const p = await InspectorProfiler.connect(`ws://127.0.0.1:${inspectorPort}/${v.inspector}`);
    await p.start();
    profilers.set(v.id, p);
  }

  err(`[bench] idle workerd for ${IDLE_MS / 1000} s`);
  const idle0 = workerdMs();
  const idleT0 = performance.now();
  await new Promise((r) => setTimeout(r, IDLE_MS));
  const idleMsPerMs = (workerdMs() - idle0) / (performance.now() - idleT0);

  const rounds: Round[] = [];
  for (let r = 0; r < ROUNDS && !b.interrupted; r++) {
    // ABBA: each variant as often first as second in a pair, so a drift in load favours neither.
    const order = r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
    for (const v of order) {
      err(`[bench] round ${r + 1}/${ROUNDS}: ${v.id}`);
      const before = answered;
      const cpu0 = workerdMs();
      const t0 = performance.now();
      const from = monotonicMicros();
      const phase = await runPhase(callOn(mesh.edges[v.edge]!), PHASE);
      if (phase.errors) throw new Error(`${v.id}: ${phase.errors} failed calls: ${phase.errorSamples.join("; ")}`);
      await allRowsWritten();
      const calls = answered - before;
      const cpu = workerdMs() - cpu0 - idleMsPerMs * (performance.now() - t0);
      rounds.push({ variant: v.id, calls, callsPerSec: phase.callsPerSec, p50: phase.latency.p50, p99: phase.latency.p99, workerdCpuMsPerCall: cpu / calls, window: [from, monotonicMicros()] });
    }
  }

  const profiles = new Map<VariantId, CpuProfile>();
  for (const v of VARIANTS) {
    const p = await profilers.get(v.id)!.stop();
    profiles.set(v.id, p);
    await writeFile(join(RESULTS_DIR, `usage-write-profile-${v.id}.json`), JSON.stringify(p));
  }

  const summary = Object.fromEntries(
    VARIANTS.map((v) => {
      const rs = rounds.filter((x) => x.variant === v.id);
      const calls = rs.reduce((n, x) => n + x.calls, 0);
      const windows = rs.map((x) => x.window);
      const inc = inclusiveTimes([profiles.get(v.id)!], windows, CATEGORIES);
      const sampleMs = INSPECTOR_SAMPLING_US / 1000;
      return [
        v.id,
        {
          rounds: rs.length,
          calls,
          callsPerSec: median(rs.map((x) => x.callsPerSec)),
          p50: median(rs.map((x) => x.p50)),
          p99: median(rs.map((x) => x.p99)),
          workerdCpuMsPerCall: median(rs.map((x) => x.workerdCpuMsPerCall)),
          busySamples: inc.busy,
          isolateBusyMsPerCall: (inc.busy * sampleMs) / calls,
          share: Object.fromEntries(Object.entries(inc.samples).map(([k, n]) => [k, inc.busy ? n / inc.busy : 0])),
          msPerCall: Object.fromEntries(Object.entries(inc.samples).map(([k, n]) => [k, (n * sampleMs) / calls])),
        },
      ];
    }),
  ) as Record<VariantId, { rounds: number; calls: number; callsPerSec: number; p50: number; p99: number; workerdCpuMsPerCall: number; busySamples: number; isolateBusyMsPerCall: number; share: Record<string, number>; msPerCall: Record<string, number> }>;

  const [a, z] = [summary.drizzle, summary.prepared];
  const cats = Object.keys(CATEGORIES);
  say();
  say(`usage-write${QUICK ? " (--quick)" : ""}: ${MODEL} [1,4] JSON, ${CONCURRENCY} callers, ${ROUNDS} rounds of each (medians), ${b.machine.cpus} CPUs (${b.machine.cpuModel})`);
  say();
  say(
    formatTable(
      ["measure", "before (drizzle)", "after (prepared)", "after/before"],
      [
        ["calls/s", fmt(a.callsPerSec, 0), fmt(z.callsPerSec, 0), fmt(z.callsPerSec / a.callsPerSec, 3)],
        ["p50 ms", fmt(a.p50, 2), fmt(z.p50, 2), fmt(z.p50 / a.p50, 3)],
        ["p99 ms", fmt(a.p99, 2), fmt(z.p99, 2), fmt(z.p99 / a.p99, 3)],
        ["workerd CPU ms/call (/proc, net of idle)", fmt(a.workerdCpuMsPerCall, 3), fmt(z.workerdCpuMsPerCall, 3), fmt(z.workerdCpuMsPerCall / a.workerdCpuMsPerCall, 3)],
        ["isolate busy ms/call (profile samples)", fmt(a.isolateBusyMsPerCall, 3), fmt(z.isolateBusyMsPerCall, 3), fmt(z.isolateBusyMsPerCall / a.isolateBusyMsPerCall, 3)],
        ...cats.flatMap((k) => [
          [`${k}: share of isolate busy`, `${fmt(a.share[k]! * 100, 1)}%`, `${fmt(z.share[k]! * 100, 1)}%`, fmt(z.share[k]! / a.share[k]!, 3)],
          [`${k}: ms/call`, fmt(a.msPerCall[k], 4), fmt(z.msPerCall[k], 4), fmt(z.msPerCall[k]! / a.msPerCall[k]!, 3)],
        ]),
      ],
    ),
  );
  say();
  say(`profile figures count busy samples (${INSPECTOR_SAMPLING_US} µs apart): ${a.busySamples} before, ${z.busySamples} after`);
  await b.saveResults({ concurrency: CONCURRENCY, phase: PHASE, idleWorkerdCpuMsPerS: round(idleMsPerMs * 1000, 2), rounds, summary });
}

await runBench("usage-write", main);
process.exit();
