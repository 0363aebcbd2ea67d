// Multipart uploads (edge/uploads.ts) end to end against the real mesh (startMesh: workerd with
// local D1 and R2, routers, nodes): a ~51 MB model generated here goes up in 5 MiB parts, one
// part cut off mid-body and sent again, is completed (the edge reads it back as a stream) and
// answers through a real node; another account cannot see, feed, complete or abort it; a part
// over the limit is 413; a model with external data is refused and leaves nothing in R2; abort
// removes an upload; the per-account count and size bounds hold; and `npm run upload` (the CLI,
// spawned) resumes an upload begun elsewhere, sends again a part whose connection was cut, and
// completes it.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import http from "node:http";
import { mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { encodeModel, OnnxType } from "../scripts/onnx-writer.js";
import { call, expectClose, expectError, rawPost } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";

const MiB = 1024 * 1024;
const PART = 5 * MiB;
const IN = 64;
const HIDDEN = 196_608; // W1 is 64 x 196608 floats: 48 MiB
const OUT = 4;
const MAX_OPEN = 4;
const MAX_UPLOAD = 300 * MiB;

let mesh: MeshHandle;
let dir: string;
let E: string;
let big: { bytes: Uint8Array<ArrayBuffer>; sha256: string; w1: Float32Array; w2: Float32Array };
const say = (line: string) => console.log(`[multipart-upload] ${line}`);

/** Deterministic small weights, so the reference product is exact enough in float32. */
function weights(n: number, seed: number): Float32Array {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = (((i * 7919 + seed * 104729) % 2001) - 1000) / 100_000;
  return w;
}

/** y = (x W1) W2: one MatMul with a 48 MiB initializer, then a small one. */
function bigModel(): typeof big {
  const w1 = weights(IN * HIDDEN, 1);
  const w2 = weights(HIDDEN * OUT, 2);
  const bytes = encodeModel({
    graph: {
      name: "big-mlp",
      initializers: [
        { name: "W1", elemType: OnnxType.FLOAT, dims: [IN, HIDDEN], values: new Uint8Array(w1.buffer) },
        { name: "W2", elemType: OnnxType.FLOAT, dims: [HIDDEN, OUT], values: new Uint8Array(w2.buffer) },
      ],
      nodes: [
        { opType: "MatMul", inputs: ["x", "W1"], outputs: ["h"] },
        { opType: "MatMul", inputs: ["h", "W2"], outputs: ["y"] },
      ],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: ["batch", IN] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: ["batch", OUT] }],
    },
  }) as Uint8Array<ArrayBuffer>;
  return { bytes, sha256: sha256(bytes), w1, w2 };
}

