// Global routing end to end, through the real parts (edge in workerd, two routers, node agents,
// redis-server behind the Upstash REST stand-in): which region a call lands in for a caller colo
// given simulated round trips, cold starts, region failures (SIGTERM and SIGKILL), data
// residency, a Redis outage, GET /v1/regions and the live /status page in headless Chromium.
//
// Simulated round trips (local mode: x-mesh-colo names the caller's colo, SIMULATED_RTT turns
// distance into real delay on the edge -> region hop):
//   ICN: ap-seoul 10 ms, us-west 120 ms      SJC: ap-seoul 120 ms, us-west 10 ms
// ap-seoul's node takes an extra 1.5 s for every model load (a long cold start), and the edge
// explores the runner-up region with 10% of calls, so "lands in X" below is always a share
// (>= 70% where 90% is expected), never "every call".
//
// One mesh for the file; the tests run in order and build on each other's state (warm models,
// measured round trips, latency history). Anything a test breaks (a stopped router, a stopped
// redis-server) is restored in its `finally`, whatever happened. No assertion is on latency:
// time bounds only keep a broken mesh from hanging the run, and the time traffic takes to move
// is printed, with a generous bound asserted.

import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import type { RegionsView, RegionView } from "../edge/regions-view.js";
import { call, expectError, mlpBody } from "./helpers/mesh-client.js";
import { collectPageErrors, launchBrowser } from "./helpers/browser.js";
import { waitUntil } from "./helpers/region-harness.js";

const SEOUL = "ap-seoul";
const WEST = "us-west";
const SIMULATED_RTT = { ICN: { [SEOUL]: 10, [WEST]: 120 }, SJC: { [SEOUL]: 120, [WEST]: 10 } };
/** Share of a colo's calls that must land in its expected region (10% exploration => ~90%). */
const MIN_SHARE = 0.7;
/** Generous bound for traffic to leave a failed region (measured and printed too). */
const MOVE_BOUND_MS = 10_000;
/** Bound for traffic to come back once a region is warm / up again (node reconnect back-off included). */
const RETURN_BOUND_MS = 30_000;
const ARTIFACTS = join(process.cwd(), "test-artifacts");

let mesh: MeshHandle;
let dir: string;
let modelFile: string;
const seoulDown = { now: false };
const redisDown = { now: false };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (line: string) => process.stdout.write(`[routing-e2e] ${line}\n`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-routing-"));
  mesh = await startMesh({
    stateDir: dir,
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
    edgeVars: { SIMULATED_RTT: JSON.stringify(SIMULATED_RTT), EXPLORATION_SHARE: "0.1" },
    regionNodeEnv: { [SEOUL]: { MESH_SIMULATED_LOAD_MS: "1500" } },
  });
  modelFile = mesh.models.find((m) => m.name === "demo-mlp")!.file;
}, 180_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Calls

interface Shot {
  colo: string;
  model: string;
  status: number;
  region: string | null;
  code: string | null;
  /** Server-Timing load;dur (ms): > 0 when this call waited for a cold start. */
  loadMs: number;
  start: number;
  end: number;
}

const ROW = [[1, 2, 3, 4]];

async function shoot(colo: string, model = "demo-mlp"): Promise<Shot> {
  const start = Date.now();
  try {
    const res = await fetch(`${mesh.edge}/v2/models/${model}/infer`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json", "x-mesh-colo": colo },
      body: JSON.stringify(mlpBody(ROW)),
      signal: AbortSignal.timeout(20_000),
    });
    const text = await res.text();
    let code: string | null = null;
    if (res.status !== 200) {
      try {
        const body = JSON.parse(text) as { code?: string; error?: string };
        code = body.code ?? null;
        if (res.status >= 500) console.log(`[routing-e2e] ${colo} ${model} -> ${res.status}: ${body.error}`);
      } catch {
        code = `non-json: ${text.slice(0, 80)}`;
      }
    }
    const load = /load;dur=([\d.]+)/.exec(res.headers.get("server-timing") ?? "");
    return { colo, model, status: res.status, region: res.headers.get("x-mesh-region"), code, loadMs: load ? Number(load[1]) : 0, start, end: Date.now() };
  } catch (err) {
    return { colo, model, status: 0, region: null, code: `client: ${(err as Error).message}`, loadMs: 0, start, end: Date.now() };
  }
}

