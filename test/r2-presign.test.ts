// Artifacts through presigned R2 URLs. Pure parts first: which URL the edge (download-urls.ts)
// and a router's keep-warm reader (policy-reader.ts) hand a node, by configuration, and how the
// R2_* variables are validated. Then the real mesh (workerd edge as the local R2 stand-in, a
// router, a node with onnxruntime-node): the node loads and runs a model through a presigned
// URL; such a URL is served whole and by Range; a tampered, expired or other-key URL is refused
// 403 with the error envelope; and the node's cache resumes a download cut midway from it.

import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelCache } from "../gpu-node/model-cache.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { artifactKey, presignGet, presignObject, readR2Presign, verifyPresignedGet, type R2PresignConfig } from "../protocol/presign.js";
import { MODEL_POLICIES_KEY, type ModelPolicyRecord } from "../protocol/region-report.js";
import { ConfigError as RouterConfigError, routerConfigFromEnv } from "../regions/config.js";
import { startPolicyReader, type PolicyStore } from "../regions/policy-reader.js";
import type { Scheduler } from "../regions/scheduler.js";
import { WebSocket } from "ws";
import { call, expectError, mlpBody } from "./helpers/mesh-client.js";
import { cutFirstDownload } from "./helpers/cut-download.js";
import { waitUntil } from "./helpers/region-harness.js";
import { nodeHello } from "./helpers/fakes.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const SHA = "ab".repeat(32);
const R2_VARS = {
  R2_S3_ENDPOINT: "https://acct123.r2.cloudflarestorage.com",
  R2_BUCKET: "mesh-artifacts",
  R2_ACCESS_KEY_ID: "read-only-key-id",
  R2_SECRET_ACCESS_KEY: "read-only-secret-0123456789abcdef",
};

