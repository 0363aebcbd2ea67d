// The node's model cache against real HTTP servers (node:http on free ports) and a real temp
// directory: a download cut midway resumes with a Range request into one correct file; a server
// that sends more than the named size is cut off before the disk takes the excess; the disk
// cache keeps to its byte budget by evicting the least recently used version that no session or
// load holds. Then, through the real edge in workerd: the artifact route answers a Range request
// on a signed URL with 206, refuses it without one, and the cache resumes a cut download from it.

import { createHash, randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ModelCache, versionKey } from "../gpu-node/model-cache.js";
import { nodeConfigFromEnv } from "../gpu-node/config.js";
import { parseRange } from "../protocol/http-range.js";
import { artifactUrl } from "../protocol/signing.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { call, expectError } from "./helpers/mesh-client.js";
import { cutFirstDownload } from "./helpers/cut-download.js";
import { fp32, RegionHarness, rowsOf } from "./helpers/region-harness.js";
import { weightModel } from "./helpers/weight-models.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
const servers: Server[] = [];
const dirs: string[] = [];

async function serve(handler: Handler): Promise<string> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/artifact`;
}

async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "model-cache-"));
  dirs.push(d);
  return d;
}

afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** Serves `data`, honouring `Range: bytes=N-` with 206 (what R2 and the edge do). */
function rangeServer(data: Buffer, seen: (string | null)[], first?: (res: ServerResponse) => void): Handler {
  return (req, res) => {
    const range = req.headers.range ?? null;
    seen.push(range);
    if (seen.length === 1 && first) return first(res);
    const m = range ? /^bytes=(\d+)-$/.exec(range) : null;
    if (m) {
      const start = Number(m[1]);
      res.writeHead(206, { "content-length": data.length - start, "content-range": `bytes ${start}-${data.length - 1}/${data.length}` });
      res.end(data.subarray(start));
    } else {
      res.writeHead(200, { "content-length": data.length });
      res.end(data);
    }
  };
}

describe("downloads", () => {
  it("a download cut midway resumes from the bytes on disk with a Range request, into one correct file", async () => {
    const data = randomBytes(3 * 1024 * 1024);
    const cut = 1024 * 1024 + 17;
    const seen: (string | null)[] = [];
    // The first answer promises everything, sends `cut` bytes, and drops the connection.
    const url = await serve(
      rangeServer(data, seen, (res) => {
        res.writeHead(200, { "content-length": data.length });
        res.write(data.subarray(0, cut), () => res.socket?.destroy());
      }),
    );
    const dir = await tempDir();
    const cache = new ModelCache(dir, { budgetBytes: 64 * 1024 * 1024, retryBaseMs: 1 });
    const progress: number[] = [];
    const art = await cache.get(url, sha(data), data.length, (bytes, total) => {
      expect(total).toBe(data.length);
      progress.push(bytes);
    });
    expect(art.cached).toBe(false);
    expect(sha(await readFile(art.path))).toBe(sha(data));
    expect(art.path).toBe(join(dir, sha(data), "model.onnx"));
    // Exactly one resume, from a point past 0 and no further than what was sent.
    expect(seen.length).toBe(2);
    expect(seen[0]).toBeNull();
    const from = Number(/^bytes=(\d+)-$/.exec(seen[1] ?? "")?.[1]);
    expect(from).toBeGreaterThan(0);
    expect(from).toBeLessThanOrEqual(cut);
    // Progress never goes back: the resumed try reports from where it resumed.
    for (let i = 1; i < progress.length; i++) expect(progress[i]).toBeGreaterThanOrEqual(progress[i - 1]!);
    expect(progress).toContain(from);
    expect(progress.at(-1)).toBe(data.length);
    expect(await readdir(join(dir, ".partial"))).toEqual([]);
  });

  it("a server that ignores Range and sends all again still gives one correct file", async () => {
    const data = randomBytes(256 * 1024);
    const seen: (string | null)[] = [];
    let n = 0;
    const url = await serve((req, res) => {
      seen.push(req.headers.range ?? null);
      res.writeHead(200, { "content-length": data.length });
      if (n++ === 0) res.write(data.subarray(0, 100_000), () => res.socket?.destroy());
      else res.end(data);
    });
    const cache = new ModelCache(await tempDir(), { budgetBytes: 64 * 1024 * 1024, retryBaseMs: 1 });
    const art = await cache.get(url, sha(data), data.length, () => undefined);
    expect(sha(await readFile(art.path))).toBe(sha(data));
    expect(seen[1]).toMatch(/^bytes=\d+-$/);
  });

  it("a server that streams more than the size the router named is cut off before the disk takes the excess", async () => {
    const size = 200_000;
    const chunk = randomBytes(64 * 1024);
    let requests = 0;
    let closed = false;
    // No Content-Length, and it never ends: only the client's bound stops it.
    const url = await serve((_req, res) => {
      requests++;
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.on("close", () => (closed = true));
      const pump = () => {
        while (!res.destroyed && res.write(chunk));
        if (!res.destroyed) res.once("drain", pump);
      };
      pump();
    });
    const dir = await tempDir();
    const cache = new ModelCache(dir, { budgetBytes: 64 * 1024 * 1024, retryBaseMs: 1 });
    let most = 0;
    await expect(
      cache.get(url, "a".repeat(64), size, (bytes) => {
        most = Math.max(most, bytes);
      }),
    ).rejects.toThrow(/sent more than the 200000 bytes/);
    expect(most).toBeLessThanOrEqual(size);
    expect(requests).toBe(1); // a lying server gets no second try
    expect(await readdir(join(dir, ".partial"))).toEqual([]);
    expect(await stat(cache.pathFor("a".repeat(64))).catch(() => null)).toBeNull();
    await waitFor(() => closed);
  });

  it("a declared length other than the named size fails at once, before any byte is written", async () => {
    const data = randomBytes(1000);
    let requests = 0;
    const url = await serve((_req, res) => {
      requests++;
      res.writeHead(200, { "content-length": data.length + 1 });
      res.end(Buffer.concat([data, Buffer.from([0])]));
    });
    const dir = await tempDir();
    const cache = new ModelCache(dir, { budgetBytes: 1024 * 1024, retryBaseMs: 1 });
    await expect(cache.get(url, sha(data), data.length, () => undefined)).rejects.toThrow(/sends 1001 bytes; the router named 1000/);
    expect(requests).toBe(1);
  });

  it("a download that keeps ending short fails clearly after its bounded tries", async () => {
    const data = randomBytes(100_000);
    const seen: (string | null)[] = [];
    // Every answer stops at byte 40000 and drops the connection.
    const url = await serve((req, res) => {
      const range = req.headers.range ?? null;
      seen.push(range);
      const start = Number(/^bytes=(\d+)-$/.exec(range ?? "")?.[1] ?? 0);
      if (start === 0) res.writeHead(200, { "content-length": data.length });
      else res.writeHead(206, { "content-length": data.length - start, "content-range": `bytes ${start}-${data.length - 1}/${data.length}` });
      res.write(data.subarray(start, Math.max(start, 40_000)), () => res.socket?.destroy());
    });
    const dir = await tempDir();
    const cache = new ModelCache(dir, { budgetBytes: 1024 * 1024, retries: 2, retryBaseMs: 1 });
    await expect(cache.get(url, sha(data), data.length, () => undefined)).rejects.toThrow(/download failed after 3 tries at 40000 of 100000 bytes/);
    // The first try, then two resumes that brought nothing.
    expect(seen.length).toBe(3);
    expect(await readdir(join(dir, ".partial"))).toEqual([]);
  });

  it("nothing listening fails the download at once; a connection refused after bytes came is a cut, resumed", async () => {
    const cache = new ModelCache(await tempDir(), { budgetBytes: 1024 * 1024, retryBaseMs: 60_000 });
    // A port nothing listens on: with a minute of back-off, only an immediate failure passes in time.
    const closed = await serve(() => undefined);
    const port = new URL(closed).port;
    const s = servers.pop()!;
    await new Promise((r) => s.close(r));
    await expect(cache.get(`http://127.0.0.1:${port}/artifact`, "f".repeat(64), 10, () => undefined)).rejects.toThrow(/ECONNREFUSED/);

    // The server goes away after the first cut and comes back on the same port.
    const data = randomBytes(200_000);
    const seen: (string | null)[] = [];
    let server: Server | null = null;
    const handler = rangeServer(data, seen, (res) => {
      res.writeHead(200, { "content-length": data.length });
      res.write(data.subarray(0, 50_000), () => {
        res.socket?.destroy();
        server!.close();
        server!.closeAllConnections();
      });
    });
    server = createServer(handler);
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    const at = (server.address() as AddressInfo).port;
    const quick = new ModelCache(await tempDir(), { budgetBytes: 1024 * 1024, retryBaseMs: 50, retries: 20 });
    const got = quick.get(`http://127.0.0.1:${at}/artifact`, sha(data), data.length, () => undefined);
    await waitFor(() => !server!.listening);
    const again = createServer(handler);
    servers.push(again);
    await new Promise<void>((r) => again.listen(at, "127.0.0.1", r));
    expect(sha(await readFile((await got).path))).toBe(sha(data));
    expect(seen.at(-1)).toMatch(/^bytes=[1-9]\d*-$/);
  });

  it("a download that stalls is cut after the idle timeout and resumed", async () => {
    const data = randomBytes(300_000);
    const seen: (string | null)[] = [];
    // The first answer sends a third and then nothing, holding the connection open.
    const url = await serve(
      rangeServer(data, seen, (res) => {
        res.writeHead(200, { "content-length": data.length });
        res.write(data.subarray(0, 100_000));
      }),
    );
    const cache = new ModelCache(await tempDir(), { budgetBytes: 1024 * 1024, retryBaseMs: 1, idleTimeoutMs: 300 });
    const art = await cache.get(url, sha(data), data.length, () => undefined);
    expect(sha(await readFile(art.path))).toBe(sha(data));
    expect(seen.length).toBe(2);
    expect(seen[1]).toMatch(/^bytes=[1-9]\d*-$/);
  });

  it("an HTTP 401 (an expired URL) is not retried", async () => {
    let requests = 0;
    const url = await serve((_req, res) => {
      requests++;
      res.writeHead(401).end();
    });
    const cache = new ModelCache(await tempDir(), { budgetBytes: 1024 * 1024, retryBaseMs: 1 });
    await expect(cache.get(url, "b".repeat(64), 10, () => undefined)).rejects.toThrow(/HTTP 401/);
    expect(requests).toBe(1);
  });
});

