// Does the edge send each call to the right region? The whole local mesh (edge in workerd, two
// region routers with one node each, redis-server), callers from four colos with simulated
// round trips (local mode: x-mesh-colo names the colo, SIMULATED_RTT becomes real delay on the
// edge -> region hop):
//
//                ap-seoul   us-west     best region (lowest round trip, both warm)
//     ICN            6        125       ap-seoul
//     NRT           32        105       ap-seoul
//     SJC          130          4       us-west
//     FRA          235        145       us-west   (the geographic prior says ap-seoul: the
//                                                  edge has to learn this one by measuring)
//
// The oracle is the best region in hindsight: for each colo, the region whose calls were fastest
// when forced there. Calls are forced through data residency (two more copies of the model, one
// restricted to each region: same edge, same path, no choice left), measured in the same run,
// under the same number of concurrent callers. Phases:
//
//   1. warm-up      demo-mlp held warm in both regions (keep-warm floor); calls from every colo
//                   so the edge measures its round trips (not measured)
//   2. oracle       per colo x region, calls to the copy restricted to that region
//   3. mixed        all colos at once against demo-mlp, the edge choosing: share of calls in
//                   the oracle region, and p50/p99 as the callers saw them vs the oracle's
//   4. failover     steady traffic from every colo; ap-seoul's router stopped (SIGTERM: drain;
//                   SIGKILL: crash); time until calls from its colos land elsewhere, failed
//                   calls, latency during the outage vs the oracle for what is left (us-west),
//                   and the time until traffic is back after the router is restarted
//
// Exploration: the edge sends a share of calls to the runner-up on purpose (EXPLORATION_SHARE,
// mesh default 0.02). Those count against the oracle share; this bench runs with 0.01 (change
// with --exploration 0.02), so the >= 98% target leaves room for exploration but not for
// misrouting. Printed and written with the results.
//
// Run: npm run bench:routing          (about 2-3 minutes)
//      npx tsx bench/routing.ts --quick
//
// Prints tables and writes bench/results/routing-<ISO>.json and routing-latest.json. Targets
// are informational: exit 0 unless it crashed. Bounded: every phase has a call count and a time
// limit, the whole run a watchdog; the mesh is stopped at the end, on error and on SIGINT.

import { readFile } from "node:fs/promises";
import { waitFor, type MeshHandle } from "../local/mesh.js";
import { err, QUICK, runBench, say, type Bench } from "./harness.js";
import { fmt, formatTable, machineInfo, ratio, round, runPhase, summarize, type PhaseResult, type Summary } from "./stats.js";


function numArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const n = Number(process.argv[i + 1]);
  if (!Number.isFinite(n)) throw new Error(`--${name} must be a number`);
  return n;
}

const SEOUL = "ap-seoul";
const WEST = "us-west";
const REGIONS = [SEOUL, WEST] as const;
type Region = (typeof REGIONS)[number];
const COLOS = ["ICN", "NRT", "SJC", "FRA"] as const;
type Colo = (typeof COLOS)[number];

const SIMULATED_RTT: Record<Colo, Record<Region, number>> = {
  ICN: { [SEOUL]: 6, [WEST]: 125 },
  NRT: { [SEOUL]: 32, [WEST]: 105 },
  SJC: { [SEOUL]: 130, [WEST]: 4 },
  FRA: { [SEOUL]: 235, [WEST]: 145 },
};
const EXPLORATION = numArg("exploration", 0.01);
const MODEL = "demo-mlp";
const WORKERS_PER_COLO = 2;

const WARMUP_CALLS_PER_COLO = QUICK ? 10 : 30;
const WARMUP_FORCED_PER_PAIR = QUICK ? 3 : 8;
const ORACLE = { maxCalls: QUICK ? 60 : 300, maxMs: QUICK ? 4_000 : 15_000 };
const MIXED = { maxCalls: QUICK ? 150 : 600, maxMs: QUICK ? 6_000 : 20_000 };
const FAILOVER = { steadyMs: QUICK ? 2_000 : 4_000, outageMs: QUICK ? 3_000 : 6_000, returnBoundMs: 30_000 };
const WATCHDOG_MS = 9 * 60_000;

