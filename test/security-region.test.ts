// The edge->region trust boundary under attack (issue 10 items 2, 3, 9, 10, 12), against the
// real parts: the edge in workerd, two region routers with one node agent each, Redis. The
// attacker can reach a router's port and may have captured what the edge once sent (a signed
// call, a stream socket's signed opening, a generate request), or a region's secret; what it
// must not get is anything run, anything read into a router's memory before a signature
// checks, or a node pointed at an address of its choosing.
//
// What a region must refuse is refused with the one error shape, and "runs nothing" is read
// from the router's own counters. No assertion is about time; memory bounds are generous.

import { createHash, randomBytes } from "node:crypto";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { createServer, request as httpRequest, type Server } from "node:http";
import { connect } from "node:net";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import { FRAME_STREAM_CONTENT_TYPE, FrameSplitter } from "../protocol/frame-stream.js";
import { GENERATE_GRANT_METHOD, MAX_BATCH_FRAMES, parseRegionToEdge, type ModelRef, type RegionGenerateRequest, type RegionInferRequest, type RegionToEdge } from "../protocol/messages.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import { artifactUrl, signRequest, tokenizerUrl, urlRegion, verifyUrl } from "../protocol/signing.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { CHAR_TOKENIZER_FILE } from "../scripts/make-char-model.js";
import { makeDemoMatmul } from "../scripts/make-demo-models.js";
import { call, expectError, parseRawAnswer, type Answer } from "./helpers/mesh-client.js";
import { fp32, RegionHarness, waitUntil } from "./helpers/region-harness.js";
import { RegionStream, rssMb, streamStats } from "./helpers/stream-client.js";

const WEST = "us-west";
const SEOUL = "ap-seoul";
const MIB = 1024 * 1024;
/** What a router may grow by while an attacker pushes 256 MiB at it. */
const RSS_BOUND_MB = 24;

let mesh: MeshHandle;
let dir: string;
const codec = createCodec();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "security-region-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [
      { name: WEST, lat: 37.34, lon: -121.89, nodes: 1 },
      { name: SEOUL, lat: 37.57, lon: 126.98, nodes: 1 },
    ],
    nodeEnv: { HEARTBEAT_MS: "200", MESH_EXECUTION_PROVIDER: "cpu" },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
}, 180_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const secretOf = (region: string) => mesh.regionSecrets[region]!;
const routerPid = (region: string) => mesh.processes.find((p) => p.name === `router-${region}`)!.child.pid!;
const served = async (region: string) => (await mesh.regionStatus(region)).served;

/** The ModelRef the edge would send `region` for a demo model file, its URLs signed for that region. */
async function modelRef(region: string, name: string, opts: { tokenizer?: boolean } = {}): Promise<ModelRef> {
  const m = mesh.models.find((x) => x.name === name)!;
  const bytes = await readFile(m.file);
  const sha256 = createHash("sha256").update(bytes).digest("hex");
  const sig = readOnnxSignature(bytes);
  const exp = Date.now() + 10 * 60_000;
  const ref: ModelRef = {
    key: `security-${name}@${m.version}`,
    account: mesh.accountId,
    name,
    version: m.version,
    sha256,
    size: bytes.length,
    artifactUrl: await artifactUrl(secretOf(region), mesh.edge, region, sha256, exp),
    signature: { inputs: sig.inputs, outputs: sig.outputs },
  };
  if (opts.tokenizer) {
    const tok = await readFile(join(dir, "models", CHAR_TOKENIZER_FILE));
    const tsha = createHash("sha256").update(tok).digest("hex");
    ref.tokenizer = { sha256: tsha, size: tok.length, url: await tokenizerUrl(secretOf(region), mesh.edge, region, tsha, exp) };
  }
  return ref;
}

/** Reads a router's answer: the JSON error envelope for refusals, msgpack for calls it ran. */
async function routerCall(region: string, path: string, init: { method?: string; body?: Uint8Array; headers?: Record<string, string> }): Promise<Answer> {
  const res = await fetch(mesh.regions[region]! + path, { method: init.method ?? "POST", headers: init.headers ?? {}, ...(init.body ? { body: init.body as Uint8Array<ArrayBuffer> } : {}) });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const json = (res.headers.get("content-type") ?? "").includes("json");
  return { status: res.status, headers: res.headers, body: json ? JSON.parse(new TextDecoder().decode(bytes)) : codec.decode(bytes) };
}

