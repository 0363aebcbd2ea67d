// Where a bench's calls spend CPU, per process of the local mesh (bench/mesh-overhead.ts
// --profile): CPU time read from /proc for each process tree (edge: Miniflare's node and its
// workerd; router; node agent and its session children), Redis commands from INFO
// commandstats, and V8 CPU profiles summarised by self time per function within a time window.
// Node processes write their profiles at exit (bench/cpu-profile-preload.cjs); workerd's isolate is profiled
// through its V8 inspector (Miniflare's inspector proxy, local/edge-server.ts
// EDGE_INSPECTOR_PORT), over the Chrome DevTools Protocol. CPU time, unlike wall time, does not
// grow when other work shares the machine, so the per-call figures hold on a busy 2-core box.
// Linux only (/proc); the bench says so and skips the table elsewhere.

import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { basename } from "node:path";
import WebSocket from "ws";

const TICK_MS = 1000 / 100; // USER_HZ: /proc/<pid>/stat counts CPU in 1/100 s

interface ProcRow {
  pid: number;
  ppid: number;
  comm: string;
  cmdline: string;
  cpuMs: number;
}

function readProc(): ProcRow[] {
  const rows: ProcRow[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      // comm may hold spaces and parentheses: the fields after it start after the last ')'.
      const close = stat.lastIndexOf(")");
      const comm = stat.slice(stat.indexOf("(") + 1, close);
      const f = stat.slice(close + 2).split(" ");
      const cmdline = readFileSync(`/proc/${d}/cmdline`, "utf8").replace(/\0/g, " ");
      rows.push({ pid: Number(d), ppid: Number(f[1]), comm, cmdline, cpuMs: (Number(f[11]) + Number(f[12])) * TICK_MS });
    } catch {
      /* gone meanwhile */
    }
  }
  return rows;
}

/**
 * CPU ms used so far by each named root process and its descendants, split by `classify`
 * (e.g. the edge's node process apart from its workerd child).
 */
export function cpuByPart(
  roots: Record<string, number>,
  classify: (root: string, row: { comm: string; cmdline: string }) => string,
): { cpuMs: Record<string, number>; pids: Map<number, string> } {
  const rows = readProc();
  const children = new Map<number, ProcRow[]>();
  for (const r of rows) {
    const list = children.get(r.ppid) ?? [];
    list.push(r);
    children.set(r.ppid, list);
  }
  const byPid = new Map(rows.map((r) => [r.pid, r]));
  const cpuMs: Record<string, number> = {};
  const pids = new Map<number, string>();
  for (const [root, pid] of Object.entries(roots)) {
    const stack = byPid.has(pid) ? [byPid.get(pid)!] : [];
    while (stack.length) {
      const r = stack.pop()!;
      const part = classify(root, r);
      cpuMs[part] = (cpuMs[part] ?? 0) + r.cpuMs;
      pids.set(r.pid, part);
      stack.push(...(children.get(r.pid) ?? []));
    }
  }
  return { cpuMs, pids };
}

/** Pids of the processes whose command line contains every one of `parts`. */
export function pidsMatching(...parts: string[]): number[] {
  return readProc()
    .filter((r) => parts.every((p) => r.cmdline.includes(p)))
    .map((r) => r.pid);
}

/** Every command redis-server has run so far, by name (INFO commandstats). */
export function redisCommandCounts(port: number): Record<string, number> {
  const text = execFileSync("redis-cli", ["-p", String(port), "INFO", "commandstats"], { encoding: "utf8" });
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^cmdstat_(\S+?):calls=(\d+)/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// V8 CPU profiles (the .cpuprofile format: a call tree, samples of node ids, time deltas in µs)

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface SelfTime {
  fn: string;
  ms: number;
  share: number;
}

/** A monotonic clock in µs on the same base as V8's profile timestamps on Linux (CLOCK_MONOTONIC). */
export const monotonicMicros = (): number => Number(process.hrtime.bigint() / 1000n);

/**
 * Self time per function among the samples within [from, to] (µs, monotonic), biggest first.
 * Idle and GC samples are kept apart under their V8 names ("(idle)", "(garbage collector)").
 */
export function selfTimes(profiles: readonly CpuProfile[], from: number, to: number, top = 12): { sampledMs: number; busyMs: number; top: SelfTime[] } {
  const ms = new Map<string, number>();
  let sampled = 0;
  for (const profile of profiles) {
    const names = new Map<number, string>();
    for (const n of profile.nodes) {
      const { functionName, url, lineNumber } = n.callFrame;
      const where = url ? `${basename(url.replace(/^file:\/\//, ""))}:${lineNumber + 1}` : "";
      names.set(n.id, `${functionName || "(anonymous)"}${where ? ` ${where}` : ""}`);
    }
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      const dt = profile.timeDeltas[i] ?? 0;
      t += dt;
      if (t < from || t > to) continue;
      const name = names.get(profile.samples[i]!) ?? "?";
      ms.set(name, (ms.get(name) ?? 0) + dt / 1000);
      sampled += dt / 1000;
    }
  }
  const busy = sampled - (ms.get("(idle)") ?? 0) - (ms.get("(program)") ?? 0);
  const list = [...ms.entries()]
    .filter(([name]) => name !== "(idle)" && name !== "(program)")
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([fn, v]) => ({ fn, ms: v, share: busy > 0 ? v / busy : 0 }));
  return { sampledMs: sampled, busyMs: busy, top: list };
}