const TARGETS = { oracleShare: 0.98, moveMs: 10_000 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Cleanup (the mesh at the end, on error, on SIGINT/SIGTERM and by the watchdog): bench/harness.ts.

/** This run's harness; loops check `bench.interrupted` to stop early on Ctrl-C or the watchdog. */
let bench: Bench;

// ---------------------------------------------------------------------------------------------
// Calls

interface Answer {
  region: string;
  ms: number;
}

interface Shot {
  colo: Colo;
  ok: boolean;
  region: string | null;
  error: string | null;
  start: number;
  end: number;
}

const BODY = JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] });

function caller(mesh: MeshHandle) {
  /** One call; throws unless it answered 200 with outputs. */
  return async (colo: Colo, model = MODEL): Promise<Answer> => {
    if (bench.interrupted) throw new Error("interrupted");
    const t0 = performance.now();
    const res = await fetch(`${mesh.edge}/v2/models/${model}/infer`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json", "x-mesh-colo": colo },
      body: BODY,
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    const ms = performance.now() - t0;
    if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${text.slice(0, 160)}`);
    const body = JSON.parse(text) as { outputs?: unknown[] };
    if (!Array.isArray(body.outputs) || body.outputs.length === 0) throw new Error(`no outputs: ${text.slice(0, 160)}`);
    return { region: res.headers.get("x-mesh-region") ?? "?", ms };
  };
}

async function api(mesh: MeshHandle, method: string, path: string, body?: unknown, raw?: Buffer): Promise<any> {
  const res = await fetch(mesh.edge + path, {
    method,
    headers: {
      authorization: `Bearer ${mesh.apiKey}`,
      "content-type": raw ? "application/octet-stream" : "application/json",
    },
    body: raw ? new Blob([new Uint8Array(raw)]) : body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path} -> ${res.status}: ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

async function warmIn(mesh: MeshHandle, region: string, key: string): Promise<boolean> {
  const s = await mesh.regionStatus(region);
  return s.models.some((m) => m.key === key && m.replicas > 0);
}

/** Closed-loop traffic from every colo, recording each call, until stop(). */
function steadyTraffic(call: ReturnType<typeof caller>) {
  const shots: Shot[] = [];
  let stopped = false;
  const loops = COLOS.flatMap((colo) =>
    Array.from({ length: WORKERS_PER_COLO }, async () => {
      while (!stopped && !bench.interrupted) {
        const start = Date.now();
        try {
          const a = await call(colo);
          shots.push({ colo, ok: true, region: a.region, error: null, start, end: Date.now() });
        } catch (e) {
          shots.push({ colo, ok: false, region: null, error: e instanceof Error ? e.message : String(e), start, end: Date.now() });
        }
      }
    }),
  );
  return {
    shots,
    async stop() {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Phases

interface OracleRun {
  /** Per colo, per region: forced calls. */
  forced: Record<Colo, Record<Region, PhaseResult>>;
  /** Per colo: the region whose forced calls were fastest (p50), and its latency. */
  best: Record<Colo, { region: Region; latency: Summary; expected: Region }>;
}

async function oraclePhase(call: ReturnType<typeof caller>): Promise<OracleRun> {
  err(`[bench] oracle: every colo x region forced through residency-restricted copies, up to ${ORACLE.maxCalls} calls / ${ORACLE.maxMs / 1000} s each, all at once`);
  const pairs = COLOS.flatMap((colo) => REGIONS.map((region) => ({ colo, region })));
  const results = await Promise.all(
    pairs.map(({ colo, region }) =>
      runPhase(
        async () => {
          const a = await call(colo, `oracle-${region}`);
          if (a.region !== region) throw new Error(`forced ${region} but answered from ${a.region}`);
        },
        { warmup: 0, maxCalls: ORACLE.maxCalls, maxMs: ORACLE.maxMs, concurrency: 1 },
      ),
    ),
  );
  const forced = {} as OracleRun["forced"];
  pairs.forEach(({ colo, region }, i) => ((forced[colo] ??= {} as Record<Region, PhaseResult>)[region] = results[i]!));
  const best = {} as OracleRun["best"];
  for (const colo of COLOS) {
    const region = REGIONS.reduce((a, b) => (forced[colo][b].latency.p50 < forced[colo][a].latency.p50 ? b : a));
    const expected = REGIONS.reduce((a, b) => (SIMULATED_RTT[colo][b] < SIMULATED_RTT[colo][a] ? b : a));
    best[colo] = { region, latency: forced[colo][region].latency, expected };
  }
  return { forced, best };
}

interface MixedRun {
  perColo: Record<Colo, { phase: PhaseResult; regions: Record<string, number>; latencies: number[]; oracleShare: number }>;
}

async function mixedPhase(call: ReturnType<typeof caller>, oracle: OracleRun): Promise<MixedRun> {
  err(`[bench] mixed: ${COLOS.length} colos x ${WORKERS_PER_COLO} callers, the edge choosing, up to ${MIXED.maxCalls} calls / ${MIXED.maxMs / 1000} s per colo`);
  const perColo = {} as MixedRun["perColo"];
  await Promise.all(
    COLOS.map(async (colo) => {
      const regions: Record<string, number> = {};
      const latencies: number[] = [];
      const phase = await runPhase(
        () => call(colo),
        { warmup: 0, maxCalls: MIXED.maxCalls, maxMs: MIXED.maxMs, concurrency: WORKERS_PER_COLO },
        (a) => {
          regions[a.region] = (regions[a.region] ?? 0) + 1;
          latencies.push(a.ms);
        },
      );
      const ok = Object.values(regions).reduce((s, n) => s + n, 0);
      perColo[colo] = { phase, regions, latencies, oracleShare: ok ? (regions[oracle.best[colo].region] ?? 0) / ok : NaN };
    }),
  );
  return { perColo };
}

interface FailoverColo {
  colo: Colo;
  /** ms from the signal until the first call from which on every call (until the restart) landed elsewhere. */
  moveMs: number | null;
  /** Calls that started after the signal and still landed in the stopped region. */
  landedInStopped: number;
  /** Calls of this colo in flight at the moment of the signal. */
  inFlightAtSignal: number;
  failed: number;
  /** Failed calls that were in flight at the signal (the only ones allowed to fail). */
  failedInFlight: number;
  errorSamples: string[];
  outage: Summary;
  outageRegions: Record<string, number>;
  /** ms from the restart (router process started) until the colo's last 10 calls are >= 80% back. */
  returnMs: number | null;
}

interface FailoverRun {
  signal: NodeJS.Signals;
  stopped: Region;
  colos: FailoverColo[];
  restartMs: number;
  nodeReconnectMs: number;
}

async function failoverPhase(mesh: MeshHandle, call: ReturnType<typeof caller>, oracle: OracleRun, signal: NodeJS.Signals): Promise<FailoverRun> {
  const stopped = SEOUL;
  const affected = COLOS.filter((c) => oracle.best[c].region === stopped);
  err(`[bench] failover (${signal}): steady traffic from every colo; stopping ${stopped} (best region of ${affected.join(", ")})`);
  const t = steadyTraffic(call);
  let stopAt = 0;
  let restartAt = 0;
  let restartMs = 0;
  let nodeReconnectMs = 0;
  const returned: Partial<Record<Colo, number>> = {};
  let routerDown = false;
  try {
    await sleep(FAILOVER.steadyMs);
    stopAt = Date.now();
    routerDown = true;
    await mesh.stopRouter(stopped, signal);
    await sleep(FAILOVER.outageMs);
    restartAt = Date.now();
    await mesh.startRouter(stopped);
    routerDown = false;
    restartMs = Date.now() - restartAt;
    await waitFor(`${stopped}'s node reconnects`, FAILOVER.returnBoundMs, async () => ((await mesh.regionStatus(stopped)).nodes.length > 0 ? true : undefined), undefined, 200);
    nodeReconnectMs = Date.now() - restartAt;
    await waitFor("traffic returns", FAILOVER.returnBoundMs, async () => {
      for (const colo of affected) {
        if (returned[colo]) continue;
        const last = t.shots.filter((s) => s.colo === colo && s.start >= restartAt).slice(-10);
        if (last.length === 10 && last.filter((s) => s.region === stopped).length >= 8) returned[colo] = Date.now() - restartAt;
      }
      return affected.every((c) => returned[c] !== undefined) ? true : undefined;
    }, undefined, 100).catch((e: unknown) => err(`[bench] ${String(e)}`));
  } finally {
    await t.stop();
    if (routerDown) await mesh.startRouter(stopped).catch((e: unknown) => err(`[bench] restart failed: ${String(e)}`));
  }
  const colos = COLOS.map((colo): FailoverColo => {
    const mine = t.shots.filter((s) => s.colo === colo);
    const inFlight = new Set(mine.filter((s) => s.start <= stopAt && s.end > stopAt));
    const failed = mine.filter((s) => !s.ok);
    const during = mine.filter((s) => s.start > stopAt && s.start < restartAt).sort((a, b) => a.start - b.start);
    let first = during.length;
    while (first > 0 && during[first - 1]!.ok && during[first - 1]!.region !== stopped) first--;
    const moved = during[first];
    const outageRegions: Record<string, number> = {};
    for (const s of during) {
      const k = s.ok ? s.region ?? "?" : "failed";
      outageRegions[k] = (outageRegions[k] ?? 0) + 1;
    }
    return {
      colo,
      moveMs: affected.includes(colo) ? (moved ? moved.end - stopAt : null) : null,
      landedInStopped: during.filter((s) => s.region === stopped).length,
      inFlightAtSignal: inFlight.size,
      failed: failed.length,
      failedInFlight: failed.filter((s) => inFlight.has(s)).length,
      errorSamples: failed.slice(0, 3).map((s) => s.error ?? "?"),
      outage: summarize(during.filter((s) => s.ok).map((s) => s.end - s.start)),
      outageRegions,
      returnMs: returned[colo] ?? null,
    };
  });
  return { signal, stopped, colos, restartMs, nodeReconnectMs };
}

// ---------------------------------------------------------------------------------------------

async function main(b: Bench): Promise<void> {
  bench = b;
  const startedAt = new Date();
  const machine = machineInfo();
  err(`[bench] routing${QUICK ? " (--quick)" : ""}: ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}, exploration ${EXPLORATION}`);
  err("[bench] starting the mesh (not timed)");
  const mesh = await b.startMesh({ edgeVars: { SIMULATED_RTT: JSON.stringify(SIMULATED_RTT), EXPLORATION_SHARE: String(EXPLORATION) } });
  const call = caller(mesh);

  // --- warm-up: demo-mlp warm in both regions; the oracle copies warm in theirs -------------
  const modelFile = mesh.models.find((m) => m.name === MODEL)!.file;
  const bytes = await readFile(modelFile);
  const put = await api(mesh, "PUT", `/v1/models/${MODEL}`, { keepWarm: 1 });
  const keys = [`${put.id}@1`];
  for (const region of REGIONS) {
    const name = `oracle-${region}`;
    await api(mesh, "POST", "/v1/models", { name });
    await api(mesh, "POST", `/v1/models/${name}/versions`, undefined, bytes);
    await api(mesh, "PUT", `/v1/models/${name}`, { regions: [region] });
  }
  await waitFor("demo-mlp warm in both regions", 60_000, async () => ((await warmIn(mesh, WEST, keys[0]!)) && (await warmIn(mesh, SEOUL, keys[0]!)) ? true : undefined), undefined, 200);
  err(`[bench] warm-up: ${WARMUP_CALLS_PER_COLO} calls per colo, ${WARMUP_FORCED_PER_PAIR} forced per colo x region (not measured)`);
  let warmupErrors = 0;
  await Promise.all(
    COLOS.map(async (colo) => {
      for (const region of REGIONS) for (let i = 0; i < WARMUP_FORCED_PER_PAIR; i++) await call(colo, `oracle-${region}`).catch(() => warmupErrors++);
      for (let i = 0; i < WARMUP_CALLS_PER_COLO; i++) await call(colo).catch(() => warmupErrors++);
    }),
  );

  // --- measured phases --------------------------------------------------------------------
  const oracle = await oraclePhase(call);
  const mixed = await mixedPhase(call, oracle);
  const failovers: FailoverRun[] = [];
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    if (bench.interrupted) throw new Error("interrupted");
    failovers.push(await failoverPhase(mesh, call, oracle, signal));
    // Let the region settle (reports fresh, traffic back) before the next phase.
    await sleep(2_000);
  }
  if (bench.interrupted) throw new Error("interrupted");
  const finishedAt = new Date();
  const facts = { startedAt, finishedAt, machine, oracle, mixed, failovers, warmupErrors };
  report(facts);
  await b.saveResults(resultJson(facts));
}