async function shots(colo: string, n: number, model = "demo-mlp"): Promise<Shot[]> {
  const out: Shot[] = [];
  for (let i = 0; i < n; i++) out.push(await shoot(colo, model));
  return out;
}

/** Steady traffic from one colo: `workers` callers in a closed loop until stop(). */
function traffic(colo: string, workers: number, model = "demo-mlp") {
  const done: Shot[] = [];
  let stopped = false;
  const loops = Array.from({ length: workers }, async () => {
    while (!stopped) done.push(await shoot(colo, model));
  });
  return {
    shots: done,
    async stop(): Promise<Shot[]> {
      stopped = true;
      await Promise.all(loops);
      return done;
    },
  };
}

const shareIn = (list: Shot[], region: string) => (list.length ? list.filter((s) => s.region === region).length / list.length : 0);
const slowest = (list: Shot[], t0: number) => {
  const s = [...list].sort((a, b) => b.end - b.start - (a.end - a.start))[0];
  return s ? `${s.end - s.start} ms (${s.region ?? s.code}, load ${s.loadMs} ms, started at +${s.start - t0} ms)` : "-";
};
const describeShots = (list: Shot[]) => {
  const by: Record<string, number> = {};
  for (const s of list) {
    const k = s.status === 200 ? s.region ?? "?" : `${s.status} ${s.code}`;
    by[k] = (by[k] ?? 0) + 1;
  }
  return JSON.stringify(by);
};

/** Polls until probe() returns a value, or fails after timeoutMs with the last state. */
async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined | false>, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    await sleep(intervalMs);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${String(last)})` : ""}`);
}

// ---------------------------------------------------------------------------------------------
// The mesh's own views

async function regionsView(): Promise<RegionsView> {
  const a = await call(`${mesh.edge}/v1/regions`, { key: mesh.apiKey });
  if (a.status !== 200) throw new Error(`GET /v1/regions -> ${a.status} ${JSON.stringify(a.body)}`);
  return a.body as RegionsView;
}

const regionOf = (v: RegionsView, name: string): RegionView => {
  const r = v.regions.find((x) => x.name === name);
  if (!r) throw new Error(`no region ${name} in /v1/regions`);
  return r;
};

async function modelKey(name: string, version: number): Promise<string> {
  const m = await call(`${mesh.edge}/v1/models/${name}`, { key: mesh.apiKey });
  expect(m.status, JSON.stringify(m.body)).toBe(200);
  return `${m.body.id}@${version}`;
}

async function warmIn(region: string, key: string): Promise<boolean> {
  const s = await mesh.regionStatus(region);
  return s.models.some((m) => m.key === key && m.replicas > 0);
}

/** The edge sees `region` healthy with a node (its report fresh, through Redis). */
async function edgeSeesHealthy(region: string, timeoutMs = RETURN_BOUND_MS): Promise<void> {
  await until(`edge sees ${region} healthy`, timeoutMs, async () => {
    const r = regionOf(await regionsView(), region);
    return r.health === "healthy" && r.nodes > 0;
  });
}

async function stopSeoul(signal: NodeJS.Signals): Promise<void> {
  seoulDown.now = true;
  await mesh.stopRouter(SEOUL, signal);
}

/** Puts ap-seoul back (router up, node reconnected, the edge seeing it) if a test took it down. */
async function restoreSeoul(): Promise<number> {
  if (!seoulDown.now) return 0;
  const t0 = Date.now();
  await mesh.startRouter(SEOUL);
  seoulDown.now = false;
  await until("ap-seoul's node reconnects", RETURN_BOUND_MS, async () => (await mesh.regionStatus(SEOUL)).nodes.length > 0);
  await edgeSeesHealthy(SEOUL);
  return Date.now() - t0;
}