/**
 * Inclusive time: per category, the busy samples within any of `windows` ([from, to] µs,
 * monotonic) whose stack (the sampled frame first, then its callers) the category's test
 * accepts, and all busy samples. Counted, not weighted by
 * their time deltas: on a loaded machine a sample taken after the thread waited for a CPU
 * carries the whole wait, which would charge the wall time to whatever code was running then.
 */
export function inclusiveTimes(
  profiles: readonly CpuProfile[],
  windows: readonly (readonly [number, number])[],
  categories: Record<string, (stack: readonly CallFrame[]) => boolean>,
): { busy: number; samples: Record<string, number> } {
  const samples: Record<string, number> = Object.fromEntries(Object.keys(categories).map((k) => [k, 0]));
  let busy = 0;
  for (const profile of profiles) {
    const parent = new Map<number, number>();
    const byId = new Map(profile.nodes.map((n) => [n.id, n]));
    for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
    // Per node: the categories its stack (itself and its callers) falls in, worked out once.
    const hits = new Map<number, string[]>();
    const hitsOf = (id: number): string[] => {
      let h = hits.get(id);
      if (h) return h;
      const frames: CallFrame[] = [];
      for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) frames.push(byId.get(at)!.callFrame);
      h = Object.keys(categories).filter((k) => categories[k]!(frames));
      hits.set(id, h);
      return h;
    };
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      const dt = profile.timeDeltas[i] ?? 0;
      t += dt;
      if (!windows.some(([from, to]) => t >= from && t <= to)) continue;
      const node = byId.get(profile.samples[i]!);
      const name = node?.callFrame.functionName;
      if (name === "(idle)" || name === "(program)") continue;
      busy++;
      for (const k of hitsOf(profile.samples[i]!)) samples[k]!++;
    }
  }
  return { busy, samples };
}

/** The .cpuprofile files bench/cpu-profile-preload.cjs wrote into `dir`, by the pid in their names. */
export function readNodeProfiles(dir: string): Map<number, CpuProfile> {
  const out = new Map<number, CpuProfile>();
  let files: string[] = [];
  try {
    files = readdirSync(dir);
  } catch {
    return out;
  }
  for (const f of files) {
    const m = /^CPU\.(\d+)\.cpuprofile$/.exec(f);
    if (m) out.set(Number(m[1]), JSON.parse(readFileSync(`${dir}/${f}`, "utf8")) as CpuProfile);
  }
  return out;
}

/** The sampling interval InspectorProfiler asks for, µs. */
export const INSPECTOR_SAMPLING_US = 200;

/** A V8 CPU profile of one workerd isolate, started and stopped over the inspector. */
export class InspectorProfiler {
  private nextId = 1;
  private readonly pending = new Map<number, (v: unknown) => void>();

  private constructor(private readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const msg = JSON.parse(String(data)) as { id?: number; result?: unknown };
      if (msg.id !== undefined) this.pending.get(msg.id)?.(msg.result);
    });
  }

  static async connect(url: string): Promise<InspectorProfiler> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    return new InspectorProfiler(ws);
  }

  private send(method: string, params: Record<string, unknown> = {}): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`inspector: ${method} got no answer`)), 30_000);
      this.pending.set(id, (v) => {
        clearTimeout(timer);
        this.pending.delete(id);
        resolve(v);
      });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  async start(): Promise<void> {
    await this.send("Profiler.enable");
    await this.send("Profiler.setSamplingInterval", { interval: INSPECTOR_SAMPLING_US });
    await this.send("Profiler.start");
  }

  async stop(): Promise<CpuProfile> {
    const r = (await this.send("Profiler.stop")) as { profile: CpuProfile };
    this.ws.close();
    return r.profile;
  }
}