// ---------------------------------------------------------------------------------------------
// Report

interface Facts {
  startedAt: Date;
  finishedAt: Date;
  machine: ReturnType<typeof machineInfo>;
  oracle: OracleRun;
  mixed: MixedRun;
  failovers: FailoverRun[];
  warmupErrors: number;
}

function mixedRows(f: Facts) {
  const rows = COLOS.map((colo) => {
    const m = f.mixed.perColo[colo];
    const o = f.oracle.best[colo];
    const l = m.phase.latency;
    return {
      colo,
      oracleRegion: o.region,
      expectedRegion: o.expected,
      calls: m.phase.calls,
      errors: m.phase.errors,
      regions: m.regions,
      oracleShare: m.oracleShare,
      p50: l.p50,
      p99: l.p99,
      mean: l.mean,
      oracleP50: o.latency.p50,
      oracleP99: o.latency.p99,
      oracleMean: o.latency.mean,
      p50Ratio: ratio(l.p50, o.latency.p50),
      p99Ratio: ratio(l.p99, o.latency.p99),
      meanRatio: ratio(l.mean, o.latency.mean),
    };
  });
  const okCalls = rows.reduce((s, r) => s + (r.calls - r.errors), 0);
  const atOracle = rows.reduce((s, r) => s + r.oracleShare * (r.calls - r.errors), 0);
  // Oracle for the whole mix: each colo's oracle mean, weighted by its calls.
  const mean = rows.reduce((s, r) => s + r.mean * (r.calls - r.errors), 0) / okCalls;
  const oracleMean = rows.reduce((s, r) => s + r.oracleMean * (r.calls - r.errors), 0) / okCalls;
  return { rows, all: { calls: rows.reduce((s, r) => s + r.calls, 0), errors: rows.reduce((s, r) => s + r.errors, 0), oracleShare: atOracle / okCalls, mean, oracleMean, meanRatio: ratio(mean, oracleMean) } };
}