describe("the disk cache's byte budget", () => {
  const files = [0, 1, 2, 3, 4].map(() => randomBytes(1000));
  let url = "";
  let requests = 0;
  beforeAll(() => undefined);

  async function filesServer(): Promise<void> {
    requests = 0;
    const byHash = new Map(files.map((f) => [sha(f), f]));
    url = await serve((req, res) => {
      requests++;
      const f = byHash.get(new URL(req.url!, "http://x").searchParams.get("sha") ?? "");
      if (!f) return res.writeHead(404).end();
      res.writeHead(200, { "content-length": f.length }).end(f);
    });
  }
  const fetchOf = (cache: ModelCache, i: number) => cache.get(`${url}?sha=${sha(files[i]!)}`, sha(files[i]!), 1000, () => undefined);
  const present = async (dir: string) => (await readdir(dir)).filter((n) => n !== ".partial").sort();
  const shas = (...i: number[]) => i.map((n) => sha(files[n]!)).sort();

  it("a 4th version evicts the least recently used one that is not loaded; a loaded one never goes", async () => {
    await filesServer();
    const dir = await tempDir();
    let clock = 1_000;
    const loaded = new Set<string>();
    const cache = new ModelCache(dir, { budgetBytes: 3000, inUse: (s) => loaded.has(s), now: () => clock++ });
    for (const i of [0, 1, 2]) await fetchOf(cache, i);
    expect(await present(dir)).toEqual(shas(0, 1, 2));
    // 0 is the least recently used, but its session is loaded: 1 goes instead.
    loaded.add(sha(files[0]!));
    await fetchOf(cache, 3);
    expect(await present(dir)).toEqual(shas(0, 2, 3));
    expect(cache.stats().usedBytes).toBe(3000);
    // A cache hit is a use: 2 becomes newer than 3, so the next one takes 3.
    const before = requests;
    expect((await fetchOf(cache, 2)).cached).toBe(true);
    expect(requests).toBe(before);
    await fetchOf(cache, 4);
    expect(await present(dir)).toEqual(shas(0, 2, 4));
    // 0's session is unloaded now (the agent touches it then): it was in use until this moment,
    // so 2 and then 4 are older and go first.
    loaded.delete(sha(files[0]!));
    cache.touch(sha(files[0]!));
    await fetchOf(cache, 3);
    expect(await present(dir)).toEqual(shas(0, 3, 4));
    await fetchOf(cache, 1);
    expect(await present(dir)).toEqual(shas(0, 1, 3));
  });

  it("a bundle's files land next to its graph in one directory, counted together; other weights are another directory; a lost file alone is fetched again", async () => {
    await filesServer();
    const dir = await tempDir();
    const cache = new ModelCache(dir, { budgetBytes: 3000 });
    const file = (name: string, i: number) => ({ name, sha256: sha(files[i]!), size: 1000, url: `${url}?sha=${sha(files[i]!)}` });
    const bundle = [file("a.bin", 1), file("b.bin", 2)];
    const got = await cache.acquire(`${url}?sha=${sha(files[0]!)}`, sha(files[0]!), 1000, () => undefined, "onnx", bundle);
    got.release();
    const key = versionKey(sha(files[0]!), bundle);
    expect(key).not.toBe(sha(files[0]!));
    expect(got.path).toBe(join(dir, key, "model.onnx"));
    expect((await readdir(join(dir, key))).sort()).toEqual(["a.bin", "b.bin", "model.onnx"]);
    expect(await readFile(join(dir, key, "b.bin"))).toEqual(files[2]);
    expect(cache.stats()).toMatchObject({ usedBytes: 3000, versions: 1 });
    // A lost data file: only it is fetched again.
    await rm(join(dir, key, "a.bin"));
    const before = requests;
    const refetched = await cache.acquire(`${url}?sha=${sha(files[0]!)}`, sha(files[0]!), 1000, () => undefined, "onnx", bundle);
    refetched.release();
    expect(refetched.cached).toBe(false);
    expect(requests - before).toBe(1);
    expect(await readFile(join(dir, key, "a.bin"))).toEqual(files[1]);
    expect(cache.stats()).toMatchObject({ usedBytes: 3000, versions: 1 });
    // The same graph with other weights: another directory, and the first bundle makes room for it.
    const other = [file("a.bin", 3), file("b.bin", 4)];
    await (await cache.acquire(`${url}?sha=${sha(files[0]!)}`, sha(files[0]!), 1000, () => undefined, "onnx", other)).release();
    expect((await readdir(dir)).filter((n) => n !== ".partial")).toEqual([versionKey(sha(files[0]!), other)]);
    // Names that would leave the directory are refused before anything is fetched.
    for (const name of ["../x", "a/b", "model.onnx", ""]) {
      await expect(cache.acquire(`${url}?sha=${sha(files[0]!)}`, sha(files[0]!), 1000, () => undefined, "onnx", [{ ...file("x", 1), name }])).rejects.toThrow(/bad bundle file/);
    }
  });

  it("a version held by a load in progress is never evicted; with everything held, a new one fails clearly", async () => {
    await filesServer();
    const dir = await tempDir();
    let clock = 1_000;
    const cache = new ModelCache(dir, { budgetBytes: 3000, now: () => clock++ });
    const held = [];
    for (const i of [0, 1, 2]) held.push(await cache.acquire(`${url}?sha=${sha(files[i]!)}`, sha(files[i]!), 1000, () => undefined));
    await expect(fetchOf(cache, 3)).rejects.toThrow(/model cache \(MODEL_CACHE_BYTES, 2\.9 KiB\) is full of models in use/);
    expect(await present(dir)).toEqual(shas(0, 1, 2));
    // Released (the load ended, and the session is not loaded): now the oldest may go.
    held[1]!.release();
    held[1]!.release(); // idempotent
    await fetchOf(cache, 3);
    expect(await present(dir)).toEqual(shas(0, 2, 3));
    expect(await readdir(join(dir, ".partial"))).toEqual([]);
  });

  it("downloads running at once each reserve their room: together they never overshoot the budget", async () => {
    await filesServer();
    const dir = await tempDir();
    let clock = 1_000;
    const cache = new ModelCache(dir, { budgetBytes: 2500, now: () => clock++ });
    for (const i of [0, 1]) await fetchOf(cache, i);
    await Promise.all([fetchOf(cache, 2), fetchOf(cache, 3)]);
    expect(await present(dir)).toEqual(shas(2, 3));
    expect(cache.stats().usedBytes).toBe(2000);
  });

  it("a file bigger than the whole budget fails its load with a clear message and fetches nothing", async () => {
    await filesServer();
    const cache = new ModelCache(await tempDir(), { budgetBytes: 2000 });
    const big = randomBytes(2001);
    await expect(cache.get(`${url}?sha=${sha(big)}`, sha(big), big.length, () => undefined)).rejects.toThrow(
      /the model's file takes 2\.0 KiB, more than this node's whole model cache \(MODEL_CACHE_BYTES, 2\.0 KiB\)/,
    );
    expect(requests).toBe(0);
  });

  it("versions on disk at start are indexed, with mtime as their last use, and trimmed to a smaller budget", async () => {
    await filesServer();
    const dir = await tempDir();
    const first = new ModelCache(dir, { budgetBytes: 10_000 });
    for (const i of [0, 1, 2]) await fetchOf(first, i);
    // Last uses on disk: 1 oldest, then 0, then 2.
    const t = Date.now() / 1000;
    for (const [i, age] of [[0, 200], [1, 300], [2, 100]] as const) {
      await utimes(first.pathFor(sha(files[i]!)), t - age, t - age);
    }
    const again = new ModelCache(dir, { budgetBytes: 10_000 });
    expect(await again.ready).toMatchObject({ versions: 3, usedBytes: 3000, budgetBytes: 10_000, budgetSource: "configured" });
    const before = requests;
    expect((await fetchOf(again, 0)).cached).toBe(true);
    expect(requests).toBe(before);
    // A partial download left by a process that died an hour ago goes at start; a fresh one stays.
    const stale = join(dir, ".partial", `${"d".repeat(64)}.onnx.part-dead`);
    const fresh = join(dir, ".partial", `${"e".repeat(64)}.onnx.part-live`);
    await writeFile(stale, "x");
    await writeFile(fresh, "x");
    await utimes(stale, t - 7200, t - 7200);
    // Restarted with room for two: the oldest (1) goes at start.
    const smaller = new ModelCache(dir, { budgetBytes: 2000 });
    expect(await smaller.ready).toMatchObject({ versions: 2, usedBytes: 2000 });
    expect(await present(dir)).toEqual(shas(0, 2));
    expect(await readdir(join(dir, ".partial"))).toEqual([`${"e".repeat(64)}.onnx.part-live`]);
  });

  it("without MODEL_CACHE_BYTES the budget is what is cached plus 80% of the disk's free space", async () => {
    const cache = new ModelCache(await tempDir());
    const s = await cache.ready;
    expect(s.budgetSource).toBe("free space");
    expect(s.budgetBytes).toBeGreaterThan(0);
  });
});

