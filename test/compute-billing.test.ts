// Compute that is billed, end to end on a real mesh (startMesh: edge, one router, one node with
// one call slot): a call's compute is the node's session time and reaches Server-Timing and the
// usage row; a call stopped at its 1 s deadline is billed about the second it ran, not 0; a
// kernel's refusal of the caller's inputs is a 400 the caller can act on; and the router's
// queue is bounded in bytes of inputs (MAX_QUEUED_BYTES).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { signRequest } from "../protocol/signing.js";
import type { RegionReport } from "../protocol/region-report.js";
import { encodeModel, OnnxType } from "../scripts/onnx-writer.js";
import { call, expectError, type Answer } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";
import { spinModel } from "./helpers/slow-models.js";

const REGION = "us-west";
const SPIN_SIZE = 256;
/** The router's byte bound: a model's queue holds a quarter, 256 KiB, under two spin calls (256 KiB + 8 each). */
const MAX_QUEUED_BYTES = 1_048_576;

let mesh: MeshHandle;
let dir: string;
/** Loop iterations of spin for about one second of compute here (calibrated in beforeAll). */
let oneSecond = 0;
const say = (line: string) => console.log(`[compute-billing] ${line}`);

const spinBody = (n: number) => ({
  inputs: [
    { name: "n", datatype: "INT64", shape: [1], data: [n] },
    { name: "x", datatype: "FP32", shape: [SPIN_SIZE, SPIN_SIZE], data: Array.from({ length: SPIN_SIZE }, () => new Array<number>(SPIN_SIZE).fill(0.01)) },
  ],
});

const upload = async (model: string, bytes: Uint8Array) => {
  const created = await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name: model } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  return uploadVersion(model, bytes);
};
const uploadVersion = (model: string, bytes: Uint8Array) =>
  call(`${mesh.edge}/v1/models/${model}/versions`, { key: mesh.apiKey, body: bytes as Uint8Array<ArrayBuffer>, headers: { "content-type": "application/octet-stream" } });

const infer = (model: string, body: unknown, timeoutMs = 120_000) =>
  call(`${mesh.edge}/v2/models/${model}/infer`, { key: mesh.apiKey, json: body, headers: { "x-mesh-timeout-ms": String(timeoutMs) } });

/** A Server-Timing entry's duration, ms (NaN when absent). */
const timing = (a: Answer, name: string) => Number(new RegExp(`${name};dur=([\\d.]+)`).exec(a.headers.get("server-timing") ?? "")?.[1] ?? NaN);

interface UsageModelRow {
  model: string;
  calls: number;
  errors: number;
  serverErrors: number;
  computeMs: number;
}

/** GET /v1/usage for one model, polled until `ready` says its rows are in (rows are written in batches). */
async function usageOf(model: string, ready: (r: UsageModelRow) => boolean): Promise<UsageModelRow> {
  return waitUntil(`usage rows of ${model}`, 15_000, async () => {
    const a = await call(`${mesh.edge}/v1/usage?model=${model}`, { key: mesh.apiKey });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    const row = (a.body.models as UsageModelRow[]).find((m) => m.model === model);
    return row && ready(row) ? row : undefined;
  }, 200);
}

async function routerStatus(): Promise<RegionReport> {
  const headers = await signRequest(mesh.regionSecrets[REGION]!, "GET", "/v1/status");
  const res = await fetch(`${mesh.regions[REGION]}/v1/status`, { headers, signal: AbortSignal.timeout(5_000) });
  expect(res.status).toBe(200);
  return (await res.json()) as RegionReport;
}

/** Two FP32 vectors of free lengths n and m, added: the edge cannot tell that n must equal m. */
function addModel(): Uint8Array {
  return encodeModel({
    graph: {
      name: "add2",
      nodes: [{ opType: "Add", inputs: ["a", "b"], outputs: ["y"] }],
      inputs: [
        { name: "a", elemType: OnnxType.FLOAT, shape: ["n"] },
        { name: "b", elemType: OnnxType.FLOAT, shape: ["m"] },
      ],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: ["n"] }],
    },
  });
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-billing-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    nodeEnv: { NODE_SLOTS: "1", NODE_THREADS_PER_WORKER: "1" },
    routerEnv: { MAX_QUEUED_BYTES: String(MAX_QUEUED_BYTES) },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
  for (const name of ["spin-ok", "spin-stop", "spin-queue"]) {
    const up = await upload(name, spinModel(SPIN_SIZE));
    expect(up.status, JSON.stringify(up.body)).toBe(201);
  }
  const up = await upload("add2", addModel());
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  // Calibrate on this (shared) machine: what 200 iterations take, through the whole mesh.
  const probe = await infer("spin-queue", spinBody(200));
  expect(probe.status, JSON.stringify(probe.body)).toBe(200);
  oneSecond = Math.max(200, Math.round((200 * 1_000) / Math.max(1, timing(probe, "compute"))));
}, 240_000);