function report(f: Facts): void {
  const { machine } = f;
  say();
  say(`routing${QUICK ? " (--quick)" : ""}: ${MODEL} [1,4] FP32, ${COLOS.length} colos x ${WORKERS_PER_COLO} callers, regions ${REGIONS.join(", ")}, exploration share ${EXPLORATION}`);
  say(`${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}; simulated round trips (ms): ${COLOS.map((c) => `${c} ${REGIONS.map((r) => `${r}=${SIMULATED_RTT[c][r]}`).join("/")}`).join(", ")}`);
  say();
  say("oracle (forced per region through residency-restricted copies, same run), ms:");
  say(
    formatTable(
      ["colo", ...REGIONS.flatMap((r) => [`${r} p50`, `${r} p99`]), "best in hindsight", "best by config"],
      COLOS.map((c) => [
        c,
        ...REGIONS.flatMap((r) => [fmt(f.oracle.forced[c][r].latency.p50, 1), fmt(f.oracle.forced[c][r].latency.p99, 1)]),
        f.oracle.best[c].region,
        f.oracle.best[c].expected,
      ]),
    ),
  );
  const mix = mixedRows(f);
  say();
  say("mixed traffic, the edge choosing (ratios: caller's figure / oracle's figure for that colo):");
  say(
    formatTable(
      ["colo", "calls", "errors", "to oracle region", "p50 ms", "oracle p50", "p50 vs oracle", "p99 ms", "oracle p99", "p99 vs oracle", "regions"],
      [
        ...mix.rows.map((r) => [
          r.colo,
          String(r.calls),
          String(r.errors),
          `${fmt(r.oracleShare * 100, 1)}%`,
          fmt(r.p50, 1),
          fmt(r.oracleP50, 1),
          `${fmt(r.p50Ratio, 3)}x`,
          fmt(r.p99, 1),
          fmt(r.oracleP99, 1),
          `${fmt(r.p99Ratio, 3)}x`,
          Object.entries(r.regions).map(([k, v]) => `${k} ${v}`).join(", "),
        ]),
        ["all", String(mix.all.calls), String(mix.all.errors), `${fmt(mix.all.oracleShare * 100, 1)}%`, `mean ${fmt(mix.all.mean, 1)}`, `mean ${fmt(mix.all.oracleMean, 1)}`, `${fmt(mix.all.meanRatio, 3)}x`, "", "", "", ""],
      ],
    ),
  );
  say();
  say("failover: ap-seoul's router stopped during steady traffic from every colo; 'move' = signal -> first call from which on");
  say("every call of that colo landed elsewhere; outage latency vs the oracle for what is left (us-west forced);");
  say("'to stopped' = calls started after the signal that still landed in ap-seoul; 'in flight' = calls in flight at the");
  say("signal; 'failed (of those)' = failed calls (how many of them were in flight at the signal, the only ones allowed to fail);");
  say("'back' = router process started -> the colo's last 10 calls >= 80% in ap-seoul again:");
  const rows: string[][] = [];
  for (const fo of f.failovers) {
    for (const c of fo.colos) {
      const o = f.oracle.forced[c.colo][WEST].latency;
      const affected = f.oracle.best[c.colo].region === fo.stopped;
      rows.push([
        fo.signal,
        c.colo,
        affected ? (c.moveMs === null ? "never" : fmt(c.moveMs, 0)) : "-",
        affected && c.moveMs !== null ? `${fmt(ratio(c.moveMs, f.oracle.best[c.colo].latency.p50), 1)}x` : "-",
        String(c.landedInStopped),
        String(c.inFlightAtSignal),
        `${c.failed} (${c.failedInFlight})`,
        fmt(c.outage.p50, 1),
        fmt(o.p50, 1),
        `${fmt(ratio(c.outage.p50, o.p50), 3)}x`,
        fmt(c.outage.p99, 1),
        fmt(o.p99, 1),
        `${fmt(ratio(c.outage.p99, o.p99), 3)}x`,
        affected ? (c.returnMs === null ? "not yet" : fmt(c.returnMs, 0)) : "-",
      ]);
    }
  }
  say(
    formatTable(
      ["signal", "colo", "move ms", "move / oracle p50", "to stopped", "in flight", "failed (of those)", "outage p50", "oracle p50", "p50 vs oracle", "outage p99", "oracle p99", "p99 vs oracle", "back ms"],
      rows,
    ),
  );
  for (const fo of f.failovers) say(`  ${fo.signal}: router back up in ${fmt(fo.restartMs, 0)} ms, its node reconnected ${fmt(fo.nodeReconnectMs, 0)} ms after the restart began`);
  say();
  say("targets (informational):");
  for (const t of targetsOf(f)) say(`  ${t.pass ? "PASS" : "MISS"}  ${t.text}`);
  const samples = [
    ...COLOS.flatMap((c) => f.mixed.perColo[c].phase.errorSamples.map((e) => `mixed ${c}: ${e}`)),
    ...f.failovers.flatMap((fo) => fo.colos.flatMap((c) => c.errorSamples.map((e) => `${fo.signal} ${c.colo}: ${e}`))),
  ];
  if (samples.length) {
    say();
    say("error samples:");
    for (const e of samples.slice(0, 10)) say(`  ${e}`);
  }
  if (f.warmupErrors) say(`warm-up errors: ${f.warmupErrors}`);
}