/**
 * POSTs a chunked body (no Content-Length) of up to `total` bytes over a raw socket, 1 MiB a
 * chunk, stopping the moment the server answers or closes; returns the answer and what was sent.
 */
function pushChunked(url: string, method: string, headers: Record<string, string>, total: number): Promise<{ answer: Answer; sent: number }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    let sent = 0;
    let answered = false;
    socket.on("data", (d) => {
      answered = true;
      chunks.push(d);
    });
    socket.on("error", () => undefined); // EPIPE/ECONNRESET once the server closes: expected
    socket.on("close", () => {
      const answer = parseRawAnswer(Buffer.concat(chunks).toString("utf8"));
      if (!answer) return reject(new Error(`no HTTP response after ${sent} bytes: ${Buffer.concat(chunks).toString("utf8").slice(0, 200)}`));
      resolve({ answer, sent });
    });
    const head = [`${method} ${u.pathname} HTTP/1.1`, `Host: ${u.host}`, "Transfer-Encoding: chunked"];
    for (const [k, v] of Object.entries(headers)) head.push(`${k}: ${v}`);
    socket.write(head.join("\r\n") + "\r\n\r\n");
    const chunk = Buffer.concat([Buffer.from(`${MIB.toString(16)}\r\n`), Buffer.alloc(MIB, 0x61), Buffer.from("\r\n")]);
    const pump = () => {
      while (!answered && !socket.destroyed && sent < total) {
        sent += MIB;
        if (!socket.write(chunk)) return void socket.once("drain", pump);
      }
      if (!answered && !socket.destroyed) socket.end("0\r\n\r\n");
    };
    socket.once("connect", pump);
  });
}

describe("item 2: a router reads no unauthenticated body, and caps every body while it streams", () => {
  it("an unsigned chunked POST /v1/infer of 256 MiB is refused before its body is read; the router's memory stays put", async () => {
    const pid = routerPid(WEST);
    const before = await rssMb(pid);
    const { answer, sent } = await pushChunked(`${mesh.regions[WEST]}/v1/infer`, "POST", { "content-type": "application/x-msgpack" }, 256 * MIB);
    expectError(answer, 401, "unauthorized");
    // The router answered long before the attacker could push it all (the old router read it all first).
    expect(sent).toBeLessThan(256 * MIB);
    const grew = (await rssMb(pid)) - before;
    if (process.env.MESH_TEST_VERBOSE) console.log(`unsigned 256 MiB push: ${sent / MIB} MiB sent before the answer, router RSS ${before.toFixed(1)} MB, +${grew.toFixed(1)} MB`);
    expect(grew).toBeLessThan(RSS_BOUND_MB);
  });

  it("a signed call whose chunked body runs past its signed length is cut off with payload_too_large", async () => {
    const pid = routerPid(WEST);
    const before = await rssMb(pid);
    const headers = await signRequest(secretOf(WEST), "POST", "/v1/infer", new Uint8Array(1024));
    const { answer, sent } = await pushChunked(`${mesh.regions[WEST]}/v1/infer`, "POST", headers, 256 * MIB);
    expectError(answer, 413, "payload_too_large");
    expect(sent).toBeLessThan(256 * MIB);
    const grew = (await rssMb(pid)) - before;
    if (process.env.MESH_TEST_VERBOSE) console.log(`signed 1 KiB, pushed 256 MiB: ${sent / MIB} MiB sent before the answer, router RSS +${grew.toFixed(1)} MB`);
    expect(grew).toBeLessThan(RSS_BOUND_MB);
  });

  it("a signed call declaring a body over the router's limit is refused from its headers", async () => {
    const big = new Uint8Array(33 * MIB);
    const headers = await signRequest(secretOf(WEST), "POST", "/v1/infer", big);
    const { answer, sent } = await pushChunked(`${mesh.regions[WEST]}/v1/infer`, "POST", headers, 64 * MIB);
    expectError(answer, 413, "payload_too_large");
    expect(sent).toBeLessThan(64 * MIB);
  });

  it("a signed GET carrying a body is refused unread, and unsigned GETs are refused", async () => {
    const headers = await signRequest(secretOf(WEST), "GET", "/v1/status");
    const { answer } = await pushChunked(`${mesh.regions[WEST]}/v1/status`, "GET", headers, 64 * MIB);
    expect([401, 413]).toContain(answer.status);
    expectError(await routerCall(WEST, "/v1/status", { method: "GET" }), 401, "unauthorized");
    expectError(await routerCall(WEST, "/v1/streams/stats", { method: "GET" }), 401, "unauthorized");
  });
});

