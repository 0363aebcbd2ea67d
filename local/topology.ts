// A multi-host topology on one Linux machine: every colo (its edge, and the callers there) and
// every region (its router and nodes) is a "host" of its own, a network namespace, and each
// colo is joined to each region by a link with the round trip, jitter and loss of the link
// table (local/link-table.ts). Packets really cross those links, so the edge's latency model
// learns the geography from them. A link is a veth pair under `tc netem` where the kernel has
// netem; otherwise a pair of TUN devices joined by scripts/net/delay-line.py (a userspace delay
// line: same figures, changeable at run time). Besides the links, every host has a management
// veth on a bridge in the root namespace, without delay: Redis (the Upstash REST stand-in)
// listens there, nodes download artifacts from the edge over it (R2 is not a colo-to-region
// hop), and the launcher and tests reach every part through it.
//
// Names carry a prefix with the creating process's id (mhn<pid in base 36>), so concurrent runs
// never collide and a crashed run's leftovers are found and removed by the next one.

import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { accessSync, constants, existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { COLOS } from "../edge/geo.js";
import { DEFAULT_HOST_COLOS, LINK_TABLE, type LinkSpec } from "./link-table.js";
import { DEFAULT_REGIONS, ROOT, startMesh, type HostLayout, type MeshHandle, type MeshOptions } from "./mesh.js";

const PREFIX_RE = /^mhn([0-9a-z]+)(-|br$)/;
const DELAY_LINE = join(ROOT, "scripts/net/delay-line.py");
const PYTHON = existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

export interface HostAddress {
  /** The network namespace. */
  ns: string;
  /** Its address on the management bridge (reachable from the root namespace and every host). */
  address: string;
}

export interface LinkState extends LinkSpec {
  up: boolean;
}

export interface Topology {
  prefix: string;
  /** How links are emulated: the kernel's netem, or the userspace delay line. */
  mode: "netem" | "delay-line";
  /** The root namespace's address on the management bridge (Redis's REST endpoint listens there). */
  servicesAddress: string;
  colos: Record<string, HostAddress>;
  regions: Record<string, HostAddress>;
  /** A region's address on its link with `colo`: what that colo's edge calls it at. */
  regionAddressFrom(colo: string, region: string): string;
  /** The argv prefix that runs a command on a host. */
  exec(ns: string): string[];
  /** The link's current figures. */
  link(colo: string, region: string): LinkState;
  /**
   * Changes a link at run time: round trip, jitter, loss, or cut (up: false: both ends set down,
   * and nothing crosses) and restore. For a link that silently eats packets, set loss 1.
   */
  setLink(colo: string, region: string, change: Partial<LinkState>): Promise<void>;
  /** Removes every namespace, link and bridge it made (idempotent). */
  destroy(): Promise<void>;
}

export interface TopologyOptions {
  colos: readonly string[];
  regions: readonly string[];
  table?: typeof LINK_TABLE;
  /** "auto" (default): netem when the kernel has it, else the delay line. */
  links?: "auto" | "netem" | "delay-line";
  progress?: (line: string) => void;
}

function ip(args: string[]): string {
  try {
    return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (err) {
    const e = err as { stderr?: string };
    throw new Error(`ip ${args.join(" ")}: ${(e.stderr ?? String(err)).trim()}`);
  }
}

function tryRun(cmd: string, args: string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** Why the multi-host mode cannot run here (null: it can): it needs root, iproute2 and /dev/net/tun or netem. */
export function multiHostUnavailable(): string | null {
  if (process.platform !== "linux") return "network namespaces need Linux";
  if (process.getuid?.() !== 0) return "creating network namespaces needs root (run as root, as CI does)";
  if (!tryRun("ip", ["-V"])) return "`ip` (iproute2) is not on the PATH (apt-get install iproute2)";
  try {
    accessSync("/dev/net/tun", constants.R_OK | constants.W_OK);
  } catch {
    if (!netemAvailable()) return "neither `tc netem` nor /dev/net/tun is available to emulate links";
  }
  if (!netemAvailable() && !existsSync(PYTHON) && !tryRun(PYTHON, ["-V"])) return "python3 is needed for the delay line (the kernel has no netem)";
  return null;
}

let netemProbe: boolean | null = null;
/** Whether the kernel has `tc netem` (probed once, in a throwaway namespace). */
export function netemAvailable(): boolean {
  if (netemProbe !== null) return netemProbe;
  const ns = `mhn${process.pid.toString(36)}-probe`;
  netemProbe = false;
  if (tryRun("ip", ["netns", "add", ns])) {
    tryRun("ip", ["-n", ns, "link", "set", "lo", "up"]);
    netemProbe = tryRun("tc", ["-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]);
    tryRun("ip", ["netns", "del", ns]);
  }
  return netemProbe;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes namespaces and bridges left by runs whose process is gone; returns what it removed. */
export function cleanStale(): string[] {
  const removed: string[] = [];
  const stale = (name: string) => {
    const m = PREFIX_RE.exec(name);
    if (!m) return false;
    const pid = parseInt(m[1]!, 36);
    return pid !== process.pid && !alive(pid);
  };
  for (const line of ip(["netns", "list"]).split("\n")) {
    const name = line.split(" ")[0]!;
    if (name && stale(name) && tryRun("ip", ["netns", "del", name])) removed.push(name);
  }
  for (const line of ip(["-o", "link", "show", "type", "bridge"]).split("\n")) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1];
    if (name && stale(name) && tryRun("ip", ["link", "del", name])) removed.push(name);
  }
  return removed;
}

/** A /16 under 10/8 that no interface of this machine uses yet. */
function freeSubnet(): number {
  const used = ip(["-4", "-o", "addr"]);
  for (let tries = 0; tries < 200; tries++) {
    const b = 100 + Math.floor(Math.random() * 150);
    if (!used.includes(` 10.${b}.`)) return b;
  }
  throw new Error("no free 10.x.0.0/16 for the topology");
}

export async function createTopology(opts: TopologyOptions): Promise<Topology> {
  const why = multiHostUnavailable();
  if (why) throw new Error(`multi-host mode unavailable: ${why}`);
  const table = opts.table ?? LINK_TABLE;
  const progress = opts.progress ?? (() => undefined);
  const mode = opts.links === "netem" || opts.links === "delay-line" ? opts.links : netemAvailable() ? "netem" : "delay-line";
  const removed = cleanStale();
  if (removed.length) progress(`[hosts] removed leftovers of a crashed run: ${removed.join(", ")}`);

  const prefix = `mhn${process.pid.toString(36)}`;
  const net = freeSubnet();
  const bridge = `${prefix}br`;
  const servicesAddress = `10.${net}.0.1`;
  const made: string[] = [];
  let delayLine: ChildProcess | null = null;
  const states = new Map<string, LinkState & { index: number; ends: [string, string] }>();
  const key = (colo: string, region: string) => `${colo}~${region}`;
  const acks: (() => void)[] = [];

  const destroy = async () => {
    if (delayLine && delayLine.exitCode === null) {
      const gone = new Promise((r) => delayLine!.once("exit", r));
      delayLine.stdin?.end();
      delayLine.kill("SIGTERM");
      await gone;
    }
    for (const ns of made.splice(0)) tryRun("ip", ["netns", "del", ns]);
    tryRun("ip", ["link", "del", bridge]);
  };
  // Even when the launcher exits without calling destroy (an exception, process.exit).
  process.once("exit", () => {
    delayLine?.kill("SIGKILL");
    for (const ns of made) tryRun("ip", ["netns", "del", ns]);
    tryRun("ip", ["link", "del", bridge]);
  });

  try {
    ip(["link", "add", bridge, "type", "bridge"]);
    ip(["addr", "add", `${servicesAddress}/24`, "dev", bridge]);
    ip(["link", "set", bridge, "up"]);

    let hostIndex = 0;
    const makeHost = (label: string): HostAddress => {
      const ns = `${prefix}-${label}`;
      ip(["netns", "add", ns]);
      made.push(ns);
      ip(["-n", ns, "link", "set", "lo", "up"]);
      const k = hostIndex++;
      const outside = `${prefix}m${k}`;
      const address = `10.${net}.0.${10 + k}`;
      ip(["link", "add", outside, "type", "veth", "peer", "name", "mgmt", "netns", ns]);
      ip(["link", "set", outside, "master", bridge]);
      ip(["link", "set", outside, "up"]);
      ip(["-n", ns, "addr", "add", `${address}/24`, "dev", "mgmt"]);
      ip(["-n", ns, "link", "set", "mgmt", "up"]);
      return { ns, address };
    };
    const colos = Object.fromEntries(opts.colos.map((c) => [c, makeHost(c)]));
    const regions = Object.fromEntries(opts.regions.map((r) => [r, makeHost(r)]));
    progress(`[hosts] namespaces: ${[...Object.values(colos), ...Object.values(regions)].map((h) => `${h.ns} (${h.address})`).join(", ")}`);

    // Links: colo side 10.net.(1+i).1, region side 10.net.(1+i).2, point to point.
    let i = 0;
    for (const colo of opts.colos) {
      for (const region of opts.regions) {
        const spec = table[colo]?.[region];
        if (!spec) throw new Error(`the link table has no link from ${colo} to ${region}`);
        const ends: [string, string] = [`${prefix}l${i}c`, `${prefix}l${i}r`];
        states.set(key(colo, region), { ...spec, up: true, index: i, ends });
        i++;
      }
    }
    if (mode === "delay-line") {
      // Raised priority: the delay line stands in for a wire, and on a busy machine a delay line
      // waiting for a CPU adds its wait to every packet (root may raise it; nice ignores -n otherwise).
      const argv = [PYTHON, DELAY_LINE, ...[...states.entries()].map(([k, s]) => `${k}:${s.ends[0]}:${s.ends[1]}`)];
      delayLine = spawn("nice", ["-n", "-10", ...argv], { stdio: ["pipe", "pipe", "inherit"] });
      const lines = createInterface({ input: delayLine.stdout! });
      await new Promise<void>((resolve, reject) => {
        delayLine!.once("exit", (code) => reject(new Error(`delay line exited (${code}) before it was ready`)));
        lines.once("line", (l) => (JSON.parse(l).ready ? resolve() : reject(new Error(`delay line: ${l}`))));
      });
      // Every control line is followed by a stats request; its answer says the change is in.
      lines.on("line", (l) => {
        if (l.startsWith('{"stats"')) acks.shift()?.();
        else progress(`[hosts] delay line: ${l}`);
      });
    }
    for (const [k, s] of states) {
      const [colo, region] = k.split("~") as [string, string];
      const cns = colos[colo]!.ns;
      const rns = regions[region]!.ns;
      const [c, r] = s.ends;
      if (mode === "netem") ip(["link", "add", c, "netns", cns, "type", "veth", "peer", "name", r, "netns", rns]);
      else {
        ip(["link", "set", c, "netns", cns]);
        ip(["link", "set", r, "netns", rns]);
      }
      const ca = `10.${net}.${1 + s.index}.1`;
      const ra = `10.${net}.${1 + s.index}.2`;
      ip(["-n", cns, "addr", "add", ca, "peer", ra, "dev", c]);
      ip(["-n", rns, "addr", "add", ra, "peer", ca, "dev", r]);
      ip(["-n", cns, "link", "set", c, "up"]);
      ip(["-n", rns, "link", "set", r, "up"]);
    }

    const apply = async (colo: string, region: string, s: LinkState & { ends: [string, string] }, verb: "add" | "change") => {
      if (mode === "delay-line") {
        const applied = new Promise<void>((r) => acks.push(r));
        delayLine!.stdin!.write(JSON.stringify({ link: key(colo, region), rttMs: s.rttMs, jitterMs: s.jitterMs, loss: s.loss, up: s.up }) + '\n{"stats":true}\n');
        await applied;
        return;
      }
      // netem: half the round trip on each end's egress; a cut link loses everything.
      const loss = s.up ? s.loss : 1;
      const [cns, rns] = [colos[colo]!.ns, regions[region]!.ns];
      for (const [ns, dev] of [[cns, s.ends[0]], [rns, s.ends[1]]] as const) {
        const args = ["-n", ns, "qdisc", verb, "dev", dev, "root", "netem", "delay", `${s.rttMs / 2}ms`];
        if (s.jitterMs > 0) args.push(`${s.jitterMs}ms`);
        args.push("loss", `${(loss * 100).toFixed(3)}%`);
        execFileSync("tc", args, { stdio: ["ignore", "ignore", "pipe"] });
      }
    };
    for (const [k, s] of states) {
      const [colo, region] = k.split("~") as [string, string];
      await apply(colo, region, s, "add");
    }
    progress(`[hosts] ${states.size} links (${mode}): ${[...states.entries()].map(([k, s]) => `${k} ${s.rttMs} ms`).join(", ")}`);

    const stateOf = (colo: string, region: string) => {
      const s = states.get(key(colo, region));
      if (!s) throw new Error(`no link from ${colo} to ${region}`);
      return s;
    };
    return {
      prefix,
      mode,
      servicesAddress,
      colos,
      regions,
      regionAddressFrom: (colo, region) => `10.${net}.${1 + stateOf(colo, region).index}.2`,
      exec: (ns) => ["ip", "netns", "exec", ns],
      link: (colo, region) => {
        const { rttMs, jitterMs, loss, up } = stateOf(colo, region);
        return { rttMs, jitterMs, loss, up };
      },
      async setLink(colo, region, change) {
        const s = stateOf(colo, region);
        const wasUp = s.up;
        Object.assign(s, change);
        await apply(colo, region, s, "change");
        // A cut is `ip link set ... down` on both ends, as a failed link looks to its hosts: the
        // route goes, new connections fail at once, established ones hear nothing more.
        if (s.up !== wasUp) {
          ip(["-n", colos[colo]!.ns, "link", "set", s.ends[0], s.up ? "up" : "down"]);
          ip(["-n", regions[region]!.ns, "link", "set", s.ends[1], s.up ? "up" : "down"]);
        }
      },
      destroy,
    };
  } catch (err) {
    await destroy();
    throw err;
  }
}

export interface HostsMesh {
  mesh: MeshHandle;
  topology: Topology;
  /** Stops every process, then removes the topology. */
  stop(): Promise<void>;
}

/**
 * The whole mesh in the multi-host mode: a topology with a host per colo and per region, then
 * startMesh with an edge on every colo's host and each region's router and nodes on its own.
 */
export async function startHostsMesh(opts: MeshOptions & { colos?: readonly string[]; links?: TopologyOptions["links"] } = {}): Promise<HostsMesh> {
  const regions = opts.regions ?? DEFAULT_REGIONS;
  const colos = opts.colos ?? DEFAULT_HOST_COLOS;
  for (const c of colos) if (!COLOS[c]) throw new Error(`unknown colo ${c} (edge/geo.ts lists the known ones)`);
  const topology = await createTopology({ colos, regions: regions.map((r) => r.name), links: opts.links, progress: opts.progress });
  const hosts: HostLayout = {
    exec: topology.exec,
    servicesAddress: topology.servicesAddress,
    regions: Object.fromEntries(regions.map((r) => [r.name, { host: topology.regions[r.name]!.ns, address: topology.regions[r.name]!.address }])),
    colos: colos.map((c) => ({
      colo: c,
      lat: COLOS[c]![0],
      lon: COLOS[c]![1],
      host: topology.colos[c]!.ns,
      address: topology.colos[c]!.address,
      regionAddress: Object.fromEntries(regions.map((r) => [r.name, topology.regionAddressFrom(c, r.name)])),
    })),
  };
  let mesh: MeshHandle;
  try {
    // Between hosts the parts speak TLS by default (routers with certificates from a CA made at
    // start, nodes and edges trusting it), as issue 15 asks of the multi-host mode.
    mesh = await startMesh({ ...opts, tls: opts.tls ?? true, regions, hosts });
  } catch (err) {
    await topology.destroy();
    throw err;
  }
  return {
    mesh,
    topology,
    async stop() {
      await mesh.stop();
      await topology.destroy();
    },
  };
}
