// What presigned artifact URLs cost against the region-signed edge URLs they replace, in one run
// on one local mesh (the edge in workerd is also the R2 stand-in here, so the download figure is
// the stand-in's SigV4 check and serving against the edge route's, not R2 against a Worker):
//
// - making a URL: protocol/presign.ts (SigV4: a SHA-256 and five HMACs) against signUrl (one HMAC);
// - a node's download of a 32 MiB artifact with its own cache code (gpu-node/model-cache.ts,
//   running sha256 to a temp dir) through each kind of URL, alternating, fresh cache each time.
//
// Run: npx tsx bench/artifact-urls.ts [--rounds N]   (default 4 downloads per kind)

import { mkdtemp, rm } from "node:fs/promises";
import { join } from "node:path";
import { ModelCache } from "../gpu-node/model-cache.js";
import { artifactKey, presignObject, type R2PresignConfig } from "../protocol/presign.js";
import { artifactUrl } from "../protocol/signing.js";
import { encodeModel, OnnxType } from "../scripts/onnx-writer.js";
import { QUICK, runBench } from "./harness.js";
import { fmt, printTable, ratio, round, summarize } from "./stats.js";

const rounds = Number(process.argv[process.argv.indexOf("--rounds") + 1] || 0) || (QUICK ? 2 : 4);
const REGION = "us-west";
const FLOATS = 8 * 1024 * 1024; // 32 MiB of weights

async function timeEach(n: number, f: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await f();
    out.push(performance.now() - t);
  }
  return out;
}

await runBench("artifact-urls", async (b) => {
  const mesh = await b.startMesh({ regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }] });
  const r2: R2PresignConfig = {
    endpoint: new URL(mesh.r2!.endpoint),
    bucket: mesh.r2!.bucket,
    credentials: { accessKeyId: mesh.r2!.accessKeyId, secretAccessKey: mesh.r2!.secretAccessKey, region: "auto" },
    standIn: true,
  };
  const secret = mesh.regionSecrets[REGION]!;

  // Making URLs.
  const N = 2_000;
  const sha0 = "ab".repeat(32);
  for (let i = 0; i < 200; i++) await presignObject(r2, artifactKey(sha0), 3600), await artifactUrl(secret, mesh.edge, REGION, sha0, Date.now() + 3_600_000);
  const presignMs = (await timeEach(1, async () => { for (let i = 0; i < N; i++) await presignObject(r2, artifactKey(sha0), 3600); }))[0]! / N;
  const hmacMs = (await timeEach(1, async () => { for (let i = 0; i < N; i++) await artifactUrl(secret, mesh.edge, REGION, sha0, Date.now() + 3_600_000); }))[0]! / N;

  // A 32 MiB artifact, uploaded through the API.
  const w = new Float32Array(FLOATS);
  w[0] = 1;
  const bytes = encodeModel({
    graph: {
      name: "weights",
      nodes: [{ opType: "ReduceSum", inputs: ["w"], outputs: ["s"] }, { opType: "Add", inputs: ["x", "s"], outputs: ["y"] }],
      inputs: [{ name: "x", elemType: OnnxType.FLOAT, shape: [1, 1] }],
      outputs: [{ name: "y", elemType: OnnxType.FLOAT, shape: [1, 1] }],
      initializers: [{ name: "w", elemType: OnnxType.FLOAT, dims: [FLOATS], values: new Uint8Array(w.buffer) }],
    },
  });
  const auth = { authorization: `Bearer ${mesh.apiKey}` };
  await fetch(`${mesh.edge}/v1/models`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ name: "bench-weights" }) });
  const up = (await (await fetch(`${mesh.edge}/v1/models/bench-weights/versions`, { method: "POST", headers: { ...auth, "content-type": "application/octet-stream" }, body: Buffer.from(bytes) })).json()) as { sha256: string; size: number };
  if (!up.sha256) throw new Error(`upload failed: ${JSON.stringify(up)}`);

  const download = async (url: string) => {
    const dir = await mkdtemp(join(b.tmpDir, "cache-"));
    try {
      await new ModelCache(dir, { budgetBytes: 256 * 1024 * 1024 }).get(url, up.sha256, up.size, () => undefined);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
  const presigned = () => presignObject(r2, artifactKey(up.sha256), 3600);
  const signed = () => artifactUrl(secret, mesh.edge, REGION, up.sha256, Date.now() + 3_600_000);
  await download(await presigned());
  await download(await signed());
  const pre: number[] = [];
  const edge: number[] = [];
  for (let i = 0; i < rounds; i++) {
    pre.push(...(await timeEach(1, async () => download(await presigned()))));
    edge.push(...(await timeEach(1, async () => download(await signed()))));
  }
  const p = summarize(pre);
  const e = summarize(edge);
  const mibps = (ms: number) => up.size / 2 ** 20 / (ms / 1000);

  printTable(
    ["what", "presigned (SigV4)", "region-signed edge", "ratio presigned / edge"],
    [
      ["make one URL, µs", fmt(presignMs * 1000, 1), fmt(hmacMs * 1000, 1), fmt(ratio(presignMs, hmacMs))],
      [`download ${fmt(up.size / 2 ** 20, 0)} MiB, p50 ms`, fmt(p.p50, 0), fmt(e.p50, 0), fmt(ratio(p.p50, e.p50))],
      ["download, MiB/s at p50", fmt(mibps(p.p50), 0), fmt(mibps(e.p50), 0), fmt(ratio(mibps(p.p50), mibps(e.p50)))],
    ],
  );
  await b.saveResults({
    rounds,
    artifactBytes: up.size,
    makeUrlUs: { presigned: round(presignMs * 1000), edgeSigned: round(hmacMs * 1000), ratio: round(ratio(presignMs, hmacMs)) },
    downloadMs: { presigned: p, edgeSigned: e, ratioP50: round(ratio(p.p50, e.p50)) },
    note: "Locally the edge (workerd) is also the R2 stand-in: the download ratio compares the stand-in's SigV4 check and serving with the edge route's, not R2 with a Worker.",
  });
});
