// Does GET /v1/regions cost the same at any traffic? The report reads an hour of per-minute
// latency histograms (edge/latency-histogram.ts) from Redis; this bench fills that hour with
// 1x, 10x and 100x the calls and times the report through the real edge (workerd, Upstash REST
// stand-in, redis-server), for the operator's view (admin token) and an account's (API key).
//
// The hour is written straight into Redis with the edge's own hash layout and HINCRBY, the way
// the edge's flush writes it (making 100x the calls for real would take hours here): latencies
// drawn from a seeded log-normal mix, three caller colos, every minute of the hour, the
// account's hash getting half the calls. Each report is checked against what was written (its
// call counts), so a fast wrong answer cannot pass.
//
// Two figures per level: the steady report (what the status page's 5 s poll costs: one HGET of
// each hash's total, whole hashes only where they changed) and the first report after the hour
// was written (every hash read whole: bounded by colos x buckets, growing with the buckets the
// traffic touches until they are all in use, not with calls).
//
// Rounds alternate the levels (1x, 10x, 100x, 1x, ...) so drift on a shared machine hits them
// alike; every figure is a ratio to 1x measured in the same run. Goal: steady p50 ~1x at 10x
// and 100x.
//
// Run: npm run bench:regions            (3 rounds x 60 reports per level and view)
//      npx tsx bench/regions-report.ts --quick
//
// Prints a table and writes bench/results/regions-report-<timestamp>.json and -latest.json.

import http from "node:http";
import { bucketOf, BUCKETS, latencyKey, TOTAL_FIELD } from "../edge/latency-histogram.js";
import type { RegionsView } from "../edge/regions-view.js";
import { DEFAULT_REGIONS } from "../local/mesh.js";
import { Redis } from "ioredis";
import { err, QUICK, runBench, say, type Bench } from "./harness.js";
import { fmt, printTable, ratio, round, summarize, type Summary } from "./stats.js";
import { mulberry32 } from "../protocol/prng.js";

const ROUNDS = QUICK ? 2 : 3;
const REPORTS_PER_ROUND = QUICK ? 20 : 60;
const WARMUP = 5;
/** 1x: calls per minute per region (the old sample lists kept at most 5,000 a minute). */
const BASE_PER_MINUTE = 100;
const LEVELS = [1, 10, 100] as const;
const COLOS = ["SJC", "ICN", "FRA"] as const;
const TARGET_RATIO = 1.25;


const prng = mulberry32;

interface Hour {
  /** HINCRBY commands (key, field, count), then EXPIRE per key. */
  commands: (string | number)[][];
  keys: string[];
  /** Calls written per view (operator: all; account: its own), over the hour. */
  calls: { operator: number; account: number };
  /** Distinct hash fields written (what a report reads), per view. */
  fields: { operator: number; account: number };
}

