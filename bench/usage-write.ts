// What writing the usage rows costs the edge (issue 14): the same mesh, two copies of the edge
// Worker in their own isolates of one workerd (local/edge-server.ts EDGE_EXTRA_PORTS), one with
// USAGE_WRITE=drizzle (the baseline: drizzle builds the insert on every flush, as before) and
// one with the default (statements prepared once per isolate, only values bound per flush).
// Both answer on their own sockets, so their calls take the same path. Two cases, each a closed
// loop at 16 concurrent callers:
//
//   whole call     a real demo-mlp [1,4] JSON inference (edge, router, node)
//   refused        the same with a tensor the signature refuses ([1,3]): the edge answers 400
//                  invalid_tensor and writes the call's usage row, no region hop, so the
//                  edge's own work (and the row) is all the mesh does per call
//
// Rounds alternate the two writers (ABBA...); a round ends when GET /v1/usage counts every call
// answered (so no row is lost, and the round's CPU includes its rows' flushes). Per case and
// writer, medians over the rounds:
//
//   calls/s, p50, p99          client side
//   workerd CPU ms per call    /proc: the workerd process over the round (both isolates, D1's
//                              simulator, Miniflare's entry), less what it spends idle
//   usage write share          each isolate's V8 CPU profile (its inspector, /edge-2 and
//                              /edge-3) over its rounds: the busy samples whose stack holds the
//                              usage writer (recordUsage/flushUsage and what they call), and
//                              those under D1's binding (any D1 call, usage or not)
//
// Run: npm run bench:usage      (per case, 6 rounds of 5 s per writer; about 4 minutes)
//      npx tsx bench/usage-write.ts --quick
// Prints a table per case; writes bench/results/usage-write-<timestamp>.json, -latest.json, and
// the two isolates' profiles as bench/results/usage-write-profile-<variant>.json (a profiler UI
// opens them).

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
  : { warmup: CONCURRENCY, maxCalls: 200_000, maxMs: 5_000, concurrency: CONCURRENCY };
const IDLE_MS = 3_000;
const MODEL = "demo-mlp";
const tensor = (shape: number[], data: number[]) => Buffer.from(JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape, data }] }));

const CASES = [
  { id: "whole", label: "whole call (edge, router, node)", body: tensor([1, 4], [1, 2, 3, 4]), status: 200 },
  { id: "refused", label: "refused tensor (400 at the edge, row written, no region hop)", body: tensor([1, 3], [1, 2, 3]), status: 400 },
] as const;
type CaseId = (typeof CASES)[number]["id"];

const VARIANTS = [
  { id: "drizzle", label: "before: drizzle builds the insert per flush", edge: 1, inspector: "edge-2", vars: { USAGE_WRITE: "drizzle" } },
  { id: "prepared", label: "after: statements prepared once per isolate", edge: 2, inspector: "edge-3", vars: {} },
] as const;
type VariantId = (typeof VARIANTS)[number]["id"];

/** The usage writer's own functions (edge/usage.ts): a sample under one of them is the write's. */
const USAGE_FNS = new Set(["recordUsage", "flushUsage", "writePrepared", "preparedInserts", "insertOf", "writeWithDrizzle"]);
/** drizzle's query building (bundled, so known by name only). */
const DRIZZLE_FNS = new Set(["values", "toSQL", "getSQL", "_prepare", "prepareQuery", "buildInsertQuery", "sqlToQuery", "buildQueryFromSourceParams", "mergeQueries"]);
const usage = (s: readonly CallFrame[]) => s.some((f) => USAGE_FNS.has(f.functionName));
/** workerd's D1 binding (its own module, cloudflare-internal:d1-api): statements, their JSON, the fetch to D1. */
const d1 = (s: readonly CallFrame[]) => s.some((f) => f.url.includes("d1-api"));
/** The D1 retry wrapper's statement wrapper (edge/d1-retry.ts). */
const retry = (s: readonly CallFrame[]) => s.some((f) => f.functionName === "wrap");
const drizzleBuild = (s: readonly CallFrame[]) => s.some((f) => DRIZZLE_FNS.has(f.functionName));
/** The usage write, and its parts (disjoint, in this order of precedence: D1, retry, drizzle, the rest). */
const CATEGORIES: Record<string, (stack: readonly CallFrame[]) => boolean> = {
  "usage write": usage,
  "  of it, D1's binding (statements, JSON, fetch)": (s) => usage(s) && d1(s),
  "  of it, the retry wrapper": (s) => usage(s) && !d1(s) && retry(s),
  "  of it, drizzle building the query": (s) => usage(s) && !d1(s) && !retry(s) && drizzleBuild(s),
  "  of it, usage.ts itself (buffer, values, timer)": (s) => usage(s) && !d1(s) && !retry(s) && !drizzleBuild(s),
  "D1's binding, any D1 call": d1,
};

