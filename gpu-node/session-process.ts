// The agent's handle on one session child (gpu-node/session-child.ts): forks it, loads the model
// in it, sends it calls one at a time and watches its memory.
//
// Why a child process and not a worker thread (measured with onnxruntime-node 1.30 on Node 20):
// in a worker thread a run does leave the agent's loop free, but Worker.terminate() during a
// run, or even after one, aborts the whole agent process ("terminate called after throwing an
// instance of 'Napi::Error'", exit 134); a run cannot be interrupted from JavaScript either. A
// child process starts in about 150 ms (plus the TypeScript loader), is SIGKILLed in a few ms
// mid-run, and its RSS is its model's memory, which resourceLimits could not bound in a worker
// (they cover the JS heap only; onnxruntime allocates natively). So: one child per worker.
//
// Memory is read from /proc/<pid>/status (VmRSS) while the child lives: the child's RSS above
// what it had before the load is the session's memory. Past `memoryLimitBytes` the child is
// killed, during a load (a constant-folding bomb) as during a run.

import { fork, type ChildProcess } from "node:child_process";
import { closeSync, openSync, readSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { WireTensor } from "../formats/tensor.js";
import type { GenReply, GenRequest } from "./child-generations.js";

export type ChildRequest =
  /** memoryLimitBytes: the model's bound, of which the child's generations keep their KV caches within what the load leaves. */
  | { t: "load"; path: string; threads: number; spinning: boolean; executionProviders: string[]; memoryLimitBytes?: number }
  | { t: "run"; id: number; inputs: WireTensor[]; outputs?: string[] }
  | GenRequest;

export type ChildReply =
  | { t: "ready"; rssBytes: number }
  | { t: "loaded"; inputNames: string[]; outputNames: string[]; rssBytes: number }
  | { t: "load_failed"; message: string }
  | { t: "result"; id: number; outputs: WireTensor[]; computeMs: number }
  /** kind too_large: the answer would not fit a frame (the message is the node's own). */
  | { t: "failed"; id: number; message: string; computeMs: number; kind?: "too_large" }
  | GenReply;

/** What a generation's owner hears: the child's replies for it, or that the child is gone. */
export type GenEvent = Exclude<GenReply, { t: "gen_stats" }> | { t: "gen_lost"; id: string; why: SessionProcessError };

/**
 * Why a load or run did not give a result. "unavailable": the call never started (no session
 * to run it); "crashed": the child died, during a run when there was one. `message` may carry onnxruntime's own text (file
 * paths, source references): callers log it and send callers a clean one (see publicMessage).
 */
export type SessionFailure = "load_failed" | "too_big" | "timeout" | "crashed" | "aborted" | "run_failed" | "too_large" | "unavailable";

/**
 * The child's environment: the agent's, less its credentials. The child parses and runs a
 * tenant's file; should a hostile file ever find a hole in onnxruntime, it must not find the
 * node's token (or any other secret) next to it.
 */
function childEnv(): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !/TOKEN|SECRET|PASSWORD|KEY/i.test(k)));
}

export class SessionProcessError extends Error {
  constructor(
    readonly kind: SessionFailure,
    message: string,
    /** Compute spent before the failure, ms (runs only). */
    readonly computeMs = 0,
  ) {
    super(message);
    this.name = "SessionProcessError";
  }
}

export interface SessionOptions {
  path: string;
  threads: number;
  /** Whether onnxruntime's thread pools busy-wait between runs (NODE_ORT_SPINNING; default no). */
  spinning?: boolean;
  executionProviders: string[];
  /** Session memory (RSS above the child's before the load) past which the child is killed. */
  memoryLimitBytes: number;
  loadTimeoutMs: number;
  /** Extra environment for the child (tests find a model's children by it). */
  env?: Record<string, string>;
}

/**
 * What stops a run: the part of AbortSignal the runtime reads, so a caller's AbortSignal serves
 * as one; the node's batcher passes a plainer one (gpu-node/batcher.ts RunStop says why).
 */
export interface StopSignal {
  readonly aborted: boolean;
  readonly reason?: unknown;
  addEventListener(type: "abort", listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: "abort", listener: () => void): void;
}