/** An hour of histograms at `level` x the base traffic, per region, minute and view. */
function makeHour(level: number, regions: string[], account: string, minutes: number[]): Hour {
  const rand = prng(level * 7919);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const commands: (string | number)[][] = [];
  const keys: string[] = [];
  const calls = { operator: 0, account: 0 };
  const fields = { operator: 0, account: 0 };
  const perMinute = BASE_PER_MINUTE * level;
  for (const region of regions) {
    for (const m of minutes) {
      const all = new Map<string, number>();
      const mine = new Map<string, number>();
      for (let k = 0; k < perMinute; k++) {
        const colo = COLOS[k % COLOS.length]!;
        const far = colo === "SJC" ? 1 : 12;
        const ok = rand() >= 0.002;
        const ms = far * 6 * Math.exp(0.5 * gauss());
        const field = ok ? `${colo}:${bucketOf(ms)}` : `${colo}:e`;
        all.set(field, (all.get(field) ?? 0) + 1);
        calls.operator++;
        if (k % 2 === 0) {
          mine.set(field, (mine.get(field) ?? 0) + 1);
          calls.account++;
        }
      }
      for (const [view, counts] of [["operator", all], ["account", mine]] as const) {
        const key = latencyKey(region, m, view === "operator" ? null : account);
        keys.push(key);
        fields[view] += counts.size;
        let total = 0;
        for (const [f, n] of counts) {
          commands.push(["HINCRBY", key, f, n]);
          total += n;
        }
        commands.push(["HINCRBY", key, TOTAL_FIELD, total], ["EXPIRE", key, 3600]);
      }
    }
  }
  return { commands, keys, calls, fields };
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function get(url: URL, token: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, host: url.hostname, port: url.port, path: url.pathname, method: "GET", headers: { authorization: `Bearer ${token}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error("timed out")));
    req.on("error", reject);
    req.end();
  });
}

/**
 * `n` sequential reports after WARMUP, each checked to count exactly the calls written in its
 * window; the first is the isolate's first sight of the freshly written hour (a cold read).
 */
async function reports(url: URL, token: string, n: number, wantCalls: (v: RegionsView) => boolean): Promise<{ cold: number; warm: number[] }> {
  const out: number[] = [];
  let cold = NaN;
  for (let i = 0; i < n + WARMUP; i++) {
    const t = performance.now();
    const r = await get(url, token);
    const ms = performance.now() - t;
    if (r.status !== 200) throw new Error(`GET /v1/regions -> ${r.status}: ${r.text.slice(0, 200)}`);
    const view = JSON.parse(r.text) as RegionsView;
    if (!wantCalls(view)) throw new Error(`report does not count the calls written: ${view.regions.map((x) => `${x.name} ${x.latency.count}`).join(", ")}`);
    if (i === 0) cold = ms;
    if (i >= WARMUP) out.push(ms);
  }
  return { cold, warm: out };
}

async function main(b: Bench): Promise<void> {
  err("[bench] starting the mesh (not timed)");
  const mesh = await b.startMesh();
  const redis = new Redis({ host: "127.0.0.1", port: mesh.redis.port, protocol: 2 });
  b.defer(() => redis.disconnect());
  b.defer(() => agent.destroy());
  const regions = DEFAULT_REGIONS.map((r) => r.name);
  const url = new URL("/v1/regions", mesh.edge);

  // Every minute the report may read while a level is measured: the hour before now, and two
  // minutes ahead so a minute rolling over mid-measurement still finds a full hour.
  const hourFrom = (level: number) => {
    const now = Date.now();
    const minuteNow = now - (now % 60_000);
    return makeHour(level, regions, mesh.accountId, Array.from({ length: 62 }, (_, i) => minuteNow - (59 - i) * 60_000));
  };
  const hours = new Map<number, Hour>();
  const perHour = (l: number) => BASE_PER_MINUTE * l * 60 * regions.length;

  const samples = new Map<string, number[]>();
  const add = (k: string, xs: number[]) => samples.set(k, [...(samples.get(k) ?? []), ...xs]);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const level of LEVELS) {
      // Written afresh each time (the hour moves on): the previous level's hashes go first.
      for (const h of hours.values()) await redis.pipeline(h.keys.map((k) => ["del", k])).exec();
      const hour = hourFrom(level);
      hours.set(level, hour);
      for (let i = 0; i < hour.commands.length; i += 5_000) await redis.pipeline(hour.commands.slice(i, i + 5_000).map(([name, ...args]) => [String(name).toLowerCase(), ...args])).exec();
      // The window is 60 of the 62 minutes written: the per-minute count is fixed, so the sum is known.
      const want = (v: RegionsView, share: number) => v.regions.every((r) => r.latency.count === BASE_PER_MINUTE * level * share * 60);
      err(`[bench] round ${round}/${ROUNDS}, ${level}x (${perHour(level).toLocaleString("en-US")} calls in the hour): ${REPORTS_PER_ROUND} reports per view`);
      const op = await reports(url, mesh.adminToken, REPORTS_PER_ROUND, (v) => v.scope === "operator" && want(v, 1));
      const acc = await reports(url, mesh.apiKey, REPORTS_PER_ROUND, (v) => v.scope === "account" && want(v, 0.5));
      add(`operator@${level}`, op.warm);
      add(`account@${level}`, acc.warm);
      add(`operator-cold@${level}`, [op.cold]);
      add(`account-cold@${level}`, [acc.cold]);
    }
  }

  const rows: string[][] = [];
  const json: Record<string, unknown>[] = [];
  for (const view of ["operator", "account"] as const) {
    const base = summarize(samples.get(`${view}@1`)!);
    const coldBase = summarize(samples.get(`${view}-cold@1`)!);
    for (const level of LEVELS) {
      const s: Summary = summarize(samples.get(`${view}@${level}`)!);
      const hour = hours.get(level)!;
      const p50Ratio = ratio(s.p50, base.p50);
      const p99Ratio = ratio(s.p99, base.p99);
      const cold = summarize(samples.get(`${view}-cold@${level}`)!);
      const coldRatio = ratio(cold.p50, coldBase.p50);
      rows.push([
        view,
        `${level}x`,
        (view === "operator" ? hour.calls.operator : hour.calls.account).toLocaleString("en-US"),
        String(hour.fields[view]),
        fmt(s.p50, 2),
        fmt(s.p99, 2),
        level === 1 ? "(baseline)" : `${fmt(p50Ratio, 2)}x`,
        level === 1 ? "" : `${fmt(p99Ratio, 2)}x`,
        level === 1 ? "" : p50Ratio <= TARGET_RATIO ? "PASS" : "MISS",
        fmt(cold.p50, 2),
        level === 1 ? "(baseline)" : `${fmt(coldRatio, 2)}x`,
      ]);
      json.push({
        view,
        level,
        callsInHour: view === "operator" ? hour.calls.operator : hour.calls.account,
        hashFieldsInHour: hour.fields[view],
        reportMs: { p50: round(s.p50, 3), p90: round(s.p90, 3), p99: round(s.p99, 3), mean: round(s.mean, 3), count: s.count },
        vs1x: { p50: round(p50Ratio, 3), p99: round(p99Ratio, 3) },
        firstReportAfterWriteMs: { median: round(cold.p50, 3), samples: cold.count, vs1x: round(coldRatio, 3) },
      });
    }
  }
  say();
  say(`regions-report: GET /v1/regions through the edge (workerd) with an hour of latency histograms in Redis`);
  say(
    `setup: ${regions.length} regions x 60 minutes x ${COLOS.length} colos; 1x = ${BASE_PER_MINUTE} calls/min per region; ` +
      `${BUCKETS} buckets per histogram; ${ROUNDS} rounds x ${REPORTS_PER_ROUND} sequential reports per level and view, levels alternating`,
  );
  say();
  printTable(
    ["view", "traffic", "calls in the hour", "hash fields in the hour", "report p50 ms", "p99 ms", "p50 vs 1x", "p99 vs 1x", `p50 <= ${TARGET_RATIO}x`, "first report ms", "first vs 1x"],
    rows,
  );
  say();
  say(`report: steady state, as the status page polls (one HGET per region-minute; whole hashes only where they changed).`);
  say(`first report: the isolate's first read of a freshly written hour (every hash whole, median of ${ROUNDS}); it grows with the`);
  say(`latency buckets traffic touches (at most ${COLOS.length} colos x ${BUCKETS + 1} fields per hash), not with calls.`);
  await b.saveResults({
    setup: { regions: regions.length, minutes: 60, colos: COLOS.length, basePerMinutePerRegion: BASE_PER_MINUTE, levels: LEVELS, rounds: ROUNDS, reportsPerRound: REPORTS_PER_ROUND, buckets: BUCKETS },
    target: { p50VsBaselineAtMost: TARGET_RATIO },
    results: json,
  });
}

await runBench("regions-report", main);