describe("which URL a node gets", () => {
  const fail = (msg: string): never => {
    throw new Error(msg);
  };
  // The edge passes (origin) => localMode && origin === PUBLIC_ORIGIN; a router passes () => true.
  const edgeLocal = (origin: string) => origin === "http://127.0.0.1:8787";
  const edgeProduction = () => false;

  it("the R2 variables are all or none, an https origin with no path, or the edge's own origin + /r2 where allowed", () => {
    expect(readR2Presign({}, edgeProduction, fail)).toBeNull();
    const r2 = readR2Presign(R2_VARS, edgeProduction, fail)!;
    expect(r2.endpoint.href).toBe("https://acct123.r2.cloudflarestorage.com/");
    expect(r2.credentials.region).toBe("auto");
    expect(r2.standIn).toBe(false);
    const { R2_BUCKET: _b, ...missingBucket } = R2_VARS;
    expect(() => readR2Presign(missingBucket, edgeProduction, fail)).toThrow(/missing R2_BUCKET/);
    expect(() => readR2Presign({ ...R2_VARS, R2_S3_ENDPOINT: "http://acct123.r2.cloudflarestorage.com" }, edgeProduction, fail)).toThrow(/https origin/);
    expect(() => readR2Presign({ ...R2_VARS, R2_S3_ENDPOINT: "https://acct123.r2.cloudflarestorage.com/bucket" }, edgeProduction, fail)).toThrow(/no path/);
    expect(() => readR2Presign({ ...R2_VARS, R2_BUCKET: "Not_A_Bucket" }, edgeProduction, fail)).toThrow(/R2_BUCKET/);
    const standIn = { ...R2_VARS, R2_S3_ENDPOINT: "http://127.0.0.1:8787/r2" };
    expect(() => readR2Presign(standIn, edgeProduction, fail)).toThrow(/https origin/);
    expect(readR2Presign(standIn, edgeLocal, fail)!.standIn).toBe(true);
    expect(() => readR2Presign({ ...standIn, R2_S3_ENDPOINT: "http://127.0.0.1:9999/r2" }, edgeLocal, fail)).toThrow(/https origin/);

    const router = { MESH_REGION: "us-west", MESH_SECRET: "west-secret-0123456789", NODE_TOKEN: "node-token-0123456789" };
    expect(routerConfigFromEnv(router).r2).toBeNull();
    expect(routerConfigFromEnv({ ...router, ...R2_VARS }).r2?.bucket).toBe("mesh-artifacts");
    expect(routerConfigFromEnv({ ...router, ...standIn }).r2?.standIn).toBe(true);
    expect(() => routerConfigFromEnv({ ...router, R2_ACCESS_KEY_ID: "read-only-key-id" })).toThrow(RouterConfigError);
  });

  it("the edge's calls: a presigned R2 URL when R2 credentials are configured, else the region-signed edge route", async () => {
    // Imported by path at run time, as in region-client.test.ts: the Worker's files are type-checked
    // against workers-types (edge/tsconfig.json), which this Node project does not load.
    type DownloadUrls = {
      downloadUrl(config: unknown, region: string, kind: "artifact" | "tokenizer", sha256: string): Promise<string>;
      bundleFileRefs(config: unknown, region: string, files: { name: string; sha256: string; size: number }[]): Promise<{ url: string }[]>;
    };
    const urls = (await import(/* @vite-ignore */ "../edge/download-urls.js" as string)) as DownloadUrls;
    const base = { regionSecrets: { "us-west": { current: "west-secret-0123456789", previous: null } }, publicOrigin: "https://edge.example" };
    const r2 = readR2Presign(R2_VARS, () => false, fail)!;
    const presigned = new URL(await urls.downloadUrl({ ...base, r2 }, "us-west", "artifact", SHA));
    expect(presigned.origin + presigned.pathname).toBe(`https://acct123.r2.cloudflarestorage.com/mesh-artifacts/${artifactKey(SHA)}`);
    expect(presigned.searchParams.get("X-Amz-Expires")).toBe("3600");
    expect(await verifyPresignedGet(r2.credentials, presigned, presigned.host)).toEqual({ ok: true });
    const [file] = await urls.bundleFileRefs({ ...base, r2 }, "us-west", [{ name: "w.bin", sha256: "cd".repeat(32), size: 4 }]);
    expect(new URL(file!.url).pathname).toBe(`/mesh-artifacts/${artifactKey("cd".repeat(32))}`);
    expect(new URL(await urls.downloadUrl({ ...base, r2 }, "us-west", "tokenizer", SHA)).pathname).toBe(`/mesh-artifacts/tokenizers/${SHA}.json`);
    const signed = new URL(await urls.downloadUrl({ ...base, r2: null }, "us-west", "artifact", SHA));
    expect(signed.origin + signed.pathname).toBe(`https://edge.example/internal/artifacts/${SHA}`);
    expect(signed.searchParams.get("region")).toBe("us-west");
  });

  it("a router's keep-warm loads get presigned URLs when it has R2 credentials, region-signed edge URLs otherwise", async () => {
    const record: ModelPolicyRecord = {
      keepWarm: 1,
      replicas: null,
      account: "acct",
      name: "m",
      version: 1,
      sha256: SHA,
      size: 10,
      signature: { inputs: [], outputs: [] },
      artifactBase: "https://edge.example",
      files: [{ name: "w.bin", sha256: "cd".repeat(32), size: 4 }],
      regions: null,
    };
    const store: PolicyStore = { hgetall: async <T>(key: string) => (key === MODEL_POLICIES_KEY ? ({ "acct/m@1": record } as unknown as T) : null) };
    const quiet = () => undefined;
    const read = async (r2: R2PresignConfig | null) => {
      const policies = new Map<string, { ref: { artifactUrl: string; files?: { url: string }[] } }>();
      const reader = startPolicyReader("us-west", store, "west-secret-0123456789", 60_000, { policies } as unknown as Scheduler, quiet, r2);
      await reader.readNow();
      reader.stop();
      return policies.get("acct/m@1")!.ref;
    };
    const r2 = routerConfigFromEnv({ MESH_REGION: "us-west", MESH_SECRET: "west-secret-0123456789", NODE_TOKEN: "node-token-0123456789", ...R2_VARS }).r2!;
    const presigned = await read(r2);
    const url = new URL(presigned.artifactUrl);
    expect(url.pathname).toBe(`/mesh-artifacts/${artifactKey(SHA)}`);
    expect(await verifyPresignedGet(r2.credentials, url, url.host)).toEqual({ ok: true });
    expect(new URL(presigned.files![0]!.url).pathname).toBe(`/mesh-artifacts/${artifactKey("cd".repeat(32))}`);
    const signed = new URL((await read(null)).artifactUrl);
    expect(signed.origin + signed.pathname).toBe(`https://edge.example/internal/artifacts/${SHA}`);
  });
});