export interface RunOutcome {
  outputs: WireTensor[];
  computeMs: number;
}

const CHILD = fileURLToPath(new URL(`./session-child${import.meta.url.endsWith(".ts") ? ".ts" : ".js"}`, import.meta.url));
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const POLL_MS = 20;
/**
 * An idle child's memory does not grow, so it is read this seldom: polling every child every
 * 20 ms cost each node agent about a quarter of a CPU with five models loaded
 * (bench/mesh-overhead.ts --profile: open, fstat, read and close of /proc/<pid>/status).
 */
const IDLE_POLL_MS = 1_000;

/** VmRSS from the text of /proc/<pid>/status, bytes; null when it has none (a zombie). */
function vmRss(status: string): number | null {
  const kb = /VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : null;
}

/** A process's resident memory from /proc, bytes; null where there is no /proc. */
export async function rssOf(pid: number): Promise<number | null> {
  try {
    return vmRss(await readFile(`/proc/${pid}/status`, "utf8"));
  } catch {
    return null;
  }
}

/**
 * A child's resident memory, read through one descriptor of its /proc/<pid>/status held open
 * for its life: each reading is one pread on the agent's thread (about 10 µs of CPU), where a
 * readFile (open, fstat, read, read, close on libuv's thread pool, each a wake-up there and back)
 * cost about 120 µs (bench/node-call-cost.ts; the watch reads every 20 ms while a run is in
 * flight). The descriptor names that process only: once it has died a read fails (null), it
 * never reads another process that got its pid.
 */
class RssReader {
  private fd: number | null;
  private readonly buf = Buffer.allocUnsafe(4096);

  constructor(pid: number) {
    try {
      this.fd = openSync(`/proc/${pid}/status`, "r");
    } catch {
      this.fd = null; // no /proc: memory is known from the child's own reports only
    }
  }