function targetsOf(f: Facts) {
  const mix = mixedRows(f);
  const moves = f.failovers.flatMap((fo) => fo.colos.filter((c) => f.oracle.best[c.colo].region === fo.stopped).map((c) => ({ signal: fo.signal, ...c })));
  const worstMove = Math.max(...moves.map((m) => (m.moveMs === null ? Infinity : m.moveMs)));
  const notInFlight = f.failovers.reduce((s, fo) => s + fo.colos.reduce((t, c) => t + c.failed - c.failedInFlight, 0), 0);
  const oracleMatchesConfig = COLOS.every((c) => f.oracle.best[c].region === f.oracle.best[c].expected);
  return [
    {
      key: "oracleShare",
      target: TARGETS.oracleShare,
      actual: mix.all.oracleShare,
      pass: mix.all.oracleShare >= TARGETS.oracleShare,
      text: `share of calls in the oracle region ${fmt(mix.all.oracleShare * 100, 2)}% (target >= ${TARGETS.oracleShare * 100}%, exploration ${EXPLORATION * 100}% included)`,
    },
    {
      key: "moveMs",
      target: TARGETS.moveMs,
      actual: worstMove,
      pass: worstMove <= TARGETS.moveMs,
      text: `slowest move off a stopped region ${fmt(worstMove, 0)} ms (target <= ${TARGETS.moveMs} ms)`,
    },
    {
      key: "failedBeyondInFlight",
      target: 0,
      actual: notInFlight,
      pass: notInFlight === 0,
      text: `calls failed during failover beyond those in flight at the signal: ${notInFlight} (target 0)`,
    },
    {
      key: "oracleMatchesConfig",
      target: 1,
      actual: oracleMatchesConfig ? 1 : 0,
      pass: oracleMatchesConfig,
      text: `best region in hindsight = lowest configured round trip for every colo: ${oracleMatchesConfig ? "yes" : "no"}`,
    },
  ];
}