afterAll(async () => {
  await mesh?.stop();
  if (process.env.MESH_TEST_KEEP) console.log(`[compute-billing] kept ${dir}`);
  else await rm(dir, { recursive: true, force: true });
});

describe("compute that is billed", () => {
  it("a call's compute is the node's session time: > 0, within its infer time, in Server-Timing and its usage row", async () => {
    const a = await infer("spin-ok", spinBody(Math.round(oneSecond / 4)));
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    const compute = timing(a, "compute");
    const inferMs = timing(a, "infer");
    expect(compute).toBeGreaterThan(0);
    expect(compute).toBeLessThanOrEqual(inferMs);
    const row = await usageOf("spin-ok", (r) => r.calls >= 1);
    expect(row).toMatchObject({ calls: 1, errors: 0 });
    // Billed in whole ms rounded up: the node's compute, not its wall time nor the load.
    say(`normal call: compute ${compute} ms, infer ${inferMs} ms, billed ${row.computeMs} ms`);
    // Server-Timing carries the compute to 2 decimals, the bill rounds the exact figure up: 285.004
    // shows as 285.00 and bills 286.
    expect(row.computeMs).toBeGreaterThanOrEqual(Math.ceil(compute));
    expect(row.computeMs).toBeLessThanOrEqual(Math.ceil(compute + 0.005));
    expect(row.computeMs).toBeLessThanOrEqual(Math.ceil(inferMs));
  }, 120_000);

  it("a call stopped at its 1 s deadline answers 504 and is billed about the second it ran, not 0", async () => {
    // Warm first, so the second is spent computing, not loading.
    const warm = await infer("spin-stop", spinBody(1));
    expect(warm.status, JSON.stringify(warm.body)).toBe(200);
    const warmCompute = timing(warm, "compute");
    // About a minute of compute, with a 1 s deadline.
    const stopped = await infer("spin-stop", spinBody(oneSecond * 60), 1_000);
    expectError(stopped, 504, "deadline_exceeded");
    const row = await usageOf("spin-stop", (r) => r.calls >= 2);
    expect(row).toMatchObject({ calls: 2, errors: 1, serverErrors: 1 });
    const stoppedCompute = row.computeMs - Math.ceil(warmCompute);
    say(`call stopped at its 1000 ms deadline: billed ${stoppedCompute} ms`);
    // The node stops a tenth before the caller's deadline (its confirmation must reach the
    // 504), after the edge's and the queue's share of the second: well over half of it ran.
    expect(stoppedCompute).toBeGreaterThanOrEqual(500);
    expect(stoppedCompute).toBeLessThanOrEqual(1_000);
  }, 120_000);

  it("inputs the signature allows but the graph refuses (dynamic dims that disagree inside it) are a 400 input_rejected, billed, and clean", async () => {
    const ok = await infer("add2", { inputs: [{ name: "a", datatype: "FP32", shape: [3], data: [1, 2, 3] }, { name: "b", datatype: "FP32", shape: [3], data: [1, 1, 1] }] });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const bad = await infer("add2", { inputs: [{ name: "a", datatype: "FP32", shape: [3], data: [1, 2, 3] }, { name: "b", datatype: "FP32", shape: [2], data: [1, 1] }] });
    expectError(bad, 400, "input_rejected");
    expect(bad.body.error).toMatch(/Add/);
    expect(bad.body.error).toMatch(/broadcast/);
    expect(bad.body.error).not.toMatch(/onnxruntime_src|\.h:\d+|::|\/tmp\//);
    const row = await usageOf("add2", (r) => r.calls >= 2);
    expect(row).toMatchObject({ calls: 2, errors: 1, serverErrors: 0 });
  }, 120_000);

  it("the router's queue holds at most its bytes: past it the call is refused with 503 and Retry-After, and the queued ones still run", async () => {
    // The node's one slot busy for a few seconds...
    const running = infer("spin-queue", spinBody(oneSecond * 3));
    await waitUntil("slow call running", 30_000, async () => ((await routerStatus()).nodes.some((n) => n.inflight >= 1) ? true : undefined));
    // ...one call waits (alone in its queue: let in whatever its size)...
    const queued = infer("spin-queue", spinBody(1));
    await waitUntil("one call queued", 30_000, async () => ((await routerStatus()).queued >= 1 ? true : undefined));
    // ...and the next would put the model's queue past a quarter of MAX_QUEUED_BYTES.
    const refused = await infer("spin-queue", spinBody(1));
    expect(refused.status, JSON.stringify(refused.body)).toBe(503);
    expect(Object.keys(refused.body).sort()).toEqual(["code", "error", "requestId"]);
    expect(["no_capacity", "no_region_available"]).toContain(refused.body.code);
    expect(refused.body.error).toMatch(/bytes queued/);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect((await running).status).toBe(200);
    expect((await queued).status).toBe(200);
  }, 120_000);
});