describe("through the real mesh, with the edge as the local R2 stand-in", () => {
  let mesh: MeshHandle;
  let stateDir: string;
  let model: Buffer;
  let modelSha: string;
  let r2: R2PresignConfig;
  const servers: Server[] = [];
  const dirs: string[] = [];

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "r2-presign-mesh-"));
    // The real node's memory is kept small so a load goes to the probe below (placement prefers room).
    mesh = await startMesh({ stateDir, regions: [{ name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 }], nodeEnv: { MEMORY_BUDGET_MB: "512" }, progress: () => undefined });
    const m = await call(`${mesh.edge}/v1/models/demo-mlp`, { key: mesh.apiKey });
    modelSha = m.body.versions.find((v: { version: number }) => v.version === 1).sha256;
    r2 = {
      endpoint: new URL(mesh.r2!.endpoint),
      bucket: mesh.r2!.bucket,
      credentials: { accessKeyId: mesh.r2!.accessKeyId, secretAccessKey: mesh.r2!.secretAccessKey, region: "auto" },
      standIn: true,
    };
  }, 180_000);

  afterAll(async () => {
    for (const s of servers) s.close();
    await mesh?.stop();
    await rm(stateDir, { recursive: true, force: true });
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  const presigned = (s: string, expiresS = 600) => presignObject(r2, artifactKey(s), expiresS);

  it("the edge hands the node a presigned URL on its stand-in, which serves the model", async () => {
    // A probe in a node's place on the real router (the wire a node sees), with more memory
    // than the real node so the router places the load on it; it records the load and refuses it.
    const probe = new WebSocket(mesh.regions["us-west"]!.replace(/^http/, "ws") + "/v1/nodes", { headers: { authorization: `Bearer ${mesh.nodeToken}` } });
    const loads: { sha256: string; url: string }[] = [];
    probe.on("message", (data) => {
      const msg = JSON.parse(String(data)) as { t: string; key?: string; sha256?: string; url?: string };
      if (msg.t !== "load") return;
      loads.push({ sha256: msg.sha256!, url: msg.url! });
      probe.send(JSON.stringify({ t: "load_failed", key: msg.key, message: "probe" }));
    });
    await new Promise<void>((resolve, reject) => probe.once("open", resolve).once("error", reject));
    probe.send(
      JSON.stringify(nodeHello("url-probe", { accelerator: { kind: "cpu", name: "probe", memoryMb: 10_000_000 }, memoryBudgetMb: 10_000_000 })),
    );
    try {
      await waitUntil("probe in the region", 10_000, async () => ((await mesh.regionStatus("us-west")).nodes.some((n) => n.id === "url-probe") ? true : undefined));
      // A model no node holds yet (the same bytes as demo-mlp under another name), so the router loads it.
      const bytes = Buffer.from(await (await fetch(await presigned(modelSha))).arrayBuffer());
      expect((await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name: "probe-mlp" } })).status).toBe(201);
      const up = await call(`${mesh.edge}/v1/models/probe-mlp/versions`, { key: mesh.apiKey, body: bytes, headers: { "content-type": "application/octet-stream" } });
      expect(up.status, JSON.stringify(up.body)).toBe(201);
      await call(`${mesh.edge}/v2/models/probe-mlp/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]) });
      const load = loads.find((l) => l.sha256 === modelSha);
      expect(load, JSON.stringify(loads)).toBeDefined();
      const url = new URL(load!.url);
      expect(url.origin + url.pathname).toBe(`${mesh.edge}/r2/${r2.bucket}/${artifactKey(modelSha)}`);
      expect(url.searchParams.get("X-Amz-Credential")).toMatch(new RegExp(`^${mesh.r2!.accessKeyId}/\\d{8}/auto/s3/aws4_request$`));
      const res = await fetch(url);
      expect(res.status).toBe(200);
      expect(sha(Buffer.from(await res.arrayBuffer()))).toBe(modelSha);
    } finally {
      probe.close();
      await waitUntil("probe gone", 10_000, async () => ((await mesh.regionStatus("us-west")).nodes.some((n) => n.id === "url-probe") ? undefined : true));
    }
  });

  it("the node loads and runs a model through a presigned URL", async () => {
    const a = await call(`${mesh.edge}/v2/models/demo-mlp/versions/1/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]) });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.body.outputs[0].shape).toEqual([1, 3]);
  });

  it("serves a presigned URL whole and by Range", async () => {
    const url = await presigned(modelSha);
    expect(url.startsWith(`${mesh.edge}/r2/${r2.bucket}/artifacts/`)).toBe(true);
    const whole = await fetch(url);
    expect(whole.status).toBe(200);
    expect(whole.headers.get("accept-ranges")).toBe("bytes");
    model = Buffer.from(await whole.arrayBuffer());
    expect(sha(model)).toBe(modelSha);
    expect(whole.headers.get("content-length")).toBe(String(model.length));

    const part = await fetch(url, { headers: { range: "bytes=10-99" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 10-99/${model.length}`);
    expect(Buffer.from(await part.arrayBuffer())).toEqual(model.subarray(10, 100));
    const tail = await fetch(url, { headers: { range: "bytes=-7" } });
    expect(Buffer.from(await tail.arrayBuffer())).toEqual(model.subarray(model.length - 7));
  });

  it("refuses a tampered, expired or other-key URL with 403 and the error envelope, with or without Range", async () => {
    const url = await presigned(modelSha);
    const other = "c".repeat(64);
    const cases: [string, string][] = [
      ["another object", url.replace(modelSha, other)],
      ["another signature", url.replace(/X-Amz-Signature=[0-9a-f]+/, `X-Amz-Signature=${"0".repeat(64)}`)],
      ["a longer life", url.replace(/X-Amz-Expires=\d+/, "X-Amz-Expires=604800")],
      ["no signature", url.replace(/&X-Amz-Signature=[0-9a-f]+/, "")],
      ["expired", await presignGet(r2.credentials, r2.endpoint, `${r2.bucket}/${artifactKey(modelSha)}`, 60, new Date(Date.now() - 3_600_000))],
      ["another key", await presignGet({ ...r2.credentials, accessKeyId: "someone-else", secretAccessKey: "another-secret-0123456789" }, r2.endpoint, `${r2.bucket}/${artifactKey(modelSha)}`, 600)],
      ["another secret", await presignGet({ ...r2.credentials, secretAccessKey: "another-secret-0123456789" }, r2.endpoint, `${r2.bucket}/${artifactKey(modelSha)}`, 600)],
      ["no query at all", `${mesh.edge}/r2/${r2.bucket}/${artifactKey(modelSha)}`],
    ];
    for (const [why, bad] of cases) {
      for (const headers of [{}, { range: "bytes=0-9" }] as Record<string, string>[]) {
        const a = await call(bad, { headers });
        expect(a.status, why).toBe(403);
        expectError(a, 403, "forbidden");
      }
    }
  });

  it("the node's cache resumes a download cut midway from a presigned URL, into the right file", async () => {
    const url = new URL(await presigned(modelSha));
    const cutAt = Math.floor(model.length / 2);
    const seen: (string | null)[] = [];
    // A proxy in front of the stand-in: the first download is cut at half; later ones pass through.
    // The signature names the endpoint's host, so the same URL path works through the proxy.
    const server = createServer(cutFirstDownload((path) => `${mesh.edge}${path}`, cutAt, seen));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const proxy = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const dir = await mkdtemp(join(tmpdir(), "r2-presign-cache-"));
    dirs.push(dir);
    const cache = new ModelCache(dir, { budgetBytes: 64 * 1024 * 1024, retryBaseMs: 1 });
    const art = await cache.get(`${proxy}${url.pathname}${url.search}`, modelSha, model.length, () => undefined);
    expect(sha(await readFile(art.path))).toBe(modelSha);
    expect(seen.length).toBe(2);
    expect(seen[0]).toBeNull();
    expect(seen[1]).toBe(`bytes=${cutAt}-`);
  });
});