describe("item 12: a signed call is good for one use", () => {
  it("the same signed /v1/infer sent twice: the second is refused with 401 and runs nothing", async () => {
    const request: RegionInferRequest = {
      requestId: `replay-${randomBytes(4).toString("hex")}`,
      model: await modelRef(WEST, "demo-mlp"),
      inputs: [fp32("x", [[1, 2, 3, 4]])],
      deadline: Date.now() + 20_000,
    };
    const body = codec.encode(request);
    const headers = { ...(await signRequest(secretOf(WEST), "POST", "/v1/infer", body)), "content-type": "application/x-msgpack" };
    const first = await routerCall(WEST, "/v1/infer", { body, headers });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body.ok).toBe(true);
    const count = await served(WEST);
    const again = await routerCall(WEST, "/v1/infer", { body, headers });
    expectError(again, 401, "unauthorized");
    expect(again.body.error).toMatch(/already used/);
    expect(await served(WEST)).toBe(count);
  });

  it("a stream socket's signed opening opens one socket, not two", async () => {
    const headers = await signRequest(secretOf(WEST), "GET", "/v1/streams");
    const s = await RegionStream.open(mesh.regions[WEST]!, headers);
    await expect(RegionStream.open(mesh.regions[WEST]!, headers)).rejects.toMatchObject({ status: 401 });
    s.close();
  });
});