function resultJson(f: Facts) {
  const sum = (s: Summary) => ({ count: s.count, p50: round(s.p50, 2), p99: round(s.p99, 2), mean: round(s.mean, 2), min: round(s.min, 2), max: round(s.max, 2) });
  const mix = mixedRows(f);
  return {
    // bench, quick, startedAt, machine: b.saveResults; finishedAt: when measuring ended.
    finishedAt: f.finishedAt.toISOString(),
    config: {
      model: MODEL,
      regions: REGIONS,
      colos: COLOS,
      simulatedRttMs: SIMULATED_RTT,
      explorationShare: EXPLORATION,
      workersPerColo: WORKERS_PER_COLO,
      warmup: { callsPerColo: WARMUP_CALLS_PER_COLO, forcedPerPair: WARMUP_FORCED_PER_PAIR },
      oracle: { ...ORACLE, method: "calls to copies of the model restricted to one region (data residency), per colo x region, concurrently" },
      mixed: MIXED,
      failover: FAILOVER,
    },
    oracle: Object.fromEntries(
      COLOS.map((c) => [
        c,
        {
          bestRegion: f.oracle.best[c].region,
          expectedRegion: f.oracle.best[c].expected,
          forced: Object.fromEntries(REGIONS.map((r) => [r, { errors: f.oracle.forced[c][r].errors, latencyMs: sum(f.oracle.forced[c][r].latency) }])),
        },
      ]),
    ),
    mixed: {
      perColo: Object.fromEntries(
        mix.rows.map((r) => [
          r.colo,
          {
            calls: r.calls,
            errors: r.errors,
            regions: r.regions,
            oracleRegion: r.oracleRegion,
            oracleShare: round(r.oracleShare, 4),
            latencyMs: sum(f.mixed.perColo[r.colo].phase.latency),
            oracleLatencyMs: sum(f.oracle.best[r.colo].latency),
            vsOracle: { p50: round(r.p50Ratio, 4), p99: round(r.p99Ratio, 4), mean: round(r.meanRatio, 4) },
          },
        ]),
      ),
      all: { calls: mix.all.calls, errors: mix.all.errors, oracleShare: round(mix.all.oracleShare, 4), meanMs: round(mix.all.mean, 2), oracleMeanMs: round(mix.all.oracleMean, 2), meanVsOracle: round(mix.all.meanRatio, 4) },
    },
    failover: f.failovers.map((fo) => ({
      signal: fo.signal,
      stoppedRegion: fo.stopped,
      routerRestartMs: round(fo.restartMs, 0),
      nodeReconnectMs: round(fo.nodeReconnectMs, 0),
      colos: fo.colos.map((c) => {
        const o = f.oracle.forced[c.colo][WEST].latency;
        return {
          colo: c.colo,
          affected: f.oracle.best[c.colo].region === fo.stopped,
          moveMs: c.moveMs,
          moveVsOracleP50: c.moveMs === null ? null : round(ratio(c.moveMs, f.oracle.best[c.colo].latency.p50), 2),
          landedInStopped: c.landedInStopped,
          inFlightAtSignal: c.inFlightAtSignal,
          failed: c.failed,
          failedInFlight: c.failedInFlight,
          errorSamples: c.errorSamples,
          outageRegions: c.outageRegions,
          outageLatencyMs: sum(c.outage),
          oracleDuringOutageMs: sum(o),
          outageVsOracle: { p50: round(ratio(c.outage.p50, o.p50), 4), p99: round(ratio(c.outage.p99, o.p99), 4) },
          returnMs: c.returnMs,
        };
      }),
    })),
    targets: Object.fromEntries(targetsOf(f).map((t) => [t.key, { target: t.target, actual: Number.isFinite(t.actual) ? round(t.actual, 4) : null, pass: t.pass, description: t.text }])),
    warmupErrors: f.warmupErrors,
  };
}

await runBench("routing", main, { watchdogMs: WATCHDOG_MS });
process.exit();