describe("MODEL_CACHE_BYTES", () => {
  const base = { ROUTER_URL: "ws://127.0.0.1:1/v1/nodes", NODE_TOKEN: "x".repeat(16) };
  it("takes bytes or a binary unit, defaults to null (free space), and refuses nonsense", () => {
    expect(nodeConfigFromEnv(base).modelCacheBytes).toBeNull();
    expect(nodeConfigFromEnv({ ...base, MODEL_CACHE_BYTES: "53687091200" }).modelCacheBytes).toBe(50 * 2 ** 30);
    expect(nodeConfigFromEnv({ ...base, MODEL_CACHE_BYTES: "50GiB" }).modelCacheBytes).toBe(50 * 2 ** 30);
    expect(nodeConfigFromEnv({ ...base, MODEL_CACHE_BYTES: "512M" }).modelCacheBytes).toBe(512 * 2 ** 20);
    for (const bad of ["-1", "lots", "10", "5 parsecs"]) {
      expect(() => nodeConfigFromEnv({ ...base, MODEL_CACHE_BYTES: bad })).toThrow(/MODEL_CACHE_BYTES must be a byte count/);
    }
  });
});

describe("Range parsing of the artifact route", () => {
  it("serves one range, ignores what it does not serve, and says when a range is past the end", () => {
    expect(parseRange(null, 100)).toBeNull();
    expect(parseRange("bytes=10-", 100)).toEqual({ offset: 10, length: 90 });
    expect(parseRange("bytes=10-19", 100)).toEqual({ offset: 10, length: 10 });
    expect(parseRange("bytes=90-500", 100)).toEqual({ offset: 90, length: 10 });
    expect(parseRange("bytes=-30", 100)).toEqual({ offset: 70, length: 30 });
    expect(parseRange("bytes=0-1,5-6", 100)).toBeNull();
    expect(parseRange("bytes=20-10", 100)).toBeNull();
    expect(parseRange("items=1-2", 100)).toBeNull();
    expect(parseRange("bytes=100-", 100)).toBe("unsatisfiable");
    expect(parseRange("bytes=-0", 100)).toBe("unsatisfiable");
  });
});

