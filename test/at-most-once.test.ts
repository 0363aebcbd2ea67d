// At-most-once execution through a real mesh (workerd edge, two routers, node agents, Redis):
// a call whose node or router dies mid-run is not run again anywhere, and the caller gets a
// clear error before its deadline; the same request id sent twice at once runs once and both
// callers get the same answer. Executions are counted on the nodes themselves: every node
// reports in its heartbeats how many calls it has started (`runs`), which the router shows in
// /v1/streams/stats with the number of heartbeats it has had. A count is read once every node
// has sent two more heartbeats, so it includes every run dispatched before (no sleeping).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { call, expectError, type Answer } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";
import { spinModel } from "./helpers/slow-models.js";
import { streamStats } from "./helpers/stream-client.js";

const WEST = "us-west";
const SEOUL = "ap-seoul";
const SPIN_SIZE = 128;
const MODEL = "spin";
/** The slow call's target length; its deadline leaves plenty beyond it. */
const SLOW_MS = 2_500;
const DEADLINE_MS = 30_000;

const say = (line: string) => process.stdout.write(`[at-most-once] ${line}\n`);

let mesh: MeshHandle;
let dir: string;
/** Loop iterations for about SLOW_MS of compute here (calibrated in beforeAll). */
let slowN = 0;

const body = (n: number) => ({
  inputs: [
    { name: "n", datatype: "INT64", shape: [1], data: [n] },
    { name: "x", datatype: "FP32", shape: [SPIN_SIZE, SPIN_SIZE], data: new Array(SPIN_SIZE * SPIN_SIZE).fill(0.01) },
  ],
});

/** A spin call from a colo (SJC is nearest us-west, ICN ap-seoul). */
function infer(n: number, colo: string, headers: Record<string, string> = {}): Promise<Answer> {
  return call(`${mesh.edge}/v2/models/${MODEL}/infer`, {
    key: mesh.apiKey,
    json: body(n),
    headers: { "x-mesh-colo": colo, "x-mesh-timeout-ms": String(DEADLINE_MS), ...headers },
  });
}

interface NodeCount {
  runs: number;
  heartbeats: number;
}

/** Calls started by each node of a region, and heartbeats its router has had from it. */
async function counts(region: string): Promise<Map<string, NodeCount>> {
  const stats = (await streamStats(mesh.regions[region]!, mesh.regionSecrets[region]!)) as unknown as {
    nodes: { id: string; runs: number | null; heartbeats: number }[];
  };
  return new Map(stats.nodes.map((n) => [n.id, { runs: n.runs ?? 0, heartbeats: n.heartbeats }]));
}
async function runs(region: string): Promise<Map<string, number>> {
  return new Map([...(await counts(region))].map(([id, c]) => [id, c.runs]));
}
const total = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/**
 * Runs counted in `region` once every node has sent two more heartbeats than now: a node counts
 * a call when it receives it, so the count then includes every call dispatched before this was
 * called (a re-run included: the router sends it before it answers the caller).
 */
async function settledCounts(region: string): Promise<Map<string, number>> {
  const now = await counts(region);
  return waitUntil(`two more heartbeats from ${region}'s nodes`, 15_000, async () => {
    const later = await counts(region);
    const fresh = [...now].every(([id, c]) => !later.has(id) || later.get(id)!.heartbeats >= c.heartbeats + 2);
    return fresh ? new Map([...later].map(([id, c]) => [id, c.runs])) : undefined;
  });
}
const settledRuns = async (region: string) => total(await settledCounts(region));

