// A rolling upgrade, against the real parts (the edge in workerd, one region's router, node
// agents running demo-chat in onnxruntime-node, Redis): parts of different wire versions and
// features meet on every hop, and streams still arrive whole. An "old" part is a real one with
// MESH_WIRE_FEATURES=none: it announces no `batch` and, like a part from before batches,
// refuses one (closing its socket), so a sender that batched to it would break its streams.
// An "old" edge is the test's raw stream socket to the router (RegionStream) without the
// announcement, refusing batches the same way. Then what shares no version is refused with the
// stable code wire_version_unsupported (HTTP 426, close 4426), both ranges in the message.
// Mid-upgrade, the operator sees which node speaks what: in the router's report and metrics,
// and in the edge's GET /v1/regions.
//
// Every text is checked against the same model run in this process (ReferenceModel), every
// router stream by its token indices and count. No assertion is about time.

import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { signalGroup } from "../local/process-group.js";
import { createCodec } from "../protocol/codec.js";
import { CLOSE, GENERATE_GRANT_METHOD, type ModelRef, type RegionGenerateRequest } from "../protocol/messages.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import { artifactUrl, signRequest, tokenizerUrl } from "../protocol/signing.js";
import { formatWireHeader, localWire, MIN_WIRE_VERSION, WIRE_HEADER, WIRE_VERSION } from "../protocol/wire-version.js";
import { CHAR_TOKENIZER_FILE } from "../scripts/make-char-model.js";
import type { RegionsView } from "../edge/regions-view.js";
import { sample, scrape } from "./helpers/metrics-text.js";
import { waitUntil, within } from "./helpers/region-harness.js";
import { ReferenceModel, RegionStream, StreamClient } from "./helpers/stream-client.js";
import { nodeHello } from "./helpers/fakes.js";

const REGION = "us-west";
const STREAMS = 8;
const PROMPT = "The river";
const MAX_TOKENS = 40;
const THIS_BUILD = `${MIN_WIRE_VERSION}-${WIRE_VERSION}`;

let mesh: MeshHandle;
let dir: string;
let ref: ReferenceModel;
const codec = createCodec();
/** The routers' environment: read again at each router start, so a restart can change it. */
const routerEnv: Record<string, string> = { MESH_WIRE_FEATURES: "none" };

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "wire-upgrade-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    // 2 ms a token: concurrent generations overlap, so a decode step carries several streams' tokens.
    nodeEnv: { HEARTBEAT_MS: "200", MESH_SIMULATED_TOKEN_MS: "2", MESH_EXECUTION_PROVIDER: "cpu" },
    routerEnv,
    tinyGpt: false,
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
  const chat = mesh.models.find((m) => m.name === "demo-chat")!;
  ref = await ReferenceModel.load(chat.file, join(dir, "models", CHAR_TOKENIZER_FILE));
}, 180_000);