async function restoreRedis(): Promise<void> {
  if (!redisDown.now) return;
  await mesh.startRedis();
  redisDown.now = false;
}

async function uploadVersion(name: string): Promise<number> {
  const { readFile } = await import("node:fs/promises");
  const up = await call(`${mesh.edge}/v1/models/${name}/versions`, {
    key: mesh.apiKey,
    body: await readFile(modelFile),
    headers: { "content-type": "application/octet-stream" },
  });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  return up.body.version as number;
}

async function createModel(name: string): Promise<number> {
  const created = await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return uploadVersion(name);
}

/**
 * Waits until the last `window` finished calls of a running traffic() land in `region` at least
 * MIN_SHARE of the time, counting only calls that started after `from`. Returns when that was.
 */
async function trafficSettlesIn(t: { shots: Shot[] }, region: string, from: number, window: number, timeoutMs: number): Promise<number> {
  return until(`traffic settles in ${region}`, timeoutMs, async () => {
    const after = t.shots.filter((s) => s.start >= from);
    const last = after.slice(-window);
    return last.length === window && shareIn(last, region) >= MIN_SHARE ? Date.now() : undefined;
  }, 100);
}

// ---------------------------------------------------------------------------------------------

describe("routing by measured round trip", () => {
  it("sends ICN callers to ap-seoul and SJC callers to us-west once both regions are warm", async () => {
    // Warm demo-mlp in both regions before any call (keep-warm floor), so only distance decides.
    const put = await call(`${mesh.edge}/v1/models/demo-mlp`, { key: mesh.apiKey, method: "PUT", json: { keepWarm: 1 } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const key = await modelKey("demo-mlp", 1);
    await until("demo-mlp warm in both regions", 30_000, async () => (await warmIn(WEST, key)) && (await warmIn(SEOUL, key)));
    await until("the edge sees demo-mlp warm in both regions", 15_000, async () => {
      const v = await regionsView();
      return [WEST, SEOUL].every((r) => regionOf(v, r).warmModels.some((m) => m.model === "demo-mlp" && m.replicas > 0));
    });

    const icn = await shots("ICN", 50);
    const sjc = await shots("SJC", 50);
    say(`warm, ICN: ${describeShots(icn)}; SJC: ${describeShots(sjc)}`);
    for (const s of [...icn, ...sjc]) expect(s.status, `${s.colo} ${s.code}`).toBe(200);
    expect(shareIn(icn, SEOUL), describeShots(icn)).toBeGreaterThanOrEqual(MIN_SHARE);
    expect(shareIn(sjc, WEST), describeShots(sjc)).toBeGreaterThanOrEqual(MIN_SHARE);
    // The rest is exploration of the only other region; nothing was cold.
    for (const s of [...icn, ...sjc]) expect([SEOUL, WEST]).toContain(s.region);
    expect(icn.every((s) => s.loadMs === 0) && sjc.every((s) => s.loadMs === 0)).toBe(true);
  });

  it("sends ICN to us-west while ap-seoul is cold with a long cold start, and back once Seoul is warm", async () => {
    // A model of its own, cold everywhere. Warm it in us-west with one SJC call; if that call
    // happened to explore ap-seoul (10%), the scenario is spoiled: upload a new version (cold
    // everywhere again) and try once more.
    const name = "cold-start-mlp";
    let version = await createModel(name);
    let key = "";
    for (let attempt = 1; ; attempt++) {
      key = await modelKey(name, version);
      const first = await shoot("SJC", name);
      expect(first.status, first.code ?? "").toBe(200);
      expect(first.loadMs).toBeGreaterThan(0); // it was cold
      if (first.region === WEST) break;
      say(`SJC warm-up call explored ${first.region}; new version, attempt ${attempt + 1}`);
      expect(attempt).toBeLessThan(5);
      version = await uploadVersion(name);
    }
    expect(await warmIn(SEOUL, key)).toBe(false);
    await until("the edge sees the model warm in us-west", 15_000, async () =>
      regionOf(await regionsView(), WEST).warmModels.some((m) => m.model === name && m.version === version),
    );

    // ICN traffic: us-west (warm, 120 ms away) beats ap-seoul (10 ms away + a 1.5 s cold start),
    // until an exploration call warms ap-seoul; then ICN comes back to ap-seoul.
    const t0 = Date.now();
    const t = traffic("ICN", 6, name);
    let seoulWarmAt = 0;
    let backAt = 0;
    try {
      seoulWarmAt = await until("exploration warms ap-seoul", 30_000, async () => ((await warmIn(SEOUL, key)) ? Date.now() : undefined), 100);
      backAt = await trafficSettlesIn(t, SEOUL, seoulWarmAt, 20, RETURN_BOUND_MS);
    } finally {
      await t.stop();
    }
    const all = t.shots;
    for (const s of all) expect(s.status, `${s.code}`).toBe(200);
    const firstSeoul = all.filter((s) => s.region === SEOUL).sort((a, b) => a.end - b.end)[0]!;
    // Calls that started before the first ap-seoul answer came back: Seoul was cold for all of them.
    const whileCold = all.filter((s) => s.start < firstSeoul.end);
    say(
      `cold start: ${whileCold.length} ICN calls while ap-seoul was cold: ${describeShots(whileCold)}; ` +
        `ap-seoul warm after ${seoulWarmAt - t0} ms (first Seoul call waited load=${firstSeoul.loadMs} ms); ` +
        `ICN back in ap-seoul ${backAt - seoulWarmAt} ms after it was warm; all: ${describeShots(all)}`,
    );
    // The calls that explored ap-seoul meanwhile queued behind its load; the rest went to us-west.
    expect(whileCold.length).toBeGreaterThanOrEqual(10);
    expect(shareIn(whileCold, WEST), describeShots(whileCold)).toBeGreaterThanOrEqual(0.6);
    // Exploration warmed ap-seoul: the call that went there waited for the load.
    expect(firstSeoul.loadMs).toBeGreaterThan(0);

    // And it stays there.
    const after = await shots("ICN", 50, name);
    expect(after.every((s) => s.status === 200)).toBe(true);
    expect(shareIn(after, SEOUL), describeShots(after)).toBeGreaterThanOrEqual(MIN_SHARE);
  });
});

describe("region failure", () => {
  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    it(`moves ICN traffic to us-west when ap-seoul's router gets ${signal}, and back once it is restarted`, async () => {
      const t = traffic("ICN", 4);
      let stopAt = 0;
      let restartedAt = 0;
      let backAt = 0;
      try {
        await trafficSettlesIn(t, SEOUL, Date.now(), 20, 15_000);
        stopAt = Date.now();
        await stopSeoul(signal);
        const stoppedAt = Date.now();
        // Steady traffic for a while after the stop: everything lands in us-west.
        await until("calls after the stop", 20_000, async () => t.shots.filter((s) => s.start > stoppedAt + 1_000).length >= 20);
        restartedAt = Date.now();
        const restoreMs = await restoreSeoul();
        say(`${signal}: router restarted, node reconnected and seen by the edge in ${restoreMs} ms`);
        backAt = await trafficSettlesIn(t, SEOUL, restartedAt, 20, RETURN_BOUND_MS);
      } finally {
        await t.stop();
        await restoreSeoul();
      }
      const all = t.shots;
      // Failures: only calls that were in flight at the moment of the stop may fail.
      const inFlightAtStop = all.filter((s) => s.start <= stopAt && s.end > stopAt);
      const failed = all.filter((s) => s.status !== 200);
      const failedNotInFlight = failed.filter((s) => !inFlightAtStop.includes(s));
      // Moved: the first call (started after the stop) from which on every call until the restart
      // landed in us-west.
      const during = all.filter((s) => s.start > stopAt && s.start < restartedAt).sort((a, b) => a.start - b.start);
      let firstMoved = during.length;
      while (firstMoved > 0 && during[firstMoved - 1]!.region === WEST) firstMoved--;
      const moved = during[firstMoved];
      const moveMs = moved ? moved.end - stopAt : Infinity;
      say(
        `${signal}: ${inFlightAtStop.length} in flight at the stop, ${failed.length} failed (${describeShots(failed)}); ` +
          `traffic moved to us-west ${moveMs} ms after the signal (bound ${MOVE_BOUND_MS} ms); during the outage: ${describeShots(during)}; ` +
          `back in ap-seoul ${backAt - restartedAt} ms after the restart began; slowest call after the restart began: ` +
          slowest(all.filter((s) => s.start >= restartedAt), restartedAt) + `; slowest during the outage: ${slowest(during, stopAt)}`,
      );
      // At most once: a call sent to the killed router after the signal, before the edge set it
      // aside, fails with region_error (a lost connection is no proof it did not run, so it is
      // not re-sent); at most one per caller. A drained router (SIGTERM) says so instead.
      const lost = failedNotInFlight.filter((s) => signal === "SIGKILL" && s.status === 502 && s.code === "region_error");
      expect(failedNotInFlight.filter((s) => !lost.includes(s)), describeShots(failedNotInFlight)).toEqual([]);
      expect(lost.length, describeShots(lost)).toBeLessThanOrEqual(4);
      expect(during.length).toBeGreaterThanOrEqual(20);
      // Calls still landing in ap-seoul after the signal can only be the first few (a draining
      // router finishing what it took, or the signal not delivered yet).
      expect(firstMoved, describeShots(during)).toBeLessThanOrEqual(inFlightAtStop.length + 4);
      expect(moveMs).toBeLessThanOrEqual(MOVE_BOUND_MS);
      expect(during.filter((s) => s.end > stopAt + MOVE_BOUND_MS).every((s) => s.region === WEST)).toBe(true);
      expect(backAt).toBeGreaterThan(0);
    }, 120_000);
  }
});

describe("data residency", () => {
  it("a model restricted to ap-seoul is never served elsewhere, and answers 503 no_region_available while ap-seoul is down", async () => {
    const name = "resident-mlp";
    await createModel(name);
    const put = await call(`${mesh.edge}/v1/models/${name}`, { key: mesh.apiKey, method: "PUT", json: { regions: [SEOUL] } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    expect(put.body.regions).toEqual([SEOUL]);

    // Even SJC callers, 10 ms from us-west and 120 ms from ap-seoul, only ever get ap-seoul.
    const up = [...(await shots("SJC", 15, name)), ...(await shots("ICN", 10, name))];
    say(`resident model, ap-seoul up: ${describeShots(up)}`);
    for (const s of up) {
      expect(s.status, `${s.colo} ${s.code}`).toBe(200);
      expect(s.region).toBe(SEOUL);
    }

    try {
      await stopSeoul("SIGTERM");
      // Across the edge's changing view (a draining report, then none), for a few seconds.
      const downUntil = Date.now() + 3_000;
      let n = 0;
      while (Date.now() < downUntil || n < 6) {
        const colo = n % 2 === 0 ? "SJC" : "ICN";
        const a = await call(`${mesh.edge}/v2/models/${name}/infer`, { key: mesh.apiKey, json: mlpBody(ROW), headers: { "x-mesh-colo": colo } });
        expect(a.headers.get("x-mesh-region"), `${colo} call served while ap-seoul is down`).not.toBe(WEST);
        expectError(a, 503, "no_region_available");
        expect(a.headers.get("retry-after")).toBeTruthy();
        n++;
        await sleep(200);
      }
      // Readiness tells the same truth: the resident model is not ready, the mesh still is.
      const notReady = await waitUntil("resident model reported not ready", 10_000, async () => {
        const r = await call(`${mesh.edge}/v2/models/${name}/ready`, { key: mesh.apiKey });
        return r.status === 503 ? r : undefined;
      });
      expect(notReady.body).toEqual({ name, ready: false });
      expect(await call(`${mesh.edge}/v2/health/ready`)).toMatchObject({ status: 200, body: { ready: true } });
      // An unrestricted model still answers from SJC (us-west), so the 503 is residency, not an outage.
      const other = await shoot("SJC");
      expect(other.status, other.code ?? "").toBe(200);
      expect(other.region).toBe(WEST);
    } finally {
      await restoreSeoul();
    }
    await waitUntil("resident model ready again", 15_000, async () =>
      (await call(`${mesh.edge}/v2/models/${name}/ready`, { key: mesh.apiKey })).status === 200 ? true : undefined,
    );
    const back = await shots("SJC", 5, name);
    expect(back.map((s) => `${s.status} ${s.region}`)).toEqual(Array(5).fill(`200 ${SEOUL}`));
  }, 90_000);
});

describe("GET /v1/regions", () => {
  it("gives per region health, nodes, capacity, the caller's warm models, latency overall and per colo, round trips and history", async () => {
    // Some fresh traffic from both colos (the warm-ups above already made plenty).
    await shots("ICN", 10);
    await shots("SJC", 10);
    const v = await until("latency of both colos in /v1/regions", 10_000, async () => {
      const view = await regionsView();
      return regionOf(view, SEOUL).latency.byColo.ICN && regionOf(view, WEST).latency.byColo.SJC ? view : undefined;
    });
    expect(v.redis).toBe("ok");
    expect(v.stale).toBe(false);
    expect(v.regions.map((r) => r.name).sort()).toEqual([SEOUL, WEST]);
    for (const r of v.regions) {
      expect(r.health, r.name).toBe("healthy");
      expect(r.nodes).toBeGreaterThanOrEqual(1);
      // A key gets its account's view: a region's capacity counts every account, so it is null here.
      expect(r.capacity).toBeNull();
      expect(r.warmModels.map((m) => m.model), r.name).toContain("demo-mlp");
      // The caller's models by name; never another account's ids.
      for (const m of r.warmModels) expect(m.model).toMatch(/^[a-z]/);
      const l = r.latency;
      expect(l.count).toBeGreaterThan(0);
      expect(l.p50).toBeGreaterThan(0);
      expect(l.p50).toBeLessThanOrEqual(l.p95);
      expect(l.p95).toBeLessThanOrEqual(l.p99);
      expect(r.history.length).toBeGreaterThanOrEqual(1);
      for (const p of r.history) {
        expect(p.t % 60_000).toBe(0);
        expect(p.count).toBeGreaterThan(0);
        expect(p.p50).toBeLessThanOrEqual(p.p99);
      }
      expect(r.history.reduce((s, p) => s + p.count, 0)).toBe(l.count);
    }
    // The operator's view (admin token) has the capacity.
    const global = await call(`${mesh.edge}/v1/regions`, { key: mesh.adminToken });
    expect(global.body.scope).toBe("operator");
    for (const r of global.body.regions as RegionView[]) {
      expect(r.capacity!.slots, r.name).toBeGreaterThan(0);
      expect(r.capacity!.freeSlots).toBeLessThanOrEqual(r.capacity!.slots);
    }
    const seoul = regionOf(v, SEOUL);
    const west = regionOf(v, WEST);
    for (const colo of ["ICN", "SJC"]) {
      expect(seoul.latency.byColo[colo], `ap-seoul byColo ${colo}`).toBeDefined();
      expect(west.latency.byColo[colo], `us-west byColo ${colo}`).toBeDefined();
    }
    expect(seoul.latency.byColo.ICN!.count).toBeGreaterThan(0);
    say(`rttMs: ap-seoul ${JSON.stringify(seoul.rttMs)}, us-west ${JSON.stringify(west.rttMs)}`);
    expect(seoul.rttMs.ICN).toBeLessThan(west.rttMs.ICN!);
    expect(west.rttMs.SJC).toBeLessThan(seoul.rttMs.SJC!);
    // The simulated distance is in the measurement.
    expect(west.rttMs.ICN).toBeGreaterThanOrEqual(SIMULATED_RTT.ICN[WEST]);
    expect(seoul.rttMs.SJC).toBeGreaterThanOrEqual(SIMULATED_RTT.SJC[SEOUL]);
  });
});

describe("/status in headless Chromium against the live mesh", () => {
  let browser: Browser | undefined;
  afterAll(async () => {
    await browser?.close();
  });

  it("draws both regions and the latency chart, without console errors", async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    browser = await launchBrowser();
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    // Keys never travel in URLs (the page ignores ?key=): it is typed in.
    await page.goto(`${mesh.edge}/status`);
    await page.getByTestId("key-input").fill(mesh.apiKey);
    await page.getByRole("button", { name: "Use key" }).click();
    for (const r of [WEST, SEOUL]) await page.getByTestId(`region-row-${r}`).waitFor({ timeout: 15_000 });
    for (const r of [WEST, SEOUL]) {
      expect(await page.getByTestId(`health-${r}`).textContent()).toBe("Healthy");
      expect(await page.getByTestId(`region-row-${r}`).textContent()).toContain("demo-mlp");
    }
    expect(page.url()).not.toContain(mesh.apiKey);
    const chart = page.getByTestId("latency-chart");
    for (const r of [WEST, SEOUL]) {
      for (const series of ["p50", "p99"]) {
        const path = chart.locator(`path[data-region="${r}"][data-series="${series}"]`);
        expect(await path.count(), `${r} ${series}`).toBe(1);
        expect((await path.getAttribute("d")) ?? "").toMatch(/^M\d/);
      }
    }
    const colos = await page.getByTestId("colo-table").textContent();
    expect(colos).toContain("ICN");
    expect(colos).toContain("SJC");
    expect(await page.getByTestId("overall-status").getAttribute("data-state")).not.toBe("unknown");
    await page.screenshot({ path: join(ARTIFACTS, "status-live.png"), fullPage: true });
    expect(errors).toEqual([]);
    await context.close();
  });
});

describe("Redis outage", () => {
  it("keeps routing on last-known state while Redis is down, says so in /v1/regions, and recovers", async () => {
    try {
      redisDown.now = true;
      await mesh.stopRedis();
      const downAt = Date.now();
      const v = await until("/v1/regions says Redis is unreachable", 10_000, async () => {
        const view = await regionsView();
        return view.redis === "unreachable" ? view : undefined;
      });
      expect(v.stale).toBe(true);
      // Longer than a region report stays fresh (5 s): only last-known state can route these.
      const icn: Shot[] = [];
      const sjc: Shot[] = [];
      while (Date.now() - downAt < 7_000 || icn.length < 40) {
        icn.push(await shoot("ICN"));
        sjc.push(await shoot("SJC"));
      }
      say(`redis down: ICN ${describeShots(icn)}; SJC ${describeShots(sjc)}`);
      for (const s of [...icn, ...sjc]) expect(s.status, `${s.colo} ${s.code}`).toBe(200);
      expect(shareIn(icn, SEOUL), describeShots(icn)).toBeGreaterThanOrEqual(MIN_SHARE);
      expect(shareIn(sjc, WEST), describeShots(sjc)).toBeGreaterThanOrEqual(MIN_SHARE);
      const still = await regionsView();
      expect(still.redis).toBe("unreachable");
      expect(still.stale).toBe(true);
    } finally {
      await restoreRedis();
    }
    const t0 = Date.now();
    const ok = await until("/v1/regions says Redis is ok again", 20_000, async () => {
      const view = await regionsView();
      return view.redis === "ok" && !view.stale && view.regions.every((r) => r.health === "healthy") ? view : undefined;
    });
    say(`redis back: /v1/regions ok after ${Date.now() - t0} ms`);
    expect(ok.regions.every((r) => r.nodes > 0)).toBe(true);
    const after = await shots("ICN", 10);
    expect(after.every((s) => s.status === 200)).toBe(true);
  });
});