describe("a real node keeps its disk cache to MODEL_CACHE_BYTES", () => {
  let h: RegionHarness;
  beforeAll(async () => {
    h = await RegionHarness.create("cache-region");
    await h.startRouter();
    // One model held at a time, so the versions before it are on disk but not loaded.
    await h.startNode("cache-node", { MODEL_CACHE_BYTES: "3MiB", MAX_MODELS: "1" });
  }, 120_000);
  afterAll(async () => {
    await h?.close();
  });

  it("a new version evicts the least recently used one on disk, which loads again when called; one over the budget fails clearly", async () => {
    // About 1.03 MiB each: two fit in 3 MiB, three do not.
    const a = await h.addModel("w1", 1, weightModel(270_000, 1));
    const b = await h.addModel("w2", 1, weightModel(270_000, 2));
    const c = await h.addModel("w3", 1, weightModel(270_000, 3));
    const cacheRoot = join(h.dir, "cache");
    const onDisk = async () => {
      const [nodeDir] = await readdir(cacheRoot);
      return (await readdir(join(cacheRoot, nodeDir!))).filter((n) => n !== ".partial").sort();
    };
    const answer = async (ref: typeof a, want: number) => {
      const r = await h.infer(ref, [fp32("x", [[10]])], { deadlineMs: 60_000 });
      expect(r.response.ok, JSON.stringify(r.response)).toBe(true);
      if (r.response.ok) expect(rowsOf(r.response.outputs[0]!)).toEqual([[10 + want]]);
    };
    await answer(a, 1);
    await answer(b, 2);
    expect(await onDisk()).toEqual([a.sha256, b.sha256].sort());
    await answer(c, 3);
    expect(await onDisk()).toEqual([b.sha256, c.sha256].sort());
    const served = h.artifactHits.served;
    await answer(a, 1);
    expect(h.artifactHits.served).toBe(served + 1);
    expect(await onDisk()).toEqual([a.sha256, c.sha256].sort());

    const big = await h.addModel("w-big", 1, weightModel(800_000, 4));
    const r = await h.infer(big, [fp32("x", [[10]])], { deadlineMs: 60_000 });
    expect(r.response.ok).toBe(false);
    if (!r.response.ok) expect(r.response.message).toMatch(/the model's files? takes? 3\.1 MiB, more than .*model cache.* \(MODEL_CACHE_BYTES, 3\.0 MiB/);
    expect(await onDisk()).toEqual([a.sha256, c.sha256].sort());
  }, 180_000);
});

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > until) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("through the real edge", () => {
  let mesh: MeshHandle;
  let stateDir: string;
  let model: Buffer;
  let modelSha: string;
  const region = "us-west";

  beforeAll(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "model-cache-mesh-"));
    mesh = await startMesh({ stateDir, regions: [{ name: region, lat: 37.34, lon: -121.89, nodes: 1 }], progress: () => undefined });
    const m = await call(`${mesh.edge}/v1/models/demo-mlp`, { key: mesh.apiKey });
    modelSha = m.body.versions[0].sha256;
    const res = await fetch(await signed(modelSha));
    expect(res.status).toBe(200);
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    model = Buffer.from(await res.arrayBuffer());
    expect(sha(model)).toBe(modelSha);
  }, 180_000);

  afterAll(async () => {
    await mesh?.stop();
    await rm(stateDir, { recursive: true, force: true });
  });

  const signed = (s: string) => artifactUrl(mesh.regionSecrets[region]!, mesh.edge, region, s, Date.now() + 60_000);

  it("answers a Range request on a signed URL with 206 and Content-Range, and refuses one without a signature", async () => {
    const url = await signed(modelSha);
    const part = await fetch(url, { headers: { range: "bytes=10-99" } });
    expect(part.status).toBe(206);
    expect(part.headers.get("content-range")).toBe(`bytes 10-99/${model.length}`);
    expect(part.headers.get("content-length")).toBe("90");
    expect(Buffer.from(await part.arrayBuffer())).toEqual(model.subarray(10, 100));

    const tail = await fetch(url, { headers: { range: `bytes=${model.length - 5}-` } });
    expect(tail.status).toBe(206);
    expect(Buffer.from(await tail.arrayBuffer())).toEqual(model.subarray(model.length - 5));

    const past = await call(url, { headers: { range: `bytes=${model.length}-` } });
    expectError(past, 400, "bad_request");
    expect(past.headers.get("content-range")).toBe(`bytes */${model.length}`);

    // The same range without the signature, with a bad one, or signed for another path.
    const bare = `${mesh.edge}/internal/artifacts/${modelSha}`;
    expectError(await call(bare, { headers: { range: "bytes=10-99" } }), 401, "unauthorized");
    expectError(await call(`${url.replace(/sig=[0-9a-f]+/, `sig=${"0".repeat(64)}`)}`, { headers: { range: "bytes=10-99" } }), 401, "unauthorized");
    const other = (await signed("c".repeat(64))).replace("c".repeat(64), modelSha);
    expectError(await call(other, { headers: { range: "bytes=0-" } }), 401, "unauthorized");
  });

  it("the node's cache resumes a download the network cut, from the edge, into the right file", async () => {
    const url = new URL(await signed(modelSha));
    const cutAt = Math.floor(model.length / 2);
    const seen: (string | null)[] = [];
    // A proxy in front of the edge: the first download is cut at half; later ones pass through.
    const proxy = await serve(cutFirstDownload((path) => `${mesh.edge}${path.replace(/^\/artifact/, "")}`, cutAt, seen));
    const cache = new ModelCache(await tempDir(), { budgetBytes: 64 * 1024 * 1024, retryBaseMs: 1 });
    const art = await cache.get(`${proxy}${url.pathname}${url.search}`, modelSha, model.length, () => undefined);
    expect(sha(await readFile(art.path))).toBe(modelSha);
    expect(seen.length).toBe(2);
    expect(seen[1]).toMatch(/^bytes=\d+-$/);
  });
});