  read(): number | null {
    if (this.fd === null) return null;
    try {
      const n = readSync(this.fd, this.buf, 0, this.buf.length, 0);
      return vmRss(this.buf.toString("latin1", 0, n));
    } catch {
      return null;
    }
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

interface Waiting {
  id: number;
  resolve: (r: RunOutcome) => void;
  reject: (e: SessionProcessError) => void;
  started: number;
}

export class SessionProcess {
  inputNames: string[] = [];
  outputNames: string[] = [];
  /** RSS before the load, and the latest reading. */
  private baseRss = 0;
  private rss = 0;
  private nextId = 0;
  private current: Waiting | null = null;
  private killedFor: SessionProcessError | null = null;
  /** The memory watch's next reading, and whether it is the close (POLL_MS) one. */
  private poll: ReturnType<typeof setTimeout> | null = null;
  private pollClose = false;
  private rssReader: RssReader | null = null;
  private exited = false;
  /** Called once when the child dies by itself (a crash) or is killed for memory. */
  onDeath: (why: SessionProcessError) => void = () => undefined;
  /** Generations running in the child, by id: each hears its replies. */
  private readonly gens = new Map<string, (e: GenEvent) => void>();
  /** Tokens the child's generations computed, and the KV cache bytes it holds (its gen_stats). */
  genTokens = 0;
  kvBytes = 0;
  /** Conversation keys of the caches its generations kept (most recent first), from its gen_stats. */
  conversations: { key: string; savedMs: number }[] = [];
  /** Memory above the baseline when the load finished: the floor under KV growth. */
  private loadedBytes = 0;
  /** Called on each gen_stats (the owner sums tokens across children). */
  onGenStats: (tokensDelta: number) => void = () => undefined;

  private constructor(
    private readonly child: ChildProcess,
    private readonly opts: SessionOptions,
  ) {}

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return !this.exited;
  }

  get busy(): boolean {
    return this.current !== null;
  }

  /**
   * The session's memory now: the child's RSS above what it had before the load, and at least
   * the load's memory plus the KV caches its generations hold (RSS lags what was just allocated).
   */
  get memoryBytes(): number {
    return Math.max(0, this.rss - this.baseRss, this.loadedBytes + this.kvBytes);
  }

  get generations(): number {
    return this.gens.size;
  }

  /** Forks a child and loads the model in it; the child is gone again when this rejects. */
  static async start(opts: SessionOptions): Promise<SessionProcess> {
    const child = fork(CHILD, [], {
      cwd: ROOT,
      execArgv: CHILD.endsWith(".ts") ? ["--import", "tsx"] : [],
      serialization: "advanced", // typed arrays cross as they are
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: { ...childEnv(), ...opts.env },
    });
    const p = new SessionProcess(child, opts);
    try {
      await p.load();
      return p;
    } catch (err) {
      p.kill();
      throw err;
    }
  }

  private load(): Promise<void> {
    const { child, opts } = this;
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const done = (err: SessionProcessError | null) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        child.off("message", onMessage);
        if (err) reject(err);
        else resolve();
      };
      const timer = setTimeout(() => {
        this.kill();
        done(new SessionProcessError("timeout", `loading took longer than ${Math.round(opts.loadTimeoutMs / 1000)} s`));
      }, opts.loadTimeoutMs);
      const onMessage = (m: ChildReply) => {
        if (m.t === "ready") {
          this.baseRss = this.rss = m.rssBytes;
          this.startPolling();
          child.send({
            t: "load",
            path: opts.path,
            threads: opts.threads,
            spinning: opts.spinning ?? false,
            executionProviders: opts.executionProviders,
            ...(Number.isFinite(opts.memoryLimitBytes) ? { memoryLimitBytes: opts.memoryLimitBytes } : {}),
          } satisfies ChildRequest);
        } else if (m.t === "loaded") {
          this.rss = Math.max(this.rss, m.rssBytes);
          this.inputNames = m.inputNames;
          this.outputNames = m.outputNames;
          this.loadedBytes = Math.max(0, this.rss - this.baseRss);
          if (this.memoryBytes > opts.memoryLimitBytes) {
            this.kill();
            done(this.tooBig());
          } else {
            done(null);
          }
        } else if (m.t === "load_failed") {
          done(new SessionProcessError("load_failed", m.message));
        }
      };
      child.on("message", onMessage);
      child.on("message", (m: ChildReply) => this.onRunReply(m));
      child.once("exit", (code, signal) => {
        this.exited = true;
        if (this.poll) clearTimeout(this.poll);
        this.rssReader?.close();
        const why = this.killedFor ?? new SessionProcessError("crashed", `the session process exited (${signal ?? `code ${code}`})`);
        done(why);
        const w = this.current;
        this.current = null;
        if (w) w.reject(new SessionProcessError(why.kind, why.message, performance.now() - w.started));
        const gens = [...this.gens];
        this.gens.clear();
        this.kvBytes = 0;
        for (const [id, on] of gens) on({ t: "gen_lost", id, why });
        if (why.kind === "crashed" || why.kind === "too_big") this.onDeath(why);
      });
      child.on("error", () => undefined); // 'exit' follows
    });
  }

  private tooBig(): SessionProcessError {
    const mib = (b: number) => Math.round(b / 2 ** 20);
    return new SessionProcessError("too_big", `the model needs more than ${mib(this.opts.memoryLimitBytes)} MiB of memory (it reached ${mib(this.memoryBytes)} MiB)`);
  }

  private startPolling(): void {
    this.rssReader = new RssReader(this.pid);
    this.armPoll();
  }

  /**
   * Schedules the next reading: POLL_MS away while the child loads (no outputs known yet), runs
   * or generates, when its memory can grow; IDLE_POLL_MS away otherwise. A timer per state, not
   * a 20 ms interval that skips readings when idle: each tick of that woke the agent fifty times
   * a second per child, loaded or not (a bare Node process with a 20 ms interval: 1.8 ms of CPU a
   * second, against 0.1 with a 1 s one).
   */
  private armPoll(): void {
    if (this.exited || !this.rssReader) return;
    this.pollClose = this.outputNames.length === 0 || this.current !== null || this.gens.size > 0;
    this.poll = setTimeout(() => this.readMemory(), this.pollClose ? POLL_MS : IDLE_POLL_MS);
    this.poll.unref();
  }

  /** A run or generation starts: its memory is watched from POLL_MS on, as during a load. */
  private watchClosely(): void {
    if (!this.poll || this.pollClose) return;
    clearTimeout(this.poll);
    this.armPoll();
  }

  private readMemory(): void {
    this.poll = null;
    if (this.exited) return;
    const rss = this.rssReader?.read() ?? null;
    if (rss !== null) {
      this.rss = rss;
      if (this.memoryBytes > this.opts.memoryLimitBytes && !this.killedFor) {
        this.killedFor = this.tooBig();
        this.child.kill("SIGKILL");
      }
    }
    this.armPoll();
  }

  private onRunReply(m: ChildReply): void {
    if (m.t === "gen_stats") {
      const delta = m.tokens - this.genTokens;
      this.genTokens = m.tokens;
      this.kvBytes = m.kvBytes;
      if (m.conversations) this.conversations = m.conversations;
      if (delta > 0) this.onGenStats(delta);
      return;
    }
    if (m.t === "gen_token" || m.t === "gen_done" || m.t === "gen_failed") {
      const on = this.gens.get(m.id);
      if (m.t !== "gen_token") this.gens.delete(m.id);
      on?.(m);
      return;
    }
    if (m.t !== "result" && m.t !== "failed") return;
    const w = this.current;
    if (!w || w.id !== m.id) return;
    this.current = null;
    if (m.t === "result") w.resolve({ outputs: m.outputs, computeMs: m.computeMs });
    else w.reject(new SessionProcessError(m.kind ?? "run_failed", m.message, m.computeMs));
  }

  /**
   * Runs one call. An abort of `signal` kills the child (onnxruntime cannot be interrupted)
   * and rejects with kind "aborted"; the owner replaces the child.
   */
  run(inputs: WireTensor[], outputs: string[] | undefined, signal?: StopSignal): Promise<RunOutcome> {
    if (this.exited) return Promise.reject(new SessionProcessError("unavailable", "the session process is gone"));
    if (this.current) return Promise.reject(new Error("SessionProcess.run: busy (one call at a time)"));
    if (signal?.aborted) return Promise.reject(new SessionProcessError("aborted", String(signal.reason ?? "aborted")));
    const id = ++this.nextId;
    return new Promise<RunOutcome>((resolve, reject) => {
      const onAbort = () => {
        if (this.current?.id !== id) return;
        this.killedFor ??= new SessionProcessError("aborted", String(signal?.reason ?? "aborted"));
        this.child.kill("SIGKILL");
      };
      const cleanup = () => signal?.removeEventListener("abort", onAbort);
      this.current = {
        id,
        started: performance.now(),
        resolve: (r) => {
          cleanup();
          resolve(r);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.watchClosely();
      this.child.send({ t: "run", id, inputs, ...(outputs ? { outputs } : {}) } satisfies ChildRequest);
    });
  }

  /**
   * Starts a generation in the child; `on` hears its tokens and its end (gen_done, gen_failed,
   * or gen_lost when the child dies first). Credit and cancel go by the same id.
   */
  generate(req: Extract<GenRequest, { t: "gen" }>, on: (e: GenEvent) => void): void {
    if (this.exited) {
      on({ t: "gen_lost", id: req.id, why: new SessionProcessError("unavailable", "the session process is gone") });
      return;
    }
    this.gens.set(req.id, on);
    this.watchClosely();
    this.child.send(req satisfies ChildRequest);
  }

  genCredit(id: string, n: number): void {
    if (this.gens.has(id) && !this.exited) this.child.send({ t: "gen_credit", id, n } satisfies ChildRequest);
  }

  genCancel(id: string): void {
    if (this.gens.has(id) && !this.exited) this.child.send({ t: "gen_cancel", id } satisfies ChildRequest);
  }

  /** Ends the child now (SIGKILL); a run in progress rejects with kind "aborted". */
  kill(): void {
    if (this.exited) return;
    this.killedFor ??= new SessionProcessError("aborted", "the session was stopped");
    this.child.kill("SIGKILL");
  }
}
