// Small helpers every bench shares: latency summaries (percentiles), a plain-text table
// printer, machine facts, and a JSON writer that keeps a timestamped result next to a
// `<name>-latest.json` copy. No dependencies beyond Node built-ins.

import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { percentile } from "../protocol/percentile.js";

export { percentile };

/** bench/results/, next to this file. */
export const RESULTS_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "results");

// ---------------------------------------------------------------------------------------------
// Percentiles

export interface Summary {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** Summary of a set of samples (any unit; benches use milliseconds). */
export function summarize(samples: readonly number[]): Summary {
  const sorted = Float64Array.from(samples).sort();
  const arr = Array.from(sorted);
  let total = 0;
  for (const v of arr) total += v;
  return {
    count: arr.length,
    min: arr.length ? arr[0]! : NaN,
    mean: arr.length ? total / arr.length : NaN,
    p50: percentile(arr, 50),
    p90: percentile(arr, 90),
    p99: percentile(arr, 99),
    p999: percentile(arr, 99.9),
    max: arr.length ? arr[arr.length - 1]! : NaN,
  };
}

/** Chosen fields of a summary, rounded for JSON, in the order given: `rounded(s, ["p50", "p99"])`. */
export function rounded<K extends keyof Summary>(s: Summary, keys: readonly K[], digits = 3): Record<K, number | null> {
  return Object.fromEntries(keys.map((k) => [k, round(s[k], digits)])) as Record<K, number | null>;
}

/** a / b, or NaN when b is 0 or either is not finite. */
export function ratio(a: number, b: number): number {
  return Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN;
}

/** Rounds for JSON output (keeps NaN out of JSON as null). */
export function round(n: number, digits = 3): number | null {
  if (!Number.isFinite(n)) return null;
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** Fixed-point text for tables; "-" for NaN/undefined. */
export function fmt(n: number | null | undefined, digits = 2): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "-";
  return n.toFixed(digits);
}

/** Like fmt, with an explicit sign ("+1.23"). */
export function fmtSigned(n: number | null | undefined, digits = 2): string {
  if (n === null || n === undefined || !Number.isFinite(n)) return "-";
  return (n >= 0 ? "+" : "") + n.toFixed(digits);
}

// ---------------------------------------------------------------------------------------------
// Table printer

export type Align = "left" | "right";

/**
 * Renders rows as an aligned plain-text table with a header rule. Columns whose header is in
 * `alignLeft` (default: the first column) are left-aligned; the rest are right-aligned.
 */
export function formatTable(headers: readonly string[], rows: readonly (readonly string[])[], align?: readonly Align[]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const aligns = headers.map((_, i) => align?.[i] ?? (i === 0 ? "left" : "right"));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (aligns[i] === "left" ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(headers), rule, ...rows.map((r) => line(headers.map((_, i) => r[i] ?? "")))].join("\n");
}

export function printTable(headers: readonly string[], rows: readonly (readonly string[])[], align?: readonly Align[]): void {
  process.stdout.write(formatTable(headers, rows, align) + "\n");
}

// ---------------------------------------------------------------------------------------------
// Machine facts and JSON results

export interface MachineInfo {
  hostname: string;
  platform: string;
  arch: string;
  release: string;
  cpus: number;
  cpuModel: string;
  totalMemMb: number;
  loadAvg: number[];
  node: string;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: os.platform(),
    arch: os.arch(),
    release: os.release(),
    cpus: typeof os.availableParallelism === "function" ? os.availableParallelism() : cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? "unknown",
    totalMemMb: Math.round(os.totalmem() / 2 ** 20),
    loadAvg: os.loadavg().map((v) => Math.round(v * 100) / 100),
    node: process.version,
  };
}

/** ISO timestamp safe for file names: 2025-01-31T12-34-56-789Z. */
export function fileTimestamp(d = new Date()): string {
  return d.toISOString().replace(/[:.]/g, "-");
}

/**
 * Writes `data` as `<dir>/<name>-<timestamp>.json` and `<dir>/<name>-latest.json`
 * (dir defaults to bench/results/). Returns both paths.
 */
