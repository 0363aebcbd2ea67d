// One bench run's lifecycle, shared by every bench/*.ts: a fresh temp folder, the mesh and any
// child processes the bench starts, and their cleanup at the end, on error, on SIGINT/SIGTERM
// and by a watchdog, with the temp folder (and the logs in it) kept when the run failed. The
// numbers side (summaries, tables, the JSON under bench/results/) is bench/stats.ts. QUICK, the
// smoke-run switch, is here so that every bench reads the same one.
//
//   await runBench("upload", async (b) => {
//     const mesh = await b.startMesh({ regions: [...] });   // stopped by the harness
//     ... measure, printTable(...), await b.saveResults({ ... }) ...
//   });
import { spawn } from "node:child_process";
import { closeSync, mkdirSync, openSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import { useLocalAgent } from "../local/keep-alive.js";
import { ROOT, startMesh, type MeshHandle, type MeshOptions, type ProcessInfo } from "../local/mesh.js";
import { machineInfo, writeResults, type MachineInfo } from "./stats.js";

/**
 * The smoke-run switch every bench reads: `--quick` or BENCH_QUICK=1 shortens the measured
 * phases (small counts, short durations), for checking that a bench still runs.
 */
export const QUICK = process.argv.includes("--quick") || process.env.BENCH_QUICK === "1";

/** Progress and diagnostics go to stderr, so stdout carries only the tables. */
export const err = (line: string): void => void process.stderr.write(line + "\n");
export const say = (line = ""): void => void process.stdout.write(line + "\n");

/** A child the bench started: its stdout and stderr go to `log`, under the run's logs/ folder. */
export type BenchChild = ProcessInfo;

export interface Bench {
  /** When the run started, and the machine then (printed at the start, and in the JSON). */
  readonly startedAt: Date;
  readonly machine: MachineInfo;
  /** The run's own temp folder (removed at the end unless the run failed or keep() was called). */
  readonly tmpDir: string;
  /** True once Ctrl-C (SIGINT/SIGTERM) or the watchdog stopped the run: long loops end early. */
  readonly interrupted: boolean;
  /** Keeps the temp folder, e.g. for the logs of a run that went wrong. */
  keep(): void;
  /** Runs `stop` at cleanup; the last registered stops first. */
  defer(stop: () => unknown): void;
  /** startMesh in the temp folder (mesh/), stopped at cleanup even if still starting then. */
  startMesh(opts?: Omit<MeshOptions, "stateDir">): Promise<MeshHandle>;
  /** `node --import tsx <script>` from the repository root, logging to logs/<name>.log; SIGTERM (then SIGKILL) at cleanup. */
  spawnTsx(name: string, script: string, args?: readonly string[], env?: Record<string, string | undefined>): BenchChild;
  /** Stops one child now (SIGTERM, SIGKILL after `graceMs`). */
  stopChild(child: BenchChild, graceMs?: number): Promise<void>;
  /**
   * Writes the run's JSON under bench/results/<file>-*.json (stats.ts writeResults; `file`
   * defaults to the bench's name), led by the fields every bench's result starts with (bench,
   * quick, startedAt, finishedAt, machine: `data` may override them), and prints where it went.
   */
  saveResults(data: Record<string, unknown>, file?: string): Promise<{ file: string; latest: string }>;
}

export interface RunOptions {
  /** Stops the run (and keeps its folder) if it is still going after this long. */
  watchdogMs?: number;
}

/**
 * Runs `main` with a Bench and cleans up after it however it ends. A failure is printed and
 * sets a non-zero exit code; Ctrl-C cleans up and exits 130.
 */
export async function runBench(name: string, main: (b: Bench) => Promise<void>, opts: RunOptions = {}): Promise<void> {
  useLocalAgent(); // the bench's own fetches: local/keep-alive.ts says why
  const startedAt = new Date();
  const machine = machineInfo();
  err(`[bench] ${name}${QUICK ? " (quick)" : ""}: ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}`);
  const tmpDir = await mkdtemp(join(os.tmpdir(), `bench-${name}-`));
  const stops: (() => unknown)[] = [];
  const children = new Set<BenchChild>();
  let keepTmp = !!process.env.BENCH_KEEP; // BENCH_KEEP=1: keep the run's folder (logs) even when it succeeds
  let interrupted = false;

  const stopChild = async (c: BenchChild, graceMs = 5_000): Promise<void> => {
    children.delete(c);
    const p = c.child;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once("exit", () => resolve()));
    p.kill("SIGTERM");
    const force = setTimeout(() => p.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(force);
  };

  let cleaning: Promise<void> | null = null;
  const cleanup = (): Promise<void> => {
    cleaning ??= (async () => {
      for (const stop of stops.splice(0).reverse()) {
        try {
          await stop();
        } catch (e) {
          err(`[bench] cleanup step failed: ${String(e)}`);
        }
      }
      // Last started first, one at a time: a router's nodes (started after it) drain before it goes.
      for (const c of [...children].reverse()) await stopChild(c);
      if (!keepTmp) await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
      else err(`[bench] kept ${tmpDir} (logs under mesh/logs/ and logs/)`);
    })();
    return cleaning;
  };

  const bench: Bench = {
    startedAt,
    machine,
    tmpDir,
    get interrupted() {
      return interrupted;
    },
    keep: () => void (keepTmp = true),
    defer: (stop) => void stops.push(stop),
    startMesh(meshOpts = {}) {
      const starting = startMesh({ progress: err, ...meshOpts, stateDir: join(tmpDir, "mesh") });
      // A mesh still starting at cleanup is stopped once it is up (a failed start stops itself).
      stops.push(async () => {
        const mesh = await starting.catch(() => null);
        if (mesh) {
          err("[bench] stopping the mesh");
          await mesh.stop();
        }
      });
      return starting;
    },
    spawnTsx(childName, script, args = [], env = {}) {
      mkdirSync(join(tmpDir, "logs"), { recursive: true });
      const log = join(tmpDir, "logs", `${childName}.log`);
      const fd = openSync(log, "a");
      const proc = spawn(process.execPath, ["--import", "tsx", join(ROOT, script), ...args], {
        cwd: ROOT,
        // MESH_PARENT_PID: mesh processes exit by themselves when this one dies (runtime/parent-watch.ts).
        env: { ...process.env, MESH_PARENT_PID: String(process.pid), ...env },
        stdio: ["ignore", fd, fd],
      });
      closeSync(fd);
      const child = { name: childName, child: proc, log };
      children.add(child);
      proc.once("exit", () => children.delete(child));
      return child;
    },
    stopChild,
    async saveResults(data, file = name) {
      const head = { bench: name, quick: QUICK, startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), machine };
      const written = await writeResults(file, { ...head, ...data }, undefined, startedAt);
      say();
      say(`results: ${written.file}`);
      say(`         ${written.latest}`);
      return written;
    },
  };

  // Last resort if the process exits without cleanup (an uncaught error): no child outlives it.
  process.once("exit", () => {
    for (const c of children) c.child.kill("SIGKILL");
  });
  const onSignal = (sig: NodeJS.Signals) => {
    if (interrupted) return;
    interrupted = true;
    err(`\n[bench] ${sig}: cleaning up...`);
    void cleanup().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const watchdog =
    opts.watchdogMs === undefined
      ? null
      : setTimeout(() => {
          err(`[bench] watchdog: still running after ${opts.watchdogMs! / 1000} s; stopping`);
          interrupted = true;
          keepTmp = true;
          void cleanup().finally(() => process.exit(1));
        }, opts.watchdogMs);
  watchdog?.unref();

  try {
    await main(bench);
  } catch (e) {
    // An interrupted run fails by design ("interrupted"); its cleanup already decides.
    if (!interrupted) {
      err(`[bench] ${name} failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
      keepTmp = true;
    }
    process.exitCode = 1;
  } finally {
    if (watchdog) clearTimeout(watchdog);
    await cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
