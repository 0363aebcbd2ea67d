// The mesh on the multi-host topology (local/topology.ts: a network namespace per colo and per
// region, links with the link table's delay): what crossing real links costs and how routing
// and failover behave on them. Phases, all in one run:
//
//   1. overhead   from inside each colo's namespace, sequential calls to its edge for a copy of
//                 demo-mlp restricted to the colo's nearest region (so every call crosses that
//                 one link), against the baseline: a plain HTTP echo in the region's namespace,
//                 called across the same link from the same namespace. Added latency = mesh
//                 minus echo, p50/p99, and the ratio mesh / echo.
//   2. accuracy   the best region in hindsight per colo: p50 of calls forced to each region
//                 (copies restricted by data residency); then demo-mlp with the edge choosing,
//                 from every colo at once: share of calls in the best region.
//   3. failover   steady calls from ICN, one started every FAILOVER_TICK_MS whatever the others
//                 do (many callers, as at a real colo: one caller waiting on a dead link must
//                 not hide what the next callers get); the ICN <-> ap-seoul link cut (both ends
//                 down): time until calls are answered from us-west, calls that failed meanwhile; the link
//                 restored: time until calls are back in ap-seoul. Then the same with the link
//                 up but silent (loss 1: nothing is lost, calls hear nothing). Ratios against
//                 ICN's link round trip.
//
// Needs root, iproute2, /dev/net/tun (or netem). Run: npx tsx bench/multi-host.ts [--quick]
// Prints tables, writes bench/results/multi-host-<ISO>.json and multi-host-latest.json.
//
// The bench also runs as its own prober inside a namespace (`--probe <url> <n> [<auth>]`):
// sequential keep-alive calls (after one uncounted), their latencies as one JSON line on stdout.

import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { nearestRegion } from "../local/link-table.js";
import { multiHostUnavailable, startHostsMesh, type HostsMesh } from "../local/topology.js";
import { QUICK, runBench } from "./harness.js";
import { fmt, formatTable, machineInfo, ratio, round, summarize, type Summary } from "./stats.js";

const SELF = fileURLToPath(import.meta.url);
const BODY = JSON.stringify({ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] });

if (process.argv[2] === "--probe") {
  const [url, n, auth] = [process.argv[3]!, Number(process.argv[4]), process.argv[5]];
  const ms: number[] = [];
  const regions: Record<string, number> = {};
  // One call first, not counted: a fresh Node process's first fetch pays undici's own start
  // (80-190 ms measured here), which in a --quick run (60 calls) would be the p99 by itself.
  for (let i = -1; i < n; i++) {
    const t = performance.now();
    // accept-encoding: identity, as the echo compresses nothing: otherwise the local edge (like
    // Cloudflare's) gzips even a 200-byte JSON answer, about 1 ms there and more in the caller's
    // unzip, a cost of the caller's choice rather than of the mesh's path.
    const res = await fetch(url, { method: "POST", body: BODY, headers: { "content-type": "application/json", "accept-encoding": "identity", ...(auth ? { authorization: auth } : {}) } });
    await res.arrayBuffer();
    if (res.status !== 200) throw new Error(`probe: ${url} answered ${res.status}`);
    if (i < 0) continue;
    ms.push(performance.now() - t);
    const r = res.headers.get("x-mesh-region");
    if (r) regions[r] = (regions[r] ?? 0) + 1;
  }
  process.stdout.write(JSON.stringify({ ms, regions }) + "\n");
  process.exit(0);
}

const N_OVERHEAD = QUICK ? 60 : 300;
const N_ORACLE = QUICK ? 20 : 60;
const N_MIXED = QUICK ? 60 : 200;
const REGIONS = ["us-west", "ap-seoul"];
const COLOS = ["ICN", "SJC"];
const DEADLINE_MS = 4_000;
/** Failover phase: a new call from ICN this often, not waiting for the ones still out. */
const FAILOVER_TICK_MS = 50;
/** Failover phase: how long a fault is held once traffic has moved (past DEADLINE_MS). */
const FAULT_HOLD_MS = 6_000;
/** Traffic has moved once a MOVED_WINDOW_MS window of calls is answered there at MOVED_SHARE; given up after MOVE_BOUND_MS. */
const MOVED_WINDOW_MS = 1_000;
const MOVED_SHARE = 0.9;
const MOVE_BOUND_MS = 20_000;
const say = (line: string) => process.stdout.write(line + "\n");

