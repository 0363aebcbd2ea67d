// Upload throughput: a model file through the edge's multipart upload routes (create, parts,
// complete: the Worker streams each part into R2's multipart API, then reads the assembled file
// back for its sha256 and signature and copies it to its content address) against a plain R2
// put of the same bytes (one HTTP request into a trivial Worker that streams its body into
// `bucket.put`, in Miniflare, with the same R2 implementation), and the single-body upload
// (POST /v1/models/{m}/versions, the whole file in Worker memory; only up to 100 MB), in one run.
//
// Run: npm run bench:upload            (a 96 MB model, 3 rounds)
//      npx tsx bench/upload.ts --quick (a 24 MB model, 1 round)
//      npx tsx bench/upload.ts --mb 300
//
// Prints a table (MB/s, seconds, ratio to the plain put) and writes bench/results/upload-<timestamp>.json
// and upload-latest.json.

import { createHash } from "node:crypto";
import { join } from "node:path";
import { Log, LogLevel, Miniflare } from "miniflare";
import type { MeshHandle } from "../local/mesh.js";
import { encodeModel, OnnxType } from "../scripts/onnx-writer.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { fmt, printTable, round } from "./stats.js";

const mbArg = process.argv.indexOf("--mb");
const MB = mbArg > 0 ? Number(process.argv[mbArg + 1]) : QUICK ? 24 : 96;
const ROUNDS = QUICK ? 1 : 3;
const PART = 16 * 1024 * 1024;
const CONCURRENCY = 3;
const SINGLE_BODY_MAX = 100 * 1024 * 1024;


/** A model of about `mb` MB: one MatMul whose weights are the bulk (pseudo-random, so nothing compresses them). */
function model(mb: number, seed: number): Uint8Array<ArrayBuffer> {
  const cols = 256;
  const rows = Math.max(1, Math.floor((mb * 1e6) / 4 / cols));
  const w = new Uint8Array(rows * cols * 4);
  let s = seed >>> 0 || 1;
  const view = new Uint32Array(w.buffer);
  for (let i = 0; i < view.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    view[i] = (s & 0x3c7fffff) >>> 0; // finite, small floats
  }
  return encodeModel({
    graph: {
      name: "bench-upload",
      initializers: [{ name: "W", elemType: OnnxType.FLOAT, dims: [rows, cols], values: w }],
      nodes: [{ opType: "MatMul", inputs: ["x", "W"], outputs: ["y"] }],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1, rows] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1, cols] }],
    },
  }) as Uint8Array<ArrayBuffer>;
}