afterAll(async () => {
  await ref?.release();
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const routerUrl = () => mesh.regions[REGION]!;
const secret = () => mesh.regionSecrets[REGION]!;
const nodesListed = async () => (await mesh.regionStatus(REGION)).nodes.map((n) => n.id);

/** STREAMS generations at once through the edge's WebSocket route, each checked against the reference. */
/** The edge sees the region healthy with a node (the new router's report fresh, through Redis). */
async function edgeSeesRegion(): Promise<void> {
  await waitUntil("the edge sees the region healthy", 30_000, async () => {
    const res = await fetch(`${mesh.edge}/v1/regions`, { headers: { authorization: `Bearer ${mesh.adminToken}` }, signal: AbortSignal.timeout(30_000) });
    const r = ((await res.json()) as RegionsView).regions.find((x) => x.name === REGION);
    return r?.health === "healthy" && r.nodes > 0 ? true : undefined;
  });
}

async function edgeGenerations(tag: string): Promise<void> {
  // After a router or node change the edge routes by the region's report: wait for a fresh one.
  await edgeSeesRegion();
  const ws = await StreamClient.open(`${mesh.edge.replace(/^http/, "ws")}/v2/models/demo-chat/stream`, { key: mesh.apiKey });
  try {
    const params = (i: number) => ({ max_tokens: MAX_TOKENS, temperature: 0.8, seed: i });
    // A small window: credit frames flow up while tokens flow down.
    const ended = await within(
      Promise.all(Array.from({ length: STREAMS }, (_, i) => ws.generate(`${tag}-${i}`, { text_input: PROMPT, parameters: params(i), window: 4 }, { autoAck: true }))),
      90_000,
      `${tag} generations`,
    );
    for (const [i, r] of ended.entries()) {
      expect(r.end.ev, `${tag}-${i}: ${JSON.stringify(r.end.ev)}`).toMatchObject({ type: "done" });
      expect(r.text).toBe(await ref.text(PROMPT, params(i)));
    }
    expect(ws.closed).toBeNull();
  } finally {
    ws.close();
  }
}

/** demo-chat as the edge would name it to this region (URLs signed with the region's secret). */
async function demoChatRef(): Promise<ModelRef> {
  const m = mesh.models.find((x) => x.name === "demo-chat")!;
  const bytes = await readFile(m.file);
  const tok = await readFile(join(dir, "models", CHAR_TOKENIZER_FILE));
  const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
  const exp = Date.now() + 10 * 60_000;
  const sig = readOnnxSignature(bytes);
  return {
    key: `wire-demo-chat@${m.version}`,
    account: mesh.accountId,
    name: "demo-chat",
    version: m.version,
    sha256: sha(bytes),
    size: bytes.length,
    artifactUrl: await artifactUrl(secret(), mesh.edge, REGION, sha(bytes), exp),
    signature: { inputs: sig.inputs, outputs: sig.outputs },
    tokenizer: { sha256: sha(tok), size: tok.length, url: await tokenizerUrl(secret(), mesh.edge, REGION, sha(tok), exp) },
  };
}

let streamNo = 0;
/** STREAMS generations at once on a raw stream socket to the router; each must arrive whole, in order. */
async function routerGenerations(s: RegionStream): Promise<void> {
  const model = await demoChatRef();
  const sids: string[] = [];
  for (let i = 0; i < STREAMS; i++) {
    const sid = `w${++streamNo}`;
    const req: RegionGenerateRequest = {
      requestId: `wire-${sid}`,
      model,
      prompt: PROMPT,
      params: { maxTokens: MAX_TOKENS, temperature: 0.8, topK: 0, topP: 1, repetitionPenalty: 1, stop: [], seed: i },
      deadline: Date.now() + 60_000,
    };
    const bytes = codec.encode(req);
    // The window covers every token: no credit frames needed.
    s.generate(sid, bytes, await signRequest(secret(), GENERATE_GRANT_METHOD, "/v1/streams", bytes), 64);
    sids.push(sid);
  }
  for (const sid of sids) {
    const end = await s.end(sid, 60_000);
    expect(end, sid).toMatchObject({ t: "done" });
    const tokens = s.of(sid).filter((f) => f.t === "token");
    expect(tokens.length).toBe(end.tokens);
    expect(tokens.map((f) => f.i)).toEqual(Array.from({ length: end.tokens }, (_, i) => i));
  }
}

const openStream = async (announce: string | null, opts: { takesBatch?: boolean } = {}) =>
  RegionStream.open(routerUrl(), { ...(await signRequest(secret(), "GET", "/v1/streams")), ...(announce !== null ? { [WIRE_HEADER]: announce } : {}) }, opts);

/**
 * Mid-upgrade, what an operator reads of which node speaks what (the router knows this build's
 * node `current`, announcing batch, and "old-node", announcing none): the router's report, its
 * gauge of nodes by wire, and the edge's GET /v1/regions (the operator's view only).
 */
async function operatorSeesWire(current: string): Promise<void> {
  const range = { min: MIN_WIRE_VERSION, max: WIRE_VERSION };
  const wireOf = async () => Object.fromEntries((await mesh.regionStatus(REGION)).nodes.map((n) => [n.id, n.wire]));
  expect(await wireOf()).toEqual({
    [current]: { ...range, features: ["batch"], version: WIRE_VERSION, agreed: ["batch"] },
    "old-node": { ...range, features: [], version: WIRE_VERSION, agreed: [] },
  });

  const metrics = await (await scrape(mesh.metrics.targets[`router-${REGION}`]!, mesh.metrics.token)).text();
  expect(sample(metrics, "mesh_router_nodes_by_wire", { version: String(WIRE_VERSION), features: "batch" })).toBe(1);
  expect(sample(metrics, "mesh_router_nodes_by_wire", { version: String(WIRE_VERSION), features: "none" })).toBe(1);
  expect(sample(metrics, "mesh_router_nodes_by_wire")).toBe(2);

  const regions = async (key: string) => {
    const res = await fetch(`${mesh.edge}/v1/regions`, { headers: { authorization: `Bearer ${key}` }, signal: AbortSignal.timeout(30_000) });
    expect(res.status).toBe(200);
    return ((await res.json()) as RegionsView).regions.find((r) => r.name === REGION)!;
  };
  // The edge reads the router's report from Redis (published every second): poll for both nodes.
  const view = await waitUntil("the edge's view names both nodes' wire", 30_000, async () => {
    const r = await regions(mesh.adminToken);
    return r.wire?.nodes.length === 2 ? r : undefined;
  });
  expect(view.wire!.byVersion).toEqual({ [String(WIRE_VERSION)]: 2 });
  expect(view.wire!.unreported).toBe(0);
  expect(Object.fromEntries(view.wire!.nodes.map(({ id, ...w }) => [id, w]))).toEqual(await wireOf());
  // A tenant's key sees nothing of the region's nodes.
  expect((await regions(mesh.apiKey)).wire).toBeNull();
}

describe("a rolling upgrade: every hop works whatever the other side's version", () => {
  it("an old router (no batch): the new edge and the new node send it frames one by one, and streams arrive whole", async () => {
    await edgeGenerations("old-router");
    // What the router says of itself on the 101: this build's versions, no feature.
    const s = await openStream(formatWireHeader(localWire()));
    try {
      expect(s.wire).toBe(`${THIS_BUILD};`);
      await routerGenerations(s);
      expect(s.batches).toBe(0);
    } finally {
      s.close();
    }
  });

  it("the router upgraded: it batches to an edge that announced batch, and sends an edge from before batches every frame alone", async () => {
    const node = (await nodesListed())[0]!;
    await mesh.stopRouter(REGION);
    delete routerEnv.MESH_WIRE_FEATURES;
    await mesh.startRouter(REGION);
    await waitUntil("the node reconnects to the new router", 30_000, async () => ((await nodesListed()).includes(node) ? true : undefined));

    const current = await openStream(formatWireHeader(localWire()));
    try {
      expect(current.wire).toBe(`${THIS_BUILD};batch`);
      // The control: this workload makes the router batch (a decode step's tokens of several
      // streams arrive in one message), or the next check would prove nothing.
      for (let round = 0; current.batches === 0 && round < 5; round++) await routerGenerations(current);
      expect(current.batches).toBeGreaterThan(0);
    } finally {
      current.close();
    }

    const old = await openStream(null, { takesBatch: false });
    try {
      for (let round = 0; round < 2; round++) await routerGenerations(old);
      expect(old.batches).toBe(0);
      expect(old.messages).toBeGreaterThan(STREAMS * MAX_TOKENS);
      expect(old.closed).toBeNull();
    } finally {
      old.close();
    }
    await edgeGenerations("new-router");
  });

  it("an old node joins and the new one leaves: the router sends it frames one by one (a cold load's generates start together)", async () => {
    const [current] = await nodesListed();
    await mesh.startNode(REGION, "old-node", { MESH_WIRE_FEATURES: "none" });
    await waitUntil("both nodes connected", 30_000, async () => ((await nodesListed()).includes("old-node") ? true : undefined));
    await operatorSeesWire(current!);
    const p = mesh.processes.find((x) => x.name === `node-${current}`)!;
    const exited = new Promise((r) => p.child.once("exit", r));
    signalGroup(p.child, "SIGTERM");
    await within(exited, 30_000, "the new node's exit");
    await waitUntil("only the old node is left", 30_000, async () => ((await nodesListed()).join() === "old-node" ? true : undefined));
    await edgeGenerations("old-node");
    const s = await openStream(formatWireHeader(localWire()));
    try {
      await routerGenerations(s);
    } finally {
      s.close();
    }
    expect(await nodesListed()).toEqual(["old-node"]);
  });
});

describe("no version in common: refused with wire_version_unsupported, both ranges named", () => {
  const FUTURE = "99-99;batch";

  it("the edge's stream socket: the upgrade is answered 426 with the error envelope", async () => {
    const err = await openStream(FUTURE).then(
      () => null,
      (e: { status?: number; body?: string }) => e,
    );
    expect(err?.status).toBe(426);
    expect(JSON.parse(err!.body!)).toEqual({ code: "wire_version_unsupported", error: `wire_version_unsupported: edge speaks wire 99, region ${THIS_BUILD}`, requestId: "-" });
    // A malformed announcement is a bad request, not a version.
    const bad = await openStream("latest").then(
      () => null,
      (e: { status?: number; body?: string }) => e,
    );
    expect(bad?.status).toBe(400);
    expect(JSON.parse(bad!.body!)).toMatchObject({ code: "bad_request" });
  });

  it("a call: 426, not started (the edge takes it elsewhere), its body never read", async () => {
    const body = codec.encode({ unread: true });
    const res = await fetch(routerUrl() + "/v1/infer", {
      method: "POST",
      body,
      headers: { ...(await signRequest(secret(), "POST", "/v1/infer", body)), "content-type": "application/x-msgpack", [WIRE_HEADER]: FUTURE },
    });
    expect(res.status).toBe(426);
    expect(codec.decode(new Uint8Array(await res.arrayBuffer()))).toEqual({
      ok: false,
      code: "wire_version_unsupported",
      message: `wire_version_unsupported: edge speaks wire 99, region ${THIS_BUILD}`,
      notStarted: true,
    });
  });

  it("a streamed generation's request: 426 with the error envelope", async () => {
    const res = await fetch(routerUrl() + "/v1/streams", { method: "POST", body: codec.encode({ t: "ping" }), headers: { [WIRE_HEADER]: FUTURE } });
    expect(res.status).toBe(426);
    expect(await res.json()).toMatchObject({ code: "wire_version_unsupported", error: `wire_version_unsupported: edge speaks wire 99, region ${THIS_BUILD}` });
  });

  it("a node: its hello is answered by a close with 4426 and the reason, never a generic 1002, and it is not listed", async () => {
    const ws = new WebSocket(routerUrl().replace(/^http/, "ws") + "/v1/nodes", { headers: { authorization: `Bearer ${mesh.nodeToken}` }, perMessageDeflate: false });
    const closed = new Promise<{ code: number; reason: string }>((r) => ws.once("close", (code, reason) => r({ code, reason: reason.toString() })));
    await new Promise((r, j) => {
      ws.once("open", r);
      ws.once("error", j);
    });
    ws.send(
      codec.encode(nodeHello("from-the-future", { wire: { min: 99, max: 99, features: ["batch"] } })),
    );
    expect(await within(closed, 10_000, "the router's close")).toEqual({
      code: CLOSE.wireVersionUnsupported,
      reason: `wire_version_unsupported: node speaks wire 99, router ${THIS_BUILD}`,
    });
    expect(await nodesListed()).not.toContain("from-the-future");
  });
});