const why = multiHostUnavailable();
if (why) {
  say(`[multi-host] cannot run here: ${why}`);
  process.exit(0);
}


async function json(url: string, init: RequestInit & { key: string }): Promise<any> {
  const res = await fetch(url, { ...init, headers: { authorization: `Bearer ${init.key}`, ...(init.headers as Record<string, string>) } });
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method ?? "GET"} ${url} -> ${res.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

/** Runs this file's prober inside `ns`. */
/**
 * Runs this file's prober inside `ns`. Asynchronously: this process also serves the Upstash REST
 * stand-in (local/mesh.ts), and a synchronous wait here left every Redis request the edges made
 * meanwhile unanswered until it timed out (calls that waited on one took 370 ms to 2.4 s: the
 * p99 of earlier runs), an artefact no deployment has.
 */
async function probe(ns: string, url: string, n: number, auth?: string): Promise<{ ms: number[]; regions: Record<string, number> }> {
  const child = spawn("ip", ["netns", "exec", ns, process.execPath, "--import", "tsx", SELF, "--probe", url, String(n), ...(auth ? [auth] : [])], {
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 300_000,
  });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
  const code = await new Promise<number | null>((res) => child.once("close", res));
  if (code !== 0) throw new Error(`probe in ${ns} exited with ${code}`);
  return JSON.parse(out.trim().split("\n").at(-1)!);
}

interface Shot {
  ok: boolean;
  region: string | null;
  code: string | null;
  start: number;
  end: number;
}
async function shoot(mesh: HostsMesh["mesh"], colo: string, model: string): Promise<Shot> {
  const start = Date.now();
  try {
    const res = await fetch(`${mesh.colos[colo]}/v2/models/${model}/infer`, {
      method: "POST",
      body: BODY,
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json", "x-mesh-timeout-ms": String(DEADLINE_MS) },
      signal: AbortSignal.timeout(DEADLINE_MS + 5_000),
    });
    const text = await res.text();
    const code = res.status === 200 ? null : ((JSON.parse(text) as { code?: string }).code ?? String(res.status));
    return { ok: res.status === 200, region: res.headers.get("x-mesh-region"), code, start, end: Date.now() };
  } catch (err) {
    return { ok: false, region: null, code: `client:${(err as Error).name}`, start, end: Date.now() };
  }
}

await runBench(
  "multi-host",
  async (b) => {
    say(`[multi-host] starting the mesh on a multi-host topology (${COLOS.join(", ")} x ${REGIONS.join(", ")})...`);
    // Stopped at cleanup even if still starting then (a failed start stops itself).
    const starting = startHostsMesh({ stateDir: join(b.tmpDir, "mesh"), tinyGpt: false, demoChat: false, colos: COLOS });
    b.defer(async () => (await starting.catch(() => null))?.stop());
    const h: HostsMesh = await starting;
    const { mesh, topology } = h;
    const key = mesh.apiKey;
    say(`[multi-host] links: ${topology.mode}`);

    // Copies of demo-mlp restricted to one region each (forced calls), all held warm.
    const file = mesh.models.find((m) => m.name === "demo-mlp")!.file;
    const models = ["demo-mlp", ...REGIONS.map((r) => `mlp-${r}`)];
    for (const r of REGIONS) {
      const name = `mlp-${r}`;
      await json(`${mesh.edge}/v1/models`, { key, method: "POST", body: JSON.stringify({ name }), headers: { "content-type": "application/json" } });
      await json(`${mesh.edge}/v1/models/${name}/versions`, { key, method: "POST", body: await readFile(file), headers: { "content-type": "application/octet-stream" } });
      await json(`${mesh.edge}/v1/models/${name}`, { key, method: "PUT", body: JSON.stringify({ regions: [r], keepWarm: 1 }), headers: { "content-type": "application/json" } });
    }
    await json(`${mesh.edge}/v1/models/demo-mlp`, { key, method: "PUT", body: JSON.stringify({ keepWarm: 1 }), headers: { "content-type": "application/json" } });
    const until = Date.now() + 120_000;
    for (const r of REGIONS) {
      for (;;) {
        const warm = (await mesh.regionStatus(r)).warm.length;
        if (warm >= 2) break;
        if (Date.now() > until) throw new Error(`models not warm in ${r}`);
        await new Promise((res) => setTimeout(res, 250));
      }
    }
    // Warm-up: every colo's edge measures both links (not counted).
    for (const colo of COLOS) for (const m of models) for (let i = 0; i < 10; i++) await shoot(mesh, colo, m);

    // 1. overhead --------------------------------------------------------------------------------
    say("[multi-host] 1/3 overhead: mesh vs a plain HTTP echo across the same link");
    const overhead: Record<string, { region: string; linkRttMs: number; echo: Summary; mesh: Summary }> = {};
    for (const colo of COLOS) {
      const region = nearestRegion(colo, REGIONS)!;
      const ns = topology.regions[region]!.ns;
      const port = 18000 + Math.floor(Math.random() * 1000);
      // The echo: a plain Node HTTP server on the region's host, answering a small body.
      const echo = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", `require("http").createServer((q,s)=>{q.resume();q.on("end",()=>s.end('{"ok":true}'))}).listen(${port},"0.0.0.0",()=>console.log("up"))`], { stdio: ["ignore", "pipe", "inherit"] });
      await new Promise<void>((res) => echo.stdout!.once("data", () => res()));
      try {
        const base = await probe(topology.colos[colo]!.ns, `http://${topology.regionAddressFrom(colo, region)}:${port}/`, N_OVERHEAD);
        const m = await probe(topology.colos[colo]!.ns, `http://127.0.0.1:${new URL(mesh.edge).port}/v2/models/mlp-${region}/infer`, N_OVERHEAD, `Bearer ${key}`);
        overhead[colo] = { region, linkRttMs: topology.link(colo, region).rttMs, echo: summarize(base.ms), mesh: summarize(m.ms) };
      } finally {
        echo.kill("SIGTERM");
      }
    }

    // 2. accuracy --------------------------------------------------------------------------------
    say("[multi-host] 2/3 accuracy: best region in hindsight, then the edge choosing");
    const oracle: Record<string, Record<string, Summary>> = {};
    for (const colo of COLOS) {
      oracle[colo] = {};
      for (const r of REGIONS) {
        const ms: number[] = [];
        for (let i = 0; i < N_ORACLE; i++) {
          const s = await shoot(mesh, colo, `mlp-${r}`);
          if (s.ok) ms.push(s.end - s.start);
        }
        oracle[colo]![r] = summarize(ms);
      }
    }
    const best = Object.fromEntries(COLOS.map((c) => [c, REGIONS.reduce((a, b) => (oracle[c]![b]!.p50 < oracle[c]![a]!.p50 ? b : a))]));
    const mixed: Record<string, { shots: Shot[] }> = {};
    await Promise.all(
      COLOS.map(async (colo) => {
        const shots: Shot[] = [];
        for (let i = 0; i < N_MIXED; i++) shots.push(await shoot(mesh, colo, "demo-mlp"));
        mixed[colo] = { shots };
      }),
    );

    // 3. failover --------------------------------------------------------------------------------
    // Twice: the link cut (both ends down: connections are lost, the edge hears it), then the link
    // up but silent (every packet dropped: nothing is lost, calls just hear nothing).
    type LinkChange = Parameters<typeof topology.setLink>[2];
    const icnRtt = topology.link("ICN", "ap-seoul").rttMs;
    const failoverRun = async (fault: LinkChange, heal: LinkChange) => {
      const steady: Shot[] = [];
      let stop = false;
      const inFlight: Promise<void>[] = [];
      const loop = (async () => {
        while (!stop) {
          inFlight.push(shoot(mesh, "ICN", "demo-mlp").then((s) => void steady.push(s)));
          await new Promise((res) => setTimeout(res, FAILOVER_TICK_MS));
        }
        await Promise.all(inFlight);
      })();
      /**
       * When traffic settled where `pred` says: the start of the first MOVED_WINDOW_MS window after
       * `after` whose calls (all ended) `pred` accepts at MOVED_SHARE or more. A single answer from
       * the other region proves nothing: the edge's exploration sends 2% of calls there anyway.
       */
      const settledAt = (pred: (s: Shot) => boolean, after: number): number | null => {
        const sorted = steady.filter((s) => s.start >= after).sort((a, b) => a.start - b.start);
        for (let i = 0; i < sorted.length; i++) {
          const from = sorted[i]!.start;
          const win = sorted.slice(i).filter((s) => s.start < from + MOVED_WINDOW_MS);
          if (win.length < MOVED_WINDOW_MS / FAILOVER_TICK_MS / 2 || win[win.length - 1]!.start === sorted[sorted.length - 1]!.start) return null;
          if (win.filter(pred).length >= MOVED_SHARE * win.length) return from;
        }
        return null;
      };
      const waitFor = async (pred: (s: Shot) => boolean, after: number, boundMs: number) => {
        const t = Date.now() + boundMs;
        for (;;) {
          const at = settledAt(pred, after);
          if (at !== null) return at;
          if (Date.now() > t) return null;
          await new Promise((res) => setTimeout(res, 50));
        }
      };
      const inWest = (s: Shot) => s.ok && s.region === "us-west";
      const inSeoul = (s: Shot) => s.ok && s.region === "ap-seoul";
      await waitFor(inSeoul, Date.now(), 30_000);
      const cutAt = Date.now();
      await topology.setLink("ICN", "ap-seoul", fault);
      await waitFor(inWest, cutAt, MOVE_BOUND_MS);
      // Held past a deadline, so the calls stuck on the link end (and a silent region is probed) before it heals.
      await new Promise((res) => setTimeout(res, FAULT_HOLD_MS));
      const restoredAt = Date.now();
      await topology.setLink("ICN", "ap-seoul", heal);
      await waitFor(inSeoul, restoredAt, 120_000);
      stop = true;
      await loop;
      const movedAt = settledAt(inWest, cutAt) ?? NaN;
      const backAt = settledAt(inSeoul, restoredAt) ?? NaN;
      const failed = steady.filter((s) => s.start >= cutAt && !(s.start >= movedAt) && s.start < restoredAt && !s.ok);
      const whileCut = steady.filter((s) => s.start >= cutAt && s.start < restoredAt);
      return {
        linkRttMs: icnRtt,
        moveMs: movedAt - cutAt,
        moveOverLinkRtt: ratio(movedAt - cutAt, icnRtt),
        callsFailedWhileMoving: failed.length,
        callsWhileCut: whileCut.length,
        callsFailedWhileCut: whileCut.filter((s) => !s.ok).length,
        tickMs: FAILOVER_TICK_MS,
        failureCodes: whileCut.filter((s) => !s.ok).reduce<Record<string, number>>((a, s) => ((a[s.code!] = (a[s.code!] ?? 0) + 1), a), {}),
        returnMs: backAt - restoredAt,
        returnOverLinkRtt: ratio(backAt - restoredAt, icnRtt),
        deadlineMs: DEADLINE_MS,
      };
    };
    const baseLoss = topology.link("ICN", "ap-seoul").loss;
    say("[multi-host] 3/3 failover: the ICN <-> ap-seoul link cut, then restored");
    const failover = await failoverRun({ up: false }, { up: true });
    say("[multi-host] 3/3 failover: the ICN <-> ap-seoul link silent (every packet dropped), then healed");
    const silent = await failoverRun({ loss: 1 }, { loss: baseLoss });

    // Report --------------------------------------------------------------------------------------
    const accuracy = Object.fromEntries(
      COLOS.map((c) => {
        const shots = mixed[c]!.shots;
        const inBest = shots.filter((s) => s.ok && s.region === best[c]).length;
        const failed = shots.filter((s) => !s.ok);
        const codes = failed.reduce<Record<string, number>>((a, s) => ((a[s.code!] = (a[s.code!] ?? 0) + 1), a), {});
        return [c, { best: best[c], share: inBest / shots.length, calls: shots.length, failed: failed.length, codes, oracleP50: Object.fromEntries(REGIONS.map((r) => [r, round(oracle[c]![r]!.p50)])) }];
      }),
    );
    say("");
    say(`Multi-host mesh (${topology.mode} links) — ${machineInfo().cpus} CPUs, node ${process.version}${QUICK ? ", --quick" : ""}`);
    say("");
    say("Overhead: the mesh's added latency on top of the link's own round trip (plain HTTP echo across the same link, same namespace)");
    say(
      formatTable(
        ["colo", "region", "link RTT", "echo p50", "mesh p50", "added p50", "echo p99", "mesh p99", "added p99", "mesh/echo p50"],
        Object.entries(overhead).map(([c, o]) => [c, o.region, fmt(o.linkRttMs, 0), fmt(o.echo.p50), fmt(o.mesh.p50), fmt(o.mesh.p50 - o.echo.p50), fmt(o.echo.p99), fmt(o.mesh.p99), fmt(o.mesh.p99 - o.echo.p99), fmt(ratio(o.mesh.p50, o.echo.p50))]),
      ),
    );
    say("");
    say("Routing accuracy against the best region in hindsight (p50 of calls forced to each region)");
    say(
      formatTable(
        ["colo", ...REGIONS.map((r) => `forced ${r} p50`), "best", "share in best", "failed"],
        COLOS.map((c) => [c, ...REGIONS.map((r) => fmt(oracle[c]![r]!.p50)), best[c]!, `${fmt(accuracy[c]!.share * 100, 1)}%`, accuracy[c]!.failed ? `${accuracy[c]!.failed} ${JSON.stringify(accuracy[c]!.codes)}` : "0"]),
      ),
    );
    say("");
    say(`Failover: the ICN <-> ap-seoul link cut (both ends down) or silent (loss 1), under steady calls from ICN (one started every ${FAILOVER_TICK_MS} ms, ${DEADLINE_MS} ms deadline, fault held ${FAULT_HOLD_MS} ms after traffic moved)`);
    say(
      formatTable(
        ["fault", "link RTT", "moved after ms", "moved / RTT", "failed while moving", "failed / calls while faulty", "codes", "back after heal ms", "back / RTT"],
        (
          [
            ["cut", failover],
            ["silent", silent],
          ] as const
        ).map(([name, f]) => [name, fmt(icnRtt, 0), fmt(f.moveMs, 0), fmt(f.moveOverLinkRtt, 1), String(f.callsFailedWhileMoving), `${f.callsFailedWhileCut} / ${f.callsWhileCut}`, JSON.stringify(f.failureCodes), fmt(f.returnMs, 0), fmt(f.returnOverLinkRtt, 1)]),
      ),
    );
    await b.saveResults({
      links: topology.mode,
      linkTable: Object.fromEntries(COLOS.map((c) => [c, Object.fromEntries(REGIONS.map((r) => [r, topology.link(c, r)]))])),
      overhead: Object.fromEntries(
        Object.entries(overhead).map(([c, o]) => [c, { ...o, addedP50Ms: round(o.mesh.p50 - o.echo.p50), addedP99Ms: round(o.mesh.p99 - o.echo.p99), meshOverEchoP50: round(ratio(o.mesh.p50, o.echo.p50)) }]),
      ),
      accuracy,
      failover,
      silent,
    });
  },
  { watchdogMs: 20 * 60_000 },
);