describe("item 3: every request on a stream socket carries its own grant", () => {
  let s: RegionStream;
  let base: RegionGenerateRequest;
  const sign = (bytes: Uint8Array, secret = secretOf(WEST), now = Date.now()) => signRequest(secret, GENERATE_GRANT_METHOD, "/v1/streams", bytes, now);
  const relayed = async () => (await streamStats(mesh.regions[WEST]!, secretOf(WEST))).router.tokensRelayed;
  let n = 0;
  const sid = () => `s${++n}`;

  beforeAll(async () => {
    // What an attacker holds after capturing one signed opening: an open socket.
    s = await RegionStream.open(mesh.regions[WEST]!, await signRequest(secretOf(WEST), "GET", "/v1/streams"));
    base = {
      requestId: "grant-test",
      model: await modelRef(WEST, "demo-chat", { tokenizer: true }),
      prompt: "The river",
      params: { maxTokens: 4, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] },
      deadline: Date.now() + 60_000,
    };
    // The control: a request the edge signed runs (this also warms the model).
    const bytes = codec.encode({ ...base, deadline: Date.now() + 60_000 });
    const id = sid();
    s.generate(id, bytes, await sign(bytes));
    expect(await s.end(id, 60_000)).toMatchObject({ t: "done", tokens: 4 });
  }, 90_000);

  afterAll(() => s?.close());

  it("a generate for another account's model, with a grant captured 35 s ago or none of the edge's, is refused and runs nothing", async () => {
    const before = await relayed();
    const victim = codec.encode({ ...base, model: { ...base.model, account: "acc_victim" }, deadline: Date.now() + 60_000 });
    const attempts: Record<string, string>[] = [
      await sign(victim, secretOf(WEST), Date.now() - 35_000), // signed by the edge, 35 s ago
      await sign(victim, "an-attackers-own-secret-0123456789"), // signed by someone else
      await sign(victim, secretOf(SEOUL)), // signed with another region's secret
      {}, // no grant at all
    ];
    for (const grant of attempts) {
      const id = sid();
      s.generate(id, victim, grant);
      const end = await s.end(id);
      expect(end, JSON.stringify(end)).toMatchObject({ t: "error", code: "unauthorized" });
      expect(s.of(id).some((f) => f.t === "token" || f.t === "progress")).toBe(false);
    }
    expect(await relayed()).toBe(before);
    expect(s.closed).toBeNull(); // the socket stays: only the frames are refused
  });

  it("a request altered after signing (other sha256, other artifact URL, other account) is refused", async () => {
    const before = await relayed();
    const signedBytes = codec.encode({ ...base, deadline: Date.now() + 60_000 });
    const grant = await sign(signedBytes);
    const decoded = codec.decode(signedBytes) as RegionGenerateRequest;
    const altered = [
      { ...decoded, model: { ...decoded.model, sha256: "f".repeat(64) } },
      { ...decoded, model: { ...decoded.model, artifactUrl: "http://127.0.0.1:9/attacker.onnx" } },
      { ...decoded, model: { ...decoded.model, tokenizer: { ...decoded.model.tokenizer!, url: "http://127.0.0.1:9/tok.json" } } },
      { ...decoded, model: { ...decoded.model, account: "acc_victim" } },
    ];
    for (const req of altered) {
      const id = sid();
      s.generate(id, codec.encode(req), grant);
      expect(await s.end(id)).toMatchObject({ t: "error", code: "unauthorized" });
    }
    expect(await relayed()).toBe(before);
    // The untouched bytes under that grant still run: the grant itself was good.
    const id = sid();
    s.generate(id, signedBytes, grant);
    expect(await s.end(id, 60_000)).toMatchObject({ t: "done" });
  });

  it("a batch of frames is no way around a grant: each generate in it is checked, and a hostile batch closes the socket unread", async () => {
    const before = await relayed();
    const victim = codec.encode({ ...base, model: { ...base.model, account: "acc_victim" }, deadline: Date.now() + 60_000 });
    const good = codec.encode({ ...base, deadline: Date.now() + 60_000 });
    const [bad, ok] = [sid(), sid()];
    // One message: an unsigned generate, a signed one, and credit for both.
    s.sendRaw({
      t: "batch",
      frames: [
        { t: "generate", sid: bad, req: victim, grant: {}, window: 64 },
        { t: "generate", sid: ok, req: good, grant: await sign(good), window: 64 },
        { t: "credit", sid: bad, n: 8 },
        { t: "credit", sid: ok, n: 8 },
      ],
    });
    expect(await s.end(bad)).toMatchObject({ t: "error", code: "unauthorized" });
    expect(await s.end(ok, 60_000)).toMatchObject({ t: "done" });
    expect(s.of(bad).some((f) => f.t === "token" || f.t === "progress")).toBe(false);
    expect(s.closed).toBeNull();
    expect(await relayed()).toBe(before + 4);

    // Over the frame bound, a batch inside a batch, a bad item: refused whole, the socket closed (1002).
    const hostile = [
      { t: "batch", frames: new Array(MAX_BATCH_FRAMES + 1).fill({ t: "ping" }) },
      { t: "batch", frames: [{ t: "batch", frames: [{ t: "ping" }] }] },
      { t: "batch", frames: [{ t: "ping" }, { t: "credit", sid: "x", n: -1 }] },
    ];
    for (const frame of hostile) {
      const other = await RegionStream.open(mesh.regions[WEST]!, await signRequest(secretOf(WEST), "GET", "/v1/streams"));
      other.sendRaw(frame);
      await waitUntil("the hostile batch closes the socket", 10_000, () => other.closed ?? undefined);
      expect(other.closed).toEqual({ code: 1002 });
      expect(other.frames).toEqual([]); // not even the pings in it were answered
    }
  });

  it("a replayed grant is refused, on the same socket or another", async () => {
    const bytes = codec.encode({ ...base, deadline: Date.now() + 60_000 });
    const grant = await sign(bytes);
    const first = sid();
    s.generate(first, bytes, grant);
    expect(await s.end(first, 60_000)).toMatchObject({ t: "done" });
    const before = await relayed();
    const again = sid();
    s.generate(again, bytes, grant);
    expect(await s.end(again)).toMatchObject({ t: "error", code: "unauthorized" });
    const other = await RegionStream.open(mesh.regions[WEST]!, await signRequest(secretOf(WEST), "GET", "/v1/streams"));
    try {
      other.generate("x1", bytes, grant);
      expect(await other.end("x1")).toMatchObject({ t: "error", code: "unauthorized" });
    } finally {
      other.close();
    }
    expect(await relayed()).toBe(before);
  });

  it("the streamed HTTP form (POST /v1/streams) checks the same grant: a signed one streams its frames; replayed, missing or oversized runs nothing", async () => {
    const post = (body: Uint8Array<ArrayBuffer>) =>
      fetch(`${mesh.regions[WEST]!}/v1/streams`, { method: "POST", body, headers: { "content-type": FRAME_STREAM_CONTENT_TYPE } });
    const bytes = codec.encode({ ...base, deadline: Date.now() + 60_000 });
    const grant = await sign(bytes);
    const frame = (g: Record<string, string>) => codec.encode({ t: "generate", sid: "h1", req: bytes, grant: g, window: 32 });
    const res = await post(frame(grant));
    expect(res.status).toBe(200);
    const splitter = new FrameSplitter();
    const frames: RegionToEdge[] = [];
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) for (const f of splitter.push(chunk)) frames.push(parseRegionToEdge(codec.decode(f)));
    expect(frames.filter((f) => f.t === "token")).toHaveLength(4);
    expect(frames.at(-1)).toMatchObject({ t: "done", sid: "h1", tokens: 4 });
    const before = await relayed();
    for (const g of [grant, {}]) {
      const refused = await post(frame(g));
      expect(refused.status).toBe(401);
      expect(await refused.json()).toMatchObject({ code: "unauthorized" });
    }
    const big = await post(new Uint8Array(2 * 1024 * 1024));
    expect(big.status).toBe(413);
    expect(await relayed()).toBe(before);
  });

  it("a grant whose request's deadline has passed runs nothing", async () => {
    const bytes = codec.encode({ ...base, deadline: Date.now() - 1 });
    const id = sid();
    s.generate(id, bytes, await sign(bytes));
    expect(await s.end(id)).toMatchObject({ t: "error", code: "deadline_exceeded" });
  });

  it("the edge's own generations still stream (each request signed per region by the edge)", async () => {
    const res = await fetch(`${mesh.edge}/v2/models/demo-chat/generate`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ text_input: "The river", parameters: { max_tokens: 5, temperature: 0 } }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
  });
});