/** Waits until `region`'s running node (its counter past `before`) shows up; returns its id. */
async function runningNode(region: string, before: Map<string, number>): Promise<string> {
  return waitUntil(`the slow call running in ${region}`, 30_000, async () => {
    for (const [id, n] of await runs(region)) if (n > (before.get(id) ?? 0)) return id;
    return undefined;
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-at-most-once-"));
  mesh = await startMesh({
    stateDir: dir,
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
    regions: [
      { name: WEST, lat: 37.34, lon: -121.89, nodes: 2 },
      { name: SEOUL, lat: 37.57, lon: 126.98, nodes: 1 },
    ],
    // No exploration: SJC calls go to us-west, ICN calls to ap-seoul, every time.
    edgeVars: { EXPLORATION_SHARE: "0" },
    nodeEnv: { NODE_THREADS_PER_WORKER: "1", HEARTBEAT_MS: "250" },
  });
  const created = await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name: MODEL } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const up = await call(`${mesh.edge}/v1/models/${MODEL}/versions`, {
    key: mesh.apiKey,
    body: Buffer.from(spinModel(SPIN_SIZE)),
    headers: { "content-type": "application/octet-stream" },
  });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  // Warm on every node (two replicas per region; ap-seoul has one node), so no call waits for a
  // load and a re-run would find the other us-west node ready; then calibrate on us-west.
  const put = await call(`${mesh.edge}/v1/models/${MODEL}`, { key: mesh.apiKey, method: "PUT", json: { keepWarm: 2 } });
  expect(put.status, JSON.stringify(put.body)).toBe(200);
  const key = `${created.body.id}@1`;
  await waitUntil("spin warm on both us-west nodes and in ap-seoul", 120_000, async () => {
    const [w, s] = await Promise.all([mesh.regionStatus(WEST), mesh.regionStatus(SEOUL)]);
    const replicas = (r: typeof w) => r.models.find((m) => m.key === key)?.replicas ?? 0;
    return replicas(w) >= 2 && replicas(s) >= 1 ? true : undefined;
  }, 250);
  for (const colo of ["SJC", "ICN"]) {
    const warm = await infer(1, colo);
    expect(warm.status, JSON.stringify(warm.body)).toBe(200);
  }
  const t1 = Date.now();
  expect((await infer(1, "SJC")).status).toBe(200);
  const fastMs = Date.now() - t1;
  const probeN = 10_000;
  const t2 = Date.now();
  expect((await infer(probeN, "SJC")).status).toBe(200);
  slowN = Math.max(probeN, Math.round((probeN * SLOW_MS) / Math.max(1, Date.now() - t2 - fastMs)));
  const t3 = Date.now();
  expect((await infer(slowN, "SJC")).status).toBe(200);
  say(`calibrated: ${slowN} iterations, one slow call took ${Date.now() - t3} ms (fast call ${fastMs} ms)`);
}, 240_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("at-most-once execution", () => {
  it("a node killed mid-call: the call is not run again on the region's other node, and the caller gets node_error before its deadline", async () => {
    const before = await settledCounts(WEST);
    expect(before.size).toBe(2);
    const started = Date.now();
    const answer = infer(slowN * 2, "SJC");
    const node = await runningNode(WEST, before);
    say(`node ${node} killed ${Date.now() - started} ms into the call`);
    const proc = mesh.processes.find((p) => p.name === `node-${node}`)!;
    process.kill(-proc.child.pid!, "SIGKILL");
    const a = await answer;
    expect(Date.now() - started).toBeLessThan(DEADLINE_MS);
    expect(a.status, `the call ended ${a.status} (200: it was run again on the other node)`).toBe(502);
    expectError(a, 502, "node_error");
    // The survivor ran nothing (before the fix it ran the call again and the caller got a 200
    // after two runs).
    const survivor = [...before.keys()].find((id) => id !== node)!;
    await waitUntil("the dead node gone from the router", 15_000, async () => ((await runs(WEST)).has(node) ? undefined : true));
    expect(await settledRuns(WEST)).toBe(before.get(survivor)!);
  }, 120_000);

  it("the same request id sent twice at once: one execution, two identical answers", async () => {
    const before = await settledRuns(WEST);
    const id = `dup-${Date.now()}`;
    const [a, b] = await Promise.all([infer(slowN, "SJC", { "x-request-id": id }), infer(slowN, "SJC", { "x-request-id": id })]);
    expect(a.status, JSON.stringify(a.body).slice(0, 300)).toBe(200);
    expect(b.status, JSON.stringify(b.body).slice(0, 300)).toBe(200);
    expect(a.headers.get("x-mesh-region")).toBe(WEST);
    expect(b.body).toEqual(a.body);
    expect(b.headers.get("x-mesh-node")).toBe(a.headers.get("x-mesh-node"));
    // Compute is billed once: the repeat's answer says it cost nothing.
    const compute = (x: Answer) => Number(/compute;dur=([\d.]+)/.exec(x.headers.get("server-timing") ?? "")?.[1] ?? NaN);
    expect([compute(a), compute(b)].sort((x, y) => x - y)).toEqual([0, expect.any(Number)]);
    expect(Math.max(compute(a), compute(b))).toBeGreaterThan(0);
    // One run for the pair.
    expect(await settledRuns(WEST)).toBe(before + 1);

    // The same id again after it finished: the stored answer, no run.
    const c = await infer(slowN, "SJC", { "x-request-id": id });
    expect(c.status).toBe(200);
    expect(c.body).toEqual(a.body);
    // The same id for a different call is refused, not answered with the first call's result.
    const other = await infer(1, "SJC", { "x-request-id": id });
    expectError(other, 400, "bad_request");
    expect(await settledRuns(WEST)).toBe(before + 1);
  }, 120_000);

  it("a router killed 1 s into a call: the call is not re-run in the other region, and the caller gets region_error before its deadline", async () => {
    // Whichever region the edge picks (SJC is nearer us-west, but exploration may pick the other)
    // is the one whose router dies; the other must run nothing.
    const before = new Map([WEST, SEOUL].map((r) => [r, new Map<string, number>()]));
    for (const r of [WEST, SEOUL]) before.set(r, await settledCounts(r));
    const started = Date.now();
    const answer = infer(slowN, "SJC");
    const region = await waitUntil("the slow call running in a region", 30_000, async () => {
      for (const r of [WEST, SEOUL]) for (const [id, n] of await runs(r)) if (n > (before.get(r)!.get(id) ?? 0)) return r;
      return undefined;
    });
    const other = region === WEST ? SEOUL : WEST;
    // About 1 s into the call (it is running on the node by now).
    await new Promise((r) => setTimeout(r, Math.max(0, 1_000 - (Date.now() - started))));
    await mesh.stopRouter(region, "SIGKILL");
    say(`${region}'s router killed ${Date.now() - started} ms into the call`);
    const a = await answer;
    say(`the caller got ${a.status} ${a.body.code} ${Date.now() - started} ms after it called`);
    expect(Date.now() - started).toBeLessThan(DEADLINE_MS);
    expect(a.status, `the call ended ${a.status} (200: it was run again in ${other})`).toBe(502);
    expectError(a, 502, "region_error");
    expect(a.body.error).toMatch(/may have run/);
    // The other region ran nothing.
    expect(await settledRuns(other)).toBe(total(before.get(other)!));
    // Back up: the region's node reconnects and its counter shows the one run it did.
    await mesh.startRouter(region);
    await waitUntil(`${region}'s node back`, 30_000, async () => ((await counts(region)).size > 0 ? true : undefined));
    expect(await settledRuns(region)).toBe(total(before.get(region)!) + 1);
  }, 120_000);
});