function reference(x: number[]): number[] {
  const h = new Float64Array(HIDDEN);
  for (let k = 0; k < IN; k++) for (let j = 0; j < HIDDEN; j++) h[j]! += x[k]! * big.w1[k * HIDDEN + j]!;
  const y = new Array<number>(OUT).fill(0);
  for (let j = 0; j < HIDDEN; j++) for (let o = 0; o < OUT; o++) y[o]! += h[j]! * big.w2[j * OUT + o]!;
  return y;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** Bytes R2 holds on disk (Miniflare's blob files): what "leaves nothing behind" is measured by. */
async function r2Bytes(): Promise<number> {
  let total = 0;
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (!e.name.endsWith(".sqlite") && !e.name.includes("sqlite-")) total += (await stat(p)).size;
    }
  };
  await walk(join(dir, "wrangler", "v3", "r2"));
  return total;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-multipart-"));
  big = bigModel();
  mesh = await startMesh({
    stateDir: dir,
    edgeVars: { MAX_OPEN_UPLOADS: String(MAX_OPEN), MAX_UPLOAD_BYTES: String(MAX_UPLOAD) },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
  E = mesh.edge;
  say(`model of ${big.bytes.length} bytes, ${Math.ceil(big.bytes.length / PART)} parts`);
}, 240_000);

afterAll(async () => {
  await mesh?.stop();
  if (process.env.MESH_TEST_KEEP) say(`kept ${dir}`);
  else if (dir) await rm(dir, { recursive: true, force: true });
});

const api = (path: string, init: Parameters<typeof call>[1] = {}) => call(`${E}${path}`, { key: mesh.apiKey, ...init });
const part = (model: string, id: string, n: number, bytes: Uint8Array<ArrayBuffer>, key = mesh.apiKey) =>
  call(`${E}/v1/models/${model}/uploads/${id}/parts/${n}`, { key, method: "PUT", body: bytes, headers: { "content-type": "application/octet-stream" } });
const slice = (bytes: Uint8Array<ArrayBuffer>, n: number, size = PART) => bytes.slice((n - 1) * size, n * size);

/**
 * Sends part `n` as a stream and cuts the connection after half of it: the edge must not
 * count that part as received.
 */
async function cutPart(model: string, id: string, n: number, bytes: Uint8Array): Promise<void> {
  const ctrl = new AbortController();
  const half = bytes.subarray(0, bytes.length >> 1);
  let sent = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (!sent) {
        sent = true;
        c.enqueue(half);
        // Give the edge time to start reading, then drop the connection mid-body.
        setTimeout(() => ctrl.abort(), 300);
      }
      // Never closes: the rest of the part never comes.
    },
  });
  const res = fetch(`${E}/v1/models/${model}/uploads/${id}/parts/${n}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/octet-stream", "content-length": String(bytes.length) },
    body,
    signal: ctrl.signal,
    duplex: "half",
  } as RequestInit);
  await expect(res).rejects.toThrow();
}

async function createModel(name: string, key = mesh.apiKey): Promise<void> {
  const r = await call(`${E}/v1/models`, { key, json: { name } });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
}

async function uploadAll(model: string, bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  // The sha256 announced: completion then copies to that address while it verifies, and must
  // drop that copy too when it refuses the file.
  const created = await api(`/v1/models/${model}/uploads`, { json: { size: bytes.length, partSize: PART, sha256: sha256(bytes) } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  for (let n = 1; n <= created.body.parts; n++) expect((await part(model, created.body.uploadId, n, slice(bytes, n))).status).toBe(200);
  return created.body.uploadId;
}

describe("multipart uploads", () => {
  let uploadId: string;

  it("uploads a 51 MB model in parts, one re-sent after a cut connection, and the version answers through a node", async () => {
    await createModel("big-mlp");
    const created = await api("/v1/models/big-mlp/uploads", { json: { size: big.bytes.length, partSize: PART, sha256: big.sha256 } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    uploadId = created.body.uploadId;
    const parts = created.body.parts as number;
    expect(parts).toBe(Math.ceil(big.bytes.length / PART));
    expect(parts).toBeGreaterThan(5);

    for (let n = 1; n <= parts; n++) {
      if (n === 3) await cutPart("big-mlp", uploadId, 3, slice(big.bytes, 3));
      else expect((await part("big-mlp", uploadId, n, slice(big.bytes, n))).status).toBe(200);
    }
    // What a resuming client sees: every part but the cut one.
    const shown = await api(`/v1/models/big-mlp/uploads/${uploadId}`);
    expect(shown.status).toBe(200);
    expect(shown.body.received.map((p: { partNumber: number }) => p.partNumber)).toEqual(Array.from({ length: parts }, (_, i) => i + 1).filter((n) => n !== 3));
    // Completing now names what is missing and keeps the upload.
    expectError(await api(`/v1/models/big-mlp/uploads/${uploadId}/complete`, { method: "POST" }), 400, "bad_request");
    // Part 3 again, and part 2 twice (a part sent again replaces the first).
    expect((await part("big-mlp", uploadId, 3, slice(big.bytes, 3))).status).toBe(200);
    expect((await part("big-mlp", uploadId, 2, slice(big.bytes, 2))).status).toBe(200);

    const done = await api(`/v1/models/big-mlp/uploads/${uploadId}/complete`, { method: "POST" });
    expect(done.status, JSON.stringify(done.body)).toBe(201);
    expect(done.body).toMatchObject({ model: "big-mlp", version: 1, sha256: big.sha256, size: big.bytes.length, runtime: "onnx" });
    expect(done.body.inputs).toEqual([{ name: "x", datatype: "FP32", shape: [-1, IN] }]);

    const x = Array.from({ length: IN }, (_, i) => ((i % 7) - 3) / 4);
    const answer = await api("/v2/models/big-mlp/infer", { json: { inputs: [{ name: "x", datatype: "FP32", shape: [1, IN], data: x }] } });
    expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(200);
    expectClose(answer.body.outputs[0].data, reference(x), 1e-3);

    // The upload itself is gone once the version exists.
    await waitUntil("the completed upload to be cleared", 20_000, async () => ((await api("/v1/models/big-mlp/uploads")).body.uploads.length === 0 ? true : undefined), 200);
    expectError(await api(`/v1/models/big-mlp/uploads/${uploadId}`), 404, "not_found");
  }, 300_000);

  it("another account cannot see, feed, complete or abort an upload (404, as if none existed)", async () => {
    const other = await call(`${E}/v1/accounts`, { key: mesh.adminToken, json: { name: "intruder" } });
    const otherKey = other.body.apiKey.key as string;
    await createModel("shared-name");
    await createModel("shared-name", otherKey); // the same model name in the other account
    const created = await api("/v1/models/shared-name/uploads", { json: { size: 1000 } });
    expect(created.status).toBe(201);
    const id = created.body.uploadId as string;
    const as = (path: string, init: Parameters<typeof call>[1] = {}) => call(`${E}${path}`, { ...init, key: otherKey });
    expectError(await as(`/v1/models/shared-name/uploads/${id}`), 404, "not_found");
    expectError(await part("shared-name", id, 1, new Uint8Array(1000), otherKey), 404, "not_found");
    expectError(await as(`/v1/models/shared-name/uploads/${id}/complete`, { method: "POST" }), 404, "not_found");
    expectError(await as(`/v1/models/shared-name/uploads/${id}`, { method: "DELETE" }), 404, "not_found");
    expect((await as("/v1/models/shared-name/uploads")).body.uploads).toEqual([]);
    // Nor under another of the owner's models.
    expectError(await api(`/v1/models/big-mlp/uploads/${id}`), 404, "not_found");
    // Still the owner's, untouched.
    expect((await api(`/v1/models/shared-name/uploads/${id}`)).status).toBe(200);
    expect((await api(`/v1/models/shared-name/uploads/${id}`, { method: "DELETE" })).body).toEqual({ uploadId: id, aborted: true });
  });

  it("bounds parts: over 64 MiB is 413, a wrong length or number is 400", async () => {
    const created = await api("/v1/models/big-mlp/uploads", { json: { size: 100 * MiB, partSize: 64 * MiB } });
    expect(created.status).toBe(201);
    const id = created.body.uploadId as string;
    const over = await rawPost(
      `${E}/v1/models/big-mlp/uploads/${id}/parts/1`,
      { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/octet-stream" },
      Buffer.alloc(64 * MiB + 1),
      { method: "PUT", announceOnly: true },
    );
    expectError(over, 413, "payload_too_large");
    // Small bodies: the edge answers from the path and Content-Length without reading them
    // (and would reset a large one mid-send).
    expectError(await part("big-mlp", id, 1, new Uint8Array(10)), 400, "bad_request");
    expectError(await part("big-mlp", id, 3, new Uint8Array(10)), 400, "bad_request");
    expectError(await part("big-mlp", id, 0, new Uint8Array(10)), 400, "bad_request");
    expect((await api(`/v1/models/big-mlp/uploads/${id}`, { method: "DELETE" })).status).toBe(200);
  });

  it("refuses a model with external data at completion, and leaves nothing in R2", async () => {
    const before = await r2Bytes();
    // 6 MiB of honest weights (two parts) plus one tensor read from another file.
    const padding = new Uint8Array(6 * MiB);
    const bytes = encodeModel({
      graph: {
        name: "leak",
        initializers: [
          { name: "pad", elemType: OnnxType.UINT8, dims: [padding.length], values: padding },
          { name: "w", elemType: OnnxType.UINT8, dims: [64], external: { location: "../other/model.onnx", offset: 0, length: 64 } },
        ],
        nodes: [{ opType: "Identity", inputs: ["w"], outputs: ["leak"] }],
        inputs: [],
        outputs: [{ name: "leak", elemType: OnnxType.UINT8, shape: [64] }],
      },
    }) as Uint8Array<ArrayBuffer>;
    const id = await uploadAll("big-mlp", bytes);
    expect(await r2Bytes()).toBeGreaterThan(before);
    const refused = await api(`/v1/models/big-mlp/uploads/${id}/complete`, { method: "POST" });
    expectError(refused, 400, "invalid_model_file");
    expect(refused.body.error).toMatch(/reads its data from outside the model/);
    expectError(await api(`/v1/models/big-mlp/uploads/${id}`), 404, "not_found");
    await waitUntil("R2 to hold no more than before the refused upload", 20_000, async () => ((await r2Bytes()) <= before ? true : undefined), 200);
    // And no version was made.
    expect((await api("/v1/models/big-mlp")).body.versions.map((v: { version: number }) => v.version)).toEqual([1]);
  });

  it("abort removes an upload and its parts", async () => {
    const before = await r2Bytes();
    const created = await api("/v1/models/big-mlp/uploads", { json: { size: 2 * PART, partSize: PART } });
    const id = created.body.uploadId as string;
    expect((await part("big-mlp", id, 1, new Uint8Array(PART))).status).toBe(200);
    expect(await r2Bytes()).toBeGreaterThan(before);
    expect((await api(`/v1/models/big-mlp/uploads/${id}`, { method: "DELETE" })).body).toEqual({ uploadId: id, aborted: true });
    expectError(await api(`/v1/models/big-mlp/uploads/${id}`), 404, "not_found");
    // (a small body: the edge answers 404 before reading it, and would reset a big one mid-send)
    expectError(await part("big-mlp", id, 2, new Uint8Array(1)), 404, "not_found");
    await waitUntil("R2 to hold no more than before the aborted upload", 20_000, async () => ((await r2Bytes()) <= before ? true : undefined), 200);
  });

  it("bounds an account's open uploads and an upload's size", async () => {
    for (const u of (await api("/v1/models/big-mlp/uploads")).body.uploads) await api(`/v1/models/big-mlp/uploads/${u.uploadId}`, { method: "DELETE" });
    expectError(await api("/v1/models/big-mlp/uploads", { json: { size: MAX_UPLOAD + 1 } }), 413, "payload_too_large");
    const ids: string[] = [];
    for (let i = 0; i < MAX_OPEN; i++) {
      const r = await api("/v1/models/big-mlp/uploads", { json: { size: 10 } });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
      ids.push(r.body.uploadId);
    }
    expectError(await api("/v1/models/big-mlp/uploads", { json: { size: 10 } }), 409, "conflict");
    for (const id of ids) expect((await api(`/v1/models/big-mlp/uploads/${id}`, { method: "DELETE" })).status).toBe(200);
    expect((await api("/v1/models/big-mlp/uploads", { json: { size: 10 } })).status).toBe(201);
  });

  it("npm run upload resumes an upload begun elsewhere, sends a cut part again, and completes it", async () => {
    // Same model, one bit of W1 changed: other bytes, other sha256.
    const bytes = big.bytes.slice();
    const mid = bytes.length >> 1; // inside W1
    bytes[mid] = bytes[mid]! ^ 1;
    const file = join(dir, "big-v2.onnx");
    await writeFile(file, bytes);
    for (const u of (await api("/v1/models/big-mlp/uploads")).body.uploads) await api(`/v1/models/big-mlp/uploads/${u.uploadId}`, { method: "DELETE" });
    // Begun elsewhere: created with the file's sha256, two parts sent, then the client went away.
    const created = await api("/v1/models/big-mlp/uploads", { json: { size: bytes.length, partSize: PART, sha256: sha256(bytes) } });
    for (const n of [1, 2]) expect((await part("big-mlp", created.body.uploadId, n, slice(bytes, n))).status).toBe(200);

    // The CLI talks to the edge through a proxy that cuts its first attempt at part 4 mid-body.
    const cut = 4;
    const attempts = new Map<number, number>();
    const proxy = http.createServer((req, res) => {
      const n = Number(/\/parts\/(\d+)$/.exec(req.url ?? "")?.[1] ?? 0);
      if (n) attempts.set(n, (attempts.get(n) ?? 0) + 1);
      const upstream = http.request(`${E}${req.url}`, { method: req.method, headers: req.headers }, (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      });
      upstream.on("error", () => res.destroy());
      if (n === cut && attempts.get(n) === 1) {
        let seen = 0;
        req.on("data", (d: Buffer) => {
          seen += d.length;
          upstream.write(d);
          if (seen > PART / 2) {
            upstream.destroy();
            req.socket.destroy();
          }
        });
      } else req.pipe(upstream);
    });
    await new Promise<void>((r) => proxy.listen(0, "127.0.0.1", r));
    const via = `http://127.0.0.1:${(proxy.address() as { port: number }).port}`;
    let out = "";
    let err = "";
    try {
      const child = spawn(process.execPath, ["--import", "tsx", "scripts/upload.ts", file, "--model", "big-mlp", "--edge", via, "--key", mesh.apiKey, "--part-size", "5"], {
        stdio: ["ignore", "pipe", "pipe"],
      });
      child.stdout.on("data", (d) => (out += d));
      child.stderr.on("data", (d) => (err += d));
      const code = await new Promise<number | null>((res) => child.on("exit", res));
      expect(code, err).toBe(0);
    } finally {
      proxy.close();
    }
    const version = JSON.parse(out);
    expect(version).toMatchObject({ model: "big-mlp", version: 2, sha256: sha256(bytes), size: bytes.length, uploadId: created.body.uploadId, partsSent: created.body.parts - 2 });
    // It resumed (parts 1 and 2 were never sent again) and sent the cut part a second time.
    expect([attempts.get(1), attempts.get(2), attempts.get(cut)]).toEqual([undefined, undefined, 2]);
    const x = Array.from({ length: IN }, (_, i) => (i % 3) / 2);
    const answer = await api("/v2/models/big-mlp/versions/2/infer", { json: { inputs: [{ name: "x", datatype: "FP32", shape: [1, IN], data: x }] } });
    expect(answer.status, JSON.stringify(answer.body).slice(0, 300)).toBe(200);
  }, 300_000);
});