export async function writeResults(name: string, data: unknown, dir = RESULTS_DIR, when = new Date()): Promise<{ file: string; latest: string }> {
  await mkdir(dir, { recursive: true });
  const text = JSON.stringify(data, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? null : v), 2) + "\n";
  const file = join(dir, `${name}-${fileTimestamp(when)}.json`);
  const latest = join(dir, `${name}-latest.json`);
  await writeFile(file, text);
  await writeFile(latest, text);
  return { file, latest };
}

// ---------------------------------------------------------------------------------------------
// Load phases: a closed-loop generator over any async call

export interface PhaseOptions {
  /** Calls made (and not measured) before the phase. */
  warmup: number;
  /** At most this many measured calls... */
  maxCalls: number;
  /** ...and at most this long (ms) for the measured part. */
  maxMs: number;
  /** Concurrent callers (1 = sequential). */
  concurrency: number;
}

export interface PhaseResult {
  calls: number;
  errors: number;
  /** Failed warm-up calls (not in `errors`). */
  warmupErrors: number;
  /** First few error messages, for the report. */
  errorSamples: string[];
  elapsedMs: number;
  /** Completed calls (errors included) per second. */
  callsPerSec: number;
  /** Successful calls per second. */
  okPerSec: number;
  /** Per-call latency in ms, successful calls only. */
  latency: Summary;
}

/**
 * Runs `call` in a closed loop: `concurrency` workers, each starting its next call when the
 * previous one finishes, until maxCalls calls have started or maxMs has passed. A call that
 * throws counts as an error (its latency is not recorded). `onSample` sees each successful
 * call's return value.
 */
export async function runPhase<T>(
  call: () => Promise<T>,
  opts: PhaseOptions,
  onSample?: (value: T, ms: number) => void,
): Promise<PhaseResult> {
  const errorSamples: string[] = [];
  const noteError = (err: unknown, prefix = "") => {
    if (errorSamples.length < 5) errorSamples.push(prefix + (err instanceof Error ? err.message : String(err)));
  };
  let warmupErrors = 0;
  for (let i = 0; i < opts.warmup; i++) {
    try {
      await call();
    } catch (err) {
      warmupErrors++;
      noteError(err, "warm-up: ");
    }
  }
  const latencies: number[] = [];
  let errors = 0;
  let started = 0;
  const t0 = performance.now();
  const deadline = t0 + opts.maxMs;
  const worker = async () => {
    while (started < opts.maxCalls && performance.now() < deadline) {
      started++;
      const s = performance.now();
      try {
        const v = await call();
        const ms = performance.now() - s;
        latencies.push(ms);
        onSample?.(v, ms);
      } catch (err) {
        errors++;
        noteError(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker));
  const elapsedMs = performance.now() - t0;
  const calls = latencies.length + errors;
  return {
    calls,
    errors,
    warmupErrors,
    errorSamples,
    elapsedMs,
    callsPerSec: (calls * 1000) / elapsedMs,
    okPerSec: (latencies.length * 1000) / elapsedMs,
    latency: summarize(latencies),
  };
}

/**
 * A phase's result for JSON, its per-call summary under `summaryKey` (the benches' JSON names
 * it differently, and docs/benchmarks.md quotes those names).
 */
export function phaseJson(p: PhaseResult, summaryKey = "latencyMs") {
  return {
    calls: p.calls,
    errors: p.errors,
    warmupErrors: p.warmupErrors,
    errorSamples: p.errorSamples,
    elapsedMs: round(p.elapsedMs, 1),
    callsPerSec: round(p.callsPerSec, 1),
    okPerSec: round(p.okPerSec, 1),
    [summaryKey]: rounded(p.latency, Object.keys(p.latency) as (keyof Summary)[], 4),
  };
}

/** The first `max` error samples of named phases, "name: message", for a report's last lines. */
export function errorSampleLines(phases: readonly (readonly [string, readonly PhaseResult[]])[], max = 10): string[] {
  return phases.flatMap(([name, ps]) => ps.flatMap((p) => p.errorSamples.map((e) => `${name}: ${e}`))).slice(0, max);
}