describe("item 10: a secret per region", () => {
  it("a router refuses calls signed with another region's secret", async () => {
    const own = await signRequest(secretOf(WEST), "GET", "/v1/status");
    expect((await routerCall(WEST, "/v1/status", { method: "GET", headers: own })).status).toBe(200);
    const foreign = await signRequest(secretOf(SEOUL), "GET", "/v1/status");
    expectError(await routerCall(WEST, "/v1/status", { method: "GET", headers: foreign }), 401, "unauthorized");
  });

  it("a download URL is good for the region it was signed for only", async () => {
    const ref = await modelRef(WEST, "demo-chat", { tokenizer: true });
    for (const url of [ref.artifactUrl, ref.tokenizer!.url]) {
      expect((await fetch(url)).status).toBe(200);
      // The same URL claimed for another region.
      const moved = new URL(url);
      moved.searchParams.set("region", SEOUL);
      expectError(await call(moved.toString()), 401, "unauthorized");
      // A region's secret signs URLs for itself only: ap-seoul's secret cannot sign for us-west.
      const forged = new URL(await artifactUrl(secretOf(SEOUL), mesh.edge, WEST, ref.sha256, Date.now() + 60_000));
      expectError(await call(forged.toString()), 401, "unauthorized");
      const unknown = new URL(url);
      unknown.searchParams.set("region", "nowhere");
      expectError(await call(unknown.toString()), 401, "unauthorized");
    }
  });

  it("rotation: a router takes its current and its previous secret, nothing else", async () => {
    const h = await RegionHarness.create("rotating");
    try {
      const next = randomBytes(24).toString("base64url");
      await h.startRouter({ MESH_SECRET: next, MESH_SECRET_PREVIOUS: h.secret });
      for (const secret of [next, h.secret]) {
        const headers = await signRequest(secret, "GET", "/v1/status");
        expect((await fetch(`${h.routerUrl}/v1/status`, { headers })).status).toBe(200);
      }
      const other = await signRequest(randomBytes(24).toString("base64url"), "GET", "/v1/status");
      expect((await fetch(`${h.routerUrl}/v1/status`, { headers: other })).status).toBe(401);
    } finally {
      await h.close();
    }
  });

  it("the edge's configuration: every region has its own secret, validated once with a clear message", async () => {
    // Imported by path at run time: the Worker's files are type-checked against workers-types
    // (edge/tsconfig.json), which this Node project does not load.
    type Env = Record<string, string>;
    type Secrets = { current: string; previous: string | null };
    const path = "../edge/env.js";
    type Config = { regionSecrets: Record<string, Secrets>; publicOrigin: string };
    const { loadConfig, verifyingSecrets } = (await import(path)) as {
      loadConfig: (env: Env) => Config;
      verifyingSecrets: (config: Config, region: string | null) => string[];
    };
    const regions = JSON.stringify([
      { name: WEST, url: "http://127.0.0.1:1" },
      { name: SEOUL, url: "http://127.0.0.1:2" },
    ]);
    const env = (over: Partial<Env>): Env =>
      ({
        ADMIN_TOKEN: "admin-token-0123456789",
        REGIONS: regions,
        REGION_SECRETS: JSON.stringify({ [WEST]: "west-secret-0123456789", [SEOUL]: "seoul-secret-0123456789" }),
        PUBLIC_ORIGIN: "https://api.example.com",
        ...over,
      }) as Env;
    const config = loadConfig(env({ REGION_SECRETS_PREVIOUS: JSON.stringify({ [WEST]: "west-old-secret-0123456789" }) }));
    expect(config.regionSecrets[WEST]).toEqual({ current: "west-secret-0123456789", previous: "west-old-secret-0123456789" });
    expect(config.regionSecrets[SEOUL]).toEqual({ current: "seoul-secret-0123456789", previous: null });
    expect(config.publicOrigin).toBe("https://api.example.com");
    // During a rotation the edge still takes URLs the region signed with its previous secret.
    const url = new URL(await artifactUrl("west-old-secret-0123456789", config.publicOrigin, WEST, "ab".repeat(32), Date.now() + 60_000));
    expect(await verifyUrl(verifyingSecrets(config, urlRegion(url)), url)).toEqual({ ok: true });
    url.searchParams.set("region", SEOUL);
    expect((await verifyUrl(verifyingSecrets(config, urlRegion(url)), url)).ok).toBe(false);
    expect(verifyingSecrets(config, "nowhere")).toEqual([]);
    expect(verifyingSecrets(config, "__proto__")).toEqual([]);
    const refused = (over: Partial<Env>, message: RegExp) => expect(() => loadConfig(env(over))).toThrow(message);
    refused({ REGION_SECRETS: JSON.stringify({ [WEST]: "west-secret-0123456789" }) }, /no secret for region 'ap-seoul'/);
    refused({ REGION_SECRETS: JSON.stringify({ [WEST]: "same-secret-0123456789", [SEOUL]: "same-secret-0123456789" }) }, /share a secret/);
    refused({ REGION_SECRETS: JSON.stringify({ [WEST]: "short", [SEOUL]: "seoul-secret-0123456789" }) }, /16\+ characters/);
    refused({ REGION_SECRETS: JSON.stringify({ [WEST]: "w-secret-0123456789", [SEOUL]: "s-secret-0123456789", "eu-x": "e-secret-0123456789" }) }, /not in REGIONS/);
    refused({ REGION_SECRETS: "not json" }, /REGION_SECRETS must be JSON/);
    refused({ PUBLIC_ORIGIN: "" }, /PUBLIC_ORIGIN/);
    refused({ PUBLIC_ORIGIN: "https://api.example.com/some/path" }, /PUBLIC_ORIGIN/);
    refused({ PUBLIC_ORIGIN: "ftp://x" }, /PUBLIC_ORIGIN/);
  });
});