interface Round {
  case: CaseId;
  variant: VariantId;
  calls: number;
  callsPerSec: number;
  p50: number;
  p99: number;
  workerdCpuMsPerCall: number;
  window: [number, number];
}

interface Summary {
  rounds: number;
  calls: number;
  callsPerSec: number;
  p50: number;
  p99: number;
  workerdCpuMsPerCall: number;
  /** Spread of the rounds' workerd CPU per call (min, max). */
  workerdCpuRange: [number, number];
  busySamples: number;
  isolateBusyMsPerCall: number;
  share: Record<string, number>;
  msPerCall: Record<string, number>;
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
  const callOn = (edge: string, c: (typeof CASES)[number]) => {
    const url = new URL(`/v2/models/${MODEL}/infer`, edge);
    return async () => {
      const r = await post(agent, url, auth, c.body);
      if (r.status !== c.status) throw new Error(`HTTP ${r.status} (wanted ${c.status}): ${r.body.toString("utf8", 0, 200)}`);
      answered++;
    };
  };
  /**
   * Calls GET /v1/usage counts for the model from `from` (ms) on, every status and version. A
   * row's time is its call's start, so a round asks for its own rows only (a report over every
   * row so far would cost more each round).
   */
  const rowsWritten = async (from: number) => {
    const r = await fetch(new URL(`/v1/usage?model=${MODEL}&from=${from}&to=${Date.now() + 86_400_000}`, mesh.edge), { headers: auth });
    if (r.status !== 200) throw new Error(`GET /v1/usage: HTTP ${r.status}`);
    return ((await r.json()) as { totals: { calls: number } }).totals.calls;
  };
  /** Waits until every call answered since `from` (`calls` of them) has its row: a lost row fails the bench. */
  const allRowsWritten = async (from: number, calls: number) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const n = await rowsWritten(from);
      if (n === calls) return;
      if (n > calls) throw new Error(`usage rows ${n} > calls answered ${calls}`);
      if (Date.now() > deadline) throw new Error(`usage rows lost: ${n} written of ${calls} calls answered`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  // The model loads on the first call; every path warm before anything is measured.
  const warmFrom = Date.now();
  for (const v of VARIANTS) for (const c of CASES) for (let i = 0; i < 50; i++) await callOn(mesh.edges[v.edge]!, c)();
  await allRowsWritten(warmFrom, answered);

  const profilers = new Map<VariantId, InspectorProfiler>();
  for (const v of VARIANTS) {
    const p = await InspectorProfiler.connect(`ws://127.0.0.1:${inspectorPort}/${v.inspector}`);
    await p.start();
    profilers.set(v.id, p);
  }

  /** workerd's CPU with no calls (three isolates' timers, D1, the two profilers), ms per ms. */
  const idleRate = async () => {
    err(`[bench] idle workerd for ${IDLE_MS / 1000} s`);
    const cpu0 = workerdMs();
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, IDLE_MS));
    return (workerdMs() - cpu0) / (performance.now() - t0);
  };
  const idleBefore = await idleRate();

  const rounds: Omit<Round, "workerdCpuMsPerCall">[] = [];
  const cpuMs: number[] = [];
  const spans: number[] = [];
  for (const c of CASES) {
    for (let r = 0; r < ROUNDS && !b.interrupted; r++) {
      // ABBA: each writer as often first as second in a pair, so a drift in load favours neither.
      const order = r % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
      for (const v of order) {
        err(`[bench] ${c.id}, round ${r + 1}/${ROUNDS}: ${v.id}`);
        const before = answered;
        const since = Date.now();
        const cpu0 = workerdMs();
        const t0 = performance.now();
        const from = monotonicMicros();
        const phase = await runPhase(callOn(mesh.edges[v.edge]!, c), PHASE);
        if (phase.errors) throw new Error(`${c.id} ${v.id}: ${phase.errors} failed calls: ${phase.errorSamples.join("; ")}`);
        await allRowsWritten(since, answered - before);
        cpuMs.push(workerdMs() - cpu0);
        spans.push(performance.now() - t0);
        rounds.push({ case: c.id, variant: v.id, calls: answered - before, callsPerSec: phase.callsPerSec, p50: phase.latency.p50, p99: phase.latency.p99, window: [from, monotonicMicros()] });
      }
    }
  }
  const idleAfter = await idleRate();
  const idle = (idleBefore + idleAfter) / 2;
  const measured: Round[] = rounds.map((r, i) => ({ ...r, workerdCpuMsPerCall: (cpuMs[i]! - idle * spans[i]!) / r.calls }));

  const profiles = new Map<VariantId, CpuProfile>();
  for (const v of VARIANTS) {
    const p = await profilers.get(v.id)!.stop();
    profiles.set(v.id, p);
    await writeFile(join(RESULTS_DIR, `usage-write-profile-${v.id}.json`), JSON.stringify(p));
  }

  const sampleMs = INSPECTOR_SAMPLING_US / 1000;
  const summarizeRounds = (rs: Round[], profile: CpuProfile): Summary => {
    const calls = rs.reduce((n, x) => n + x.calls, 0);
    const inc = inclusiveTimes([profile], rs.map((x) => x.window), CATEGORIES);
    const cpu = rs.map((x) => x.workerdCpuMsPerCall);
    return {
      rounds: rs.length,
      calls,
      callsPerSec: median(rs.map((x) => x.callsPerSec)),
      p50: median(rs.map((x) => x.p50)),
      p99: median(rs.map((x) => x.p99)),
      workerdCpuMsPerCall: median(cpu),
      workerdCpuRange: [Math.min(...cpu), Math.max(...cpu)],
      busySamples: inc.busy,
      isolateBusyMsPerCall: (inc.busy * sampleMs) / calls,
      share: Object.fromEntries(Object.entries(inc.samples).map(([k, n]) => [k, inc.busy ? n / inc.busy : 0])),
      msPerCall: Object.fromEntries(Object.entries(inc.samples).map(([k, n]) => [k, (n * sampleMs) / calls])),
    };
  };
  const summary = Object.fromEntries(
    CASES.map((c) => [c.id, Object.fromEntries(VARIANTS.map((v) => [v.id, summarizeRounds(measured.filter((x) => x.case === c.id && x.variant === v.id), profiles.get(v.id)!)]))]),
  ) as Record<CaseId, Record<VariantId, Summary>>;

  say();
  say(`usage-write${QUICK ? " (--quick)" : ""}: ${MODEL}, ${CONCURRENCY} callers, ${ROUNDS} rounds of each writer per case (medians), ${b.machine.cpus} CPUs (${b.machine.cpuModel})`);
  say(`workerd idle: ${fmt(idleBefore * 1000, 0)} ms CPU per s before the rounds, ${fmt(idleAfter * 1000, 0)} after (their mean is taken off each round)`);
  const cats = Object.keys(CATEGORIES);
  for (const c of CASES) {
    const [a, z] = [summary[c.id].drizzle, summary[c.id].prepared];
    say();
    say(`${c.label}:`);
    say(
      formatTable(
        ["measure", "before (drizzle)", "after (prepared)", "after/before"],
        [
          ["calls/s", fmt(a.callsPerSec, 0), fmt(z.callsPerSec, 0), fmt(z.callsPerSec / a.callsPerSec, 3)],
          ["p50 ms", fmt(a.p50, 2), fmt(z.p50, 2), fmt(z.p50 / a.p50, 3)],
          ["p99 ms", fmt(a.p99, 2), fmt(z.p99, 2), fmt(z.p99 / a.p99, 3)],
          ["workerd CPU ms/call (/proc, net of idle)", fmt(a.workerdCpuMsPerCall, 3), fmt(z.workerdCpuMsPerCall, 3), fmt(z.workerdCpuMsPerCall / a.workerdCpuMsPerCall, 3)],
          ["  rounds' range", `${fmt(a.workerdCpuRange[0], 3)}-${fmt(a.workerdCpuRange[1], 3)}`, `${fmt(z.workerdCpuRange[0], 3)}-${fmt(z.workerdCpuRange[1], 3)}`, ""],
          ["isolate busy ms/call (profile samples)", fmt(a.isolateBusyMsPerCall, 3), fmt(z.isolateBusyMsPerCall, 3), fmt(z.isolateBusyMsPerCall / a.isolateBusyMsPerCall, 3)],
          ...cats.flatMap((k) => [
            [`${k}: share of isolate busy`, `${fmt(a.share[k]! * 100, 1)}%`, `${fmt(z.share[k]! * 100, 1)}%`, fmt(z.share[k]! / a.share[k]!, 3)],
            [`${k}: ms/call`, fmt(a.msPerCall[k], 4), fmt(z.msPerCall[k], 4), fmt(z.msPerCall[k]! / a.msPerCall[k]!, 3)],
          ]),
        ],
      ),
    );
    say(`profile figures count busy samples (${INSPECTOR_SAMPLING_US} µs apart): ${a.busySamples} before, ${z.busySamples} after`);
  }
  await b.saveResults({ concurrency: CONCURRENCY, phase: PHASE, idleWorkerdCpuMsPerS: { before: round(idleBefore * 1000, 2), after: round(idleAfter * 1000, 2) }, rounds: measured, summary });
}

await runBench("usage-write", main);
process.exit();