async function must(res: Response, what: string): Promise<any> {
  const text = await res.text();
  if (!res.ok) throw new Error(`${what}: ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

interface Multipart {
  seconds: number;
  partsSeconds: number;
  completeSeconds: number;
}

async function multipart(mesh: MeshHandle, name: string, bytes: Uint8Array<ArrayBuffer>): Promise<Multipart> {
  const auth = { authorization: `Bearer ${mesh.apiKey}` };
  const base = `${mesh.edge}/v1/models/${name}/uploads`;
  const t0 = performance.now();
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const u = await must(await fetch(base, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ size: bytes.length, partSize: PART, sha256 }) }), "create");
  let next = 1;
  const worker = async () => {
    while (next <= u.parts) {
      const n = next++;
      const body = bytes.subarray((n - 1) * PART, n * PART);
      await must(await fetch(`${base}/${u.uploadId}/parts/${n}`, { method: "PUT", headers: { ...auth, "content-type": "application/octet-stream" }, body }), `part ${n}`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONCURRENCY, u.parts) }, worker));
  const t1 = performance.now();
  await must(await fetch(`${base}/${u.uploadId}/complete`, { method: "POST", headers: auth }), "complete");
  const t2 = performance.now();
  return { seconds: (t2 - t0) / 1000, partsSeconds: (t1 - t0) / 1000, completeSeconds: (t2 - t1) / 1000 };
}

async function singleBody(mesh: MeshHandle, name: string, bytes: Uint8Array<ArrayBuffer>): Promise<number> {
  const t0 = performance.now();
  await must(
    await fetch(`${mesh.edge}/v1/models/${name}/versions`, { method: "POST", headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/octet-stream" }, body: bytes }),
    "single-body upload",
  );
  return (performance.now() - t0) / 1000;
}

await runBench("upload", async (b) => {
  err(`generating ${ROUNDS} models of ~${MB} MB`);
  const files = Array.from({ length: ROUNDS }, (_, i) => model(MB, 11 + i));
  const size = files[0]!.length;
  err("starting the mesh");
  const mesh = await b.startMesh({ progress: (l) => process.env.BENCH_VERBOSE && err(l) });
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const plain = new Miniflare({
    host: "127.0.0.1",
    port,
    modules: true,
    // The trivial route: the request body streamed into one R2 put.
    script: `export default { async fetch(req, env) { await env.B.put(new URL(req.url).pathname.slice(1), req.body); return new Response("{}"); } }`,
    r2Buckets: ["B"],
    r2Persist: join(b.tmpDir, "plain-r2"),
    cf: { colo: "SJC" }, // offline: no lookup of a real request.cf
    log: new Log(LogLevel.WARN),
  });
  b.defer(() => plain.dispose());
  await plain.ready;
  const create = await fetch(`${mesh.edge}/v1/models`, { method: "POST", headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" }, body: JSON.stringify({ name: "bench-upload" }) });
  await must(create, "create model");

  const singleBodyFailures: string[] = [];
  const rows: Record<string, number[]> = { plainPut: [], multipart: [], multipartParts: [], multipartComplete: [], singleBody: [] };
  for (let r = 0; r < ROUNDS; r++) {
    const bytes = files[r]!;
    err(`round ${r + 1}/${ROUNDS}`);
    const t0 = performance.now();
    await must(await fetch(`http://127.0.0.1:${port}/obj-${r}`, { method: "PUT", body: bytes }), "plain put");
    rows.plainPut!.push((performance.now() - t0) / 1000);
    const m = await multipart(mesh, "bench-upload", bytes);
    rows.multipart!.push(m.seconds);
    rows.multipartParts!.push(m.partsSeconds);
    rows.multipartComplete!.push(m.completeSeconds);
    if (size <= SINGLE_BODY_MAX) {
      // Other bytes than the multipart round's (its artifact exists now, so the put would be the same work anyway).
      const other = bytes.slice();
      other[other.length >> 1] = other[other.length >> 1]! ^ 1;
      try {
        rows.singleBody!.push(await singleBody(mesh, "bench-upload", other));
      } catch (e) {
        // Kept as a finding: the whole body in Worker memory is what multipart avoids.
        singleBodyFailures.push((e as Error).message + ((e as Error).cause ? ` (${String((e as Error).cause)})` : ""));
        err(`single-body upload failed: ${singleBodyFailures.at(-1)}`);
      }
    }
  }

  const median = (xs: number[]) => (xs.length === 0 ? NaN : [...xs].sort((a, b) => a - b)[xs.length >> 1]!);
  const mbps = (s: number) => size / 1e6 / s;
  const plainS = median(rows.plainPut!);
  const table: string[][] = [];
  const line = (label: string, key: string, note: string) => {
    const s = median(rows[key]!);
    if (Number.isNaN(s)) return table.push([label, "-", "-", "-", note]);
    return table.push([label, fmt(s, 2), fmt(mbps(s), 1), fmt(s / plainS, 2), note]);
  };
  say();
  say(`upload of a ${fmt(size / 1e6, 1)} MB model, median of ${ROUNDS} round(s), ${CONCURRENCY} parts in flight, parts of ${PART / 1024 / 1024} MiB`);
  line("plain R2 put (trivial Worker route)", "plainPut", "one request, body streamed into bucket.put");
  line("multipart upload, whole", "multipart", "create + parts + complete");
  line("  of which parts", "multipartParts", "bodies streamed into uploadPart");
  line("  of which complete", "multipartComplete", "assemble, read back (sha256 + signature), copy to content address");
  line(
    "single-body upload (POST .../versions)",
    "singleBody",
    size > SINGLE_BODY_MAX ? "not possible over 100 MB" : `whole file in Worker memory${singleBodyFailures.length ? `; ${singleBodyFailures.length} of ${ROUNDS} failed` : ""}`,
  );
  printTable(["path", "seconds", "MB/s", "x plain put", "what"], table, ["left", "right", "right", "right", "left"]);

  await b.saveResults({
    bytes: size,
    rounds: ROUNDS,
    partBytes: PART,
    concurrency: CONCURRENCY,
    seconds: Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, v.map((x) => round(x, 3))])),
    medianMBps: Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, round(mbps(median(v)), 2)])),
    singleBodyFailures,
    ratioToPlainPut: Object.fromEntries(Object.entries(rows).map(([k, v]) => [k, round(median(v) / plainS, 3)])),
  });
});