describe("item 9: the origin nodes download from is configured, never the request's Host", () => {
  let probe: Server;
  let probeHits = 0;
  let probeHost = "";

  beforeAll(async () => {
    probe = createServer((_req, res) => {
      probeHits++;
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()));
    probeHost = `127.0.0.1:${(probe.address() as AddressInfo).port}`;
  });

  afterAll(() => new Promise<void>((r) => probe.close(() => r())));

  it("a call with a forged Host loads the model from the configured origin, and nothing is fetched from that host", async () => {
    // A model no node has seen, so the call makes a node download it.
    const name = `host-probe-${randomBytes(3).toString("hex")}`;
    expect((await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name } })).status).toBe(201);
    const file = await makeDemoMatmul(join(dir, "host-probe"));
    const up = await call(`${mesh.edge}/v1/models/${name}/versions`, {
      key: mesh.apiKey,
      body: await readFile(file.path),
      headers: { "content-type": "application/octet-stream" },
    });
    expect(up.status, JSON.stringify(up.body)).toBe(201);
    const body = JSON.stringify({ inputs: [{ name: "a", datatype: "FP32", shape: [1, 2], data: [1, 2] }, { name: "b", datatype: "FP32", shape: [2, 1], data: [3, 4] }] });
    const edge = new URL(mesh.edge);
    const answer = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      const req = httpRequest(
        {
          host: edge.hostname,
          port: edge.port,
          method: "POST",
          path: `/v2/models/${name}/infer`,
          headers: { host: probeHost, authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json", "content-length": Buffer.byteLength(body) },
        },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => (text += c));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
        },
      );
      req.on("error", reject);
      req.end(body);
    });
    expect(answer.status, answer.text).toBe(200);
    expect(JSON.parse(answer.text).outputs[0].data).toEqual([11]);
    expect(probeHits).toBe(0);
  });
});
