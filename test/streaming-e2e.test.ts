// Streaming generation end to end through the real parts: the edge in workerd, a region router,
// a node agent running the demo-chat language model (scripts/make-char-model.ts) in
// onnxruntime-node, Redis behind the Upstash REST stand-in. One mesh for the file, one region
// with one node, so the node's counters are the whole story. The node adds 2 ms per token
// (MESH_SIMULATED_TOKEN_MS, local mode) so a generation lasts long enough to be seen mid-way,
// and 300 ms per model load, so a cold start is a real wait.
//
// The truth for every text is the same loop run in this process (gpu-node/full-context-generator.ts on the
// same model file and tokenizer). No assertion is about speed: orderings and counts only, with
// generous bounds so a bug fails instead of hanging.

import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { CHAR_TOKENIZER_FILE } from "../scripts/make-char-model.js";
import { collectPageErrors, launchBrowser } from "./helpers/browser.js";
import { call, expectError } from "./helpers/mesh-client.js";
import { waitUntil, within } from "./helpers/region-harness.js";
import { descendantsNamed, readSse, ReferenceModel, rssMb, StreamClient, streamStats, type StreamStats } from "./helpers/stream-client.js";

let mesh: MeshHandle;
let dir: string;
let ref: ReferenceModel;
let modelPath: string;
let tokenizerPath: string;
const REGION = "us-west";
const STALL_MS = 5_000;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "streaming-e2e-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    nodeEnv: { HEARTBEAT_MS: "200", MESH_SIMULATED_TOKEN_MS: "2", MESH_SIMULATED_LOAD_MS: "300", MESH_EXECUTION_PROVIDER: "cpu" },
    routerEnv: { STREAM_STALL_TIMEOUT_MS: String(STALL_MS) },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
  const chat = mesh.models.find((m) => m.name === "demo-chat")!;
  modelPath = chat.file;
  tokenizerPath = join(dir, "models", CHAR_TOKENIZER_FILE);
  ref = await ReferenceModel.load(modelPath, tokenizerPath);
});

afterAll(async () => {
  await ref?.release();
  await mesh?.stop();
  await rm(dir, { recursive: true, force: true });
});

const wsUrl = (model: string, version?: string) => `${mesh.edge.replace(/^http/, "ws")}/v2/models/${model}${version ? `/versions/${version}` : ""}/stream`;
const stats = (): Promise<StreamStats> => streamStats(mesh.regions[REGION]!, mesh.regionSecrets[REGION]!);
const nodeStats = async () => (await stats()).nodes[0]!;
const post = (path: string, body: unknown, key = mesh.apiKey) => call(`${mesh.edge}${path}`, { key, json: body });

/** Waits until the node runs no generation and its token counter has stopped moving. */
async function nodeIdle(timeoutMs = 15_000): Promise<number> {
  let last = -1;
  return waitUntil("node idle", timeoutMs, async () => {
    const n = await nodeStats();
    const s = await stats();
    const settled = n.active === 0 && s.router.running === 0 && n.tokens === last;
    last = n.tokens;
    return settled ? n.tokens : undefined;
  }, 250);
}

/** Deploys the demo-chat files as a new model (never called before: cold everywhere). */
async function deployCopy(name: string): Promise<void> {
  expect((await post("/v1/models", { name })).status).toBe(201);
  const up = await call(`${mesh.edge}/v1/models/${name}/versions`, {
    key: mesh.apiKey,
    body: await readFile(modelPath),
    headers: { "content-type": "application/octet-stream" },
  });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  const tok = await call(`${mesh.edge}/v1/models/${name}/versions/1/tokenizer`, {
    key: mesh.apiKey,
    method: "PUT",
    body: await readFile(tokenizerPath),
    headers: { "content-type": "application/json" },
  });
  expect(tok.status, JSON.stringify(tok.body)).toBe(200);
}

describe("tokens arrive one by one", () => {
  it("over a WebSocket: each token its own event, in order, the first well before the last, and the text is the non-streamed result", async () => {
    const params = { max_tokens: 60, temperature: 0.8, top_k: 20, seed: 7 };
    const expected = await ref.text("The river", params);
    const whole = await post("/v2/models/demo-chat/generate", { id: "w1", text_input: "The river", parameters: params });
    expect(whole.status, JSON.stringify(whole.body)).toBe(200);
    expect(whole.body.text_output).toBe(expected);
    expect(whole.body).toMatchObject({ model_name: "demo-chat", model_version: "1", id: "w1", finish_reason: "length", usage: { prompt_tokens: 9, completion_tokens: 60 } });
    expect(whole.headers.get("x-mesh-node")).toBe(`${REGION}-node-1`);

    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      // A window of 4 with an ack per token: the node may be at most 4 tokens ahead of this
      // reader, so the stream can only finish if every token travels on its own, as produced.
      const sent = performance.now();
      const r = await within(ws.generate("s1", { text_input: "The river", parameters: params, window: 4 }, { autoAck: true }), 30_000, "stream");
      expect(r.end.ev.type, JSON.stringify(r.end.ev)).toBe("done");
      expect(r.tokens.map((t) => t.ev.index)).toEqual([...Array(60).keys()]);
      expect(r.text).toBe(expected);
      for (const t of r.tokens) expect(ref.tokenizer.decode([t.ev.token_id])).toBe(t.ev.text_output);
      const first = r.tokens[0]!.at;
      const last = r.tokens.at(-1)!.at;
      expect(first).toBeGreaterThan(sent);
      expect(first).toBeLessThan(last);
      // Tokens came spread over the generation, not in one burst at its end.
      const firstHalf = r.tokens.filter((t) => t.at < (first + last) / 2).length;
      expect(firstHalf).toBeGreaterThan(5);
      expect(r.end.ev).toMatchObject({ finish_reason: "length", tokens: 60, prompt_tokens: 9, region: REGION, node: `${REGION}-node-1` });
      expect(r.end.ev.timing.ttft_ms).toBeLessThanOrEqual(r.end.ev.timing.total_ms);
    } finally {
      ws.close();
    }
  });

  it("over Server-Sent Events: the same events and the same text, and stop sequences end it early", async () => {
    const params = { max_tokens: 50, temperature: 0.9, seed: 3 };
    const expected = await ref.text("In the morning", params);
    const res = await fetch(`${mesh.edge}/v2/models/demo-chat/generate_stream`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json", "x-request-id": "sse-request-1" },
      body: JSON.stringify({ id: "sse-1", text_input: "In the morning", parameters: params }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    // A stream's answer carries the request id and the edge's span like every other answer.
    expect(res.headers.get("x-request-id")).toBe("sse-request-1");
    expect(res.headers.get("traceparent")).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    const events = await within(readSse(res), 30_000, "sse");
    const tokens = events.filter((e) => e.ev.type === "token");
    expect(tokens.map((t) => t.ev.index)).toEqual([...Array(50).keys()]);
    expect(tokens.every((t) => t.ev.id === "sse-1")).toBe(true);
    expect(tokens.map((t) => t.ev.text_output).join("")).toBe(expected);
    expect(tokens[0]!.at).toBeLessThan(tokens.at(-1)!.at);
    expect(events.at(-1)!.ev).toMatchObject({ type: "done", finish_reason: "length", tokens: 50 });

    const stop = expected.slice(20, 22);
    const stopped = await fetch(`${mesh.edge}/v2/models/demo-chat/generate_stream`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ text_input: "In the morning", parameters: { ...params, stop: [stop] } }),
    });
    const ev2 = await within(readSse(stopped), 30_000, "sse stop");
    expect(ev2.filter((e) => e.ev.type === "token").map((e) => e.ev.text_output).join("")).toBe(expected.slice(0, expected.indexOf(stop)));
    expect(ev2.at(-1)!.ev).toMatchObject({ type: "done", finish_reason: "stop" });
  });

  it("in msgpack binary frames when asked, with the key as a subprotocol as browsers send it", async () => {
    const params = { max_tokens: 20, temperature: 0, seed: 1 };
    const ws = await StreamClient.open(wsUrl("demo-chat", "1"), { protocols: ["mesh.v1.msgpack", `mesh.key.${mesh.apiKey}`], msgpack: true });
    try {
      expect(ws.ws.protocol).toBe("mesh.v1.msgpack");
      const r = await within(ws.generate("m1", { text_input: "The", parameters: params }), 30_000, "msgpack stream");
      expect(r.text).toBe(await ref.text("The", params));
    } finally {
      ws.close();
    }
  });
});

describe("batched socket (opt-in ?batch=true)", () => {
  it("every message is an array of events; many streams at once arrive complete and in order, and events ready together share a message", async () => {
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey, batch: true });
    try {
      const prompts = ["The river", "In the morning", "She said", "The"];
      // Rounds of concurrent streams until the node's steps put two events in one message (the
      // first round nearly always does; the bound only keeps a bug from looping).
      for (let round = 0; round < 5 && !ws.shapes.some((n) => n > 1); round++) {
        const reqs = Array.from({ length: 16 }, (_, i) => ({
          id: `b${round}-${i}`,
          text_input: prompts[i % prompts.length]!,
          parameters: { max_tokens: 20 + (i % 4) * 5, temperature: 0.7, seed: 50 + i },
        }));
        const results = await within(
          Promise.all(reqs.map((r) => ws.generate(r.id, { text_input: r.text_input, parameters: r.parameters, window: 8 }, { autoAck: true }))),
          60_000,
          "batched streams",
        );
        for (const [i, r] of results.entries()) {
          const q = reqs[i]!;
          expect(r.end.ev, q.id).toMatchObject({ type: "done", id: q.id, finish_reason: "length", tokens: q.parameters.max_tokens });
          expect(r.tokens.map((t) => t.ev.index), q.id).toEqual([...Array(q.parameters.max_tokens).keys()]);
          expect(r.text, q.id).toBe(await ref.text(q.text_input, q.parameters));
        }
      }
      expect(ws.shapes.length).toBeGreaterThan(0);
      expect(ws.shapes.every((n) => n >= 1)).toBe(true);
      expect(ws.shapes.some((n) => n > 1)).toBe(true);
      // A refusal on a batched socket is an array too.
      ws.send({ type: "nonsense", id: "x1" });
      await waitUntil("refusal", 10_000, () => (ws.events.get("x1")?.some((r) => r.ev.type === "error") ? true : undefined));
      expect(ws.events.get("x1")![0]!.ev).toMatchObject({ type: "error", code: "bad_request" });
      expect(ws.shapes.at(-1)).toBeGreaterThanOrEqual(1);
    } finally {
      ws.close();
    }
  });

  it("in msgpack frames too, and a socket that did not ask still gets one event per message", async () => {
    const params = { max_tokens: 20, temperature: 0, seed: 1 };
    const batched = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey, msgpack: true, batch: true });
    const plain = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      const [b, p] = await within(
        Promise.all([batched.generate("m1", { text_input: "The", parameters: params }), plain.generate("p1", { text_input: "The", parameters: params })]),
        30_000,
        "two sockets",
      );
      const expected = await ref.text("The", params);
      expect(b.text).toBe(expected);
      expect(p.text).toBe(expected);
      expect(batched.shapes.every((n) => n >= 1)).toBe(true);
      expect(plain.shapes.every((n) => n === 0)).toBe(true);
      expect(plain.shapes.length).toBe(plain.all.length);
    } finally {
      batched.close();
      plain.close();
    }
  });
});

describe("shadow copies", () => {
  it("a WebSocket generation is copied to the shadow version once it has ended, even when the socket closes at once", async () => {
    const name = "ws-shadowed";
    await deployCopy(name);
    // The same graph and tokenizer again as v2: an identical shadow.
    const up = await call(`${mesh.edge}/v1/models/${name}/versions`, { key: mesh.apiKey, body: await readFile(modelPath), headers: { "content-type": "application/octet-stream" } });
    expect(up.body.version).toBe(2);
    const tok = await call(`${mesh.edge}/v1/models/${name}/versions/2/tokenizer`, { key: mesh.apiKey, method: "PUT", body: await readFile(tokenizerPath), headers: { "content-type": "application/json" } });
    expect(tok.status, JSON.stringify(tok.body)).toBe(200);
    const rule = await call(`${mesh.edge}/v1/models/${name}/traffic`, { key: mesh.apiKey, method: "PUT", json: { split: [{ version: 1, weight: 100 }], shadow: [{ version: 2, percent: 100 }] } });
    expect(rule.status, JSON.stringify(rule.body)).toBe(200);
    const t0 = Date.now();
    const params = { max_tokens: 20, temperature: 0 };
    const ws = await StreamClient.open(wsUrl(name), { key: mesh.apiKey });
    let r;
    try {
      r = await within(ws.generate("sh1", { text_input: "The river", parameters: params }), 30_000, "stream");
    } finally {
      ws.close();
    }
    // The caller's text is v1's, as without a shadow.
    expect(r.end.ev).toMatchObject({ type: "done", model_version: "1" });
    expect(r.text).toBe(await ref.text("The river", params));
    const shadow = await waitUntil(
      "the shadow's usage row",
      60_000,
      async () => {
        const u = await call(`${mesh.edge}/v1/usage?model=${name}&from=${t0}`, { key: mesh.apiKey });
        const row = (u.body.models as { version: number; shadow: { calls: number } }[] | undefined)?.find((x) => x.version === 2);
        return (row?.shadow.calls ?? 0) >= 1 ? row!.shadow : undefined;
      },
      250,
    );
    expect(shadow).toMatchObject({ calls: 1, errors: 0, mismatches: 0, promptTokens: 9, completionTokens: 20 });
  }, 120_000);
});

describe("long streams", () => {
  it("a stream lasts as long as it takes (longer than any connect bound), over a WebSocket and SSE at once", async () => {
    // 3000 tokens at 2 ms each: over 6 s.
    const params = { max_tokens: 3000, temperature: 0.8, seed: 21 };
    const expected = await ref.text("The river", params);
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      const viaWs = ws.generate("long", { text_input: "The river", parameters: params, window: 64 }, { autoAck: true });
      const viaSse = fetch(`${mesh.edge}/v2/models/demo-chat/generate_stream`, {
        method: "POST",
        headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ text_input: "The river", parameters: params }),
      }).then((res) => readSse(res));
      const [a, b] = await within(Promise.all([viaWs, viaSse]), 60_000, "long streams");
      expect(a.end.ev).toMatchObject({ type: "done", finish_reason: "length", tokens: 3000 });
      expect(a.text).toBe(expected);
      expect(b.at(-1)!.ev).toMatchObject({ type: "done", finish_reason: "length", tokens: 3000 });
      expect(b.filter((e) => e.ev.type === "token").map((e) => e.ev.text_output).join("")).toBe(expected);
      expect(a.tokens.at(-1)!.at - a.tokens[0]!.at).toBeGreaterThan(5_000);
    } finally {
      ws.close();
    }
  }, 90_000);
});

describe("cancellation", () => {
  it("cancel mid-stream: the node stops within a few tokens and takes new work at once", async () => {
    const before = await nodeIdle();
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      const WINDOW = 8;
      const ended = ws.generate("c1", { text_input: "The river", parameters: { max_tokens: 4000, temperature: 0.8, seed: 2 }, window: WINDOW }, { autoAck: true });
      await ws.waitTokens("c1", 10);
      const atCancel = ws.tokensOf("c1").length;
      ws.cancel("c1");
      const r = await within(ended, 15_000, "cancelled stream's end");
      expect(r.end.ev).toMatchObject({ type: "done", finish_reason: "cancelled" });
      // What was in flight when the cancel left (at most the window) arrives; nothing after.
      expect(r.end.ev.tokens).toBeLessThanOrEqual(atCancel + WINDOW + 1);
      expect(r.tokens.length).toBe(r.end.ev.tokens);
      const after = await nodeIdle();
      // The node produced what it sent plus at most the one it held when the cancel came.
      expect(after - before).toBeLessThanOrEqual(r.end.ev.tokens + 1);
      const n = await nodeStats();
      expect(n.active).toBe(0);
      expect(n.streams).toBe(0);
      // New work on the same socket runs and is right.
      const params = { max_tokens: 30, temperature: 0.8, seed: 9 };
      const next = await within(ws.generate("c2", { text_input: "The river", parameters: params }), 30_000, "next stream");
      expect(next.end.ev.type).toBe("done");
      expect(next.text).toBe(await ref.text("The river", params));
    } finally {
      ws.close();
    }
  });

  it("the caller disconnects mid-stream (WebSocket, then SSE): the generation stops on the node", async () => {
    const before = await nodeIdle();
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    void ws.generate("d1", { text_input: "The river", parameters: { max_tokens: 4000, temperature: 0.8, seed: 4 }, window: 16 }, { autoAck: true });
    await ws.waitTokens("d1", 10);
    ws.ws.terminate();
    const afterWs = await nodeIdle();
    // 4000 tokens would take the node 8 s at 2 ms each; it stopped long before.
    expect(afterWs - before).toBeLessThan(200);

    const abort = new AbortController();
    const res = await fetch(`${mesh.edge}/v2/models/demo-chat/generate_stream`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ text_input: "The river", parameters: { max_tokens: 4000, temperature: 0.8, seed: 5 } }),
      signal: abort.signal,
    });
    const got = await readSse(res, { stopAfter: 10, abort });
    expect(got.filter((e) => e.ev.type === "token")).toHaveLength(10);
    const afterSse = await nodeIdle();
    expect(afterSse - afterWs).toBeLessThan(1000);
    expect((await stats()).router.running).toBe(0);
  });
});

describe("back-pressure", () => {
  it("a reader that does not read: the node stops producing and memory on edge, router and node stays bounded", async () => {
    const edgeProc = mesh.processes.find((p) => p.name === "edge")!;
    const [workerd] = await descendantsNamed(edgeProc.child.pid!, "workerd");
    expect(workerd, "the edge's workerd process").toBeDefined();
    const routerPid = mesh.processes.find((p) => p.name === `router-${REGION}`)!.child.pid!;
    const nodePid = mesh.processes.find((p) => p.name === `node-${REGION}-node-1`)!.child.pid!;
    const before = await nodeIdle();
    const memBefore = { edge: await rssMb(workerd!), router: await rssMb(routerPid), node: await rssMb(nodePid) };

    const STREAMS = 20;
    const WINDOW = 64;
    const MAX = 4000;
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      for (let i = 0; i < STREAMS; i++) void ws.generate(`slow-${i}`, { text_input: "The river", parameters: { max_tokens: MAX, temperature: 0.8, seed: i }, window: WINDOW });
      await ws.waitTokens("slow-0", 1);
      // Stop reading altogether: not even the socket is read from now on.
      ws.ws.pause();
      // The node fills each window, then waits: its counter stops well short of what was asked.
      let last = -1;
      let same = 0;
      const plateau = await waitUntil("producer stops", STALL_MS - 1_000, async () => {
        const n = await nodeStats();
        same = n.tokens === last ? same + 1 : 0;
        last = n.tokens;
        return same >= 3 ? n : undefined;
      }, 200);
      const produced = plateau.tokens - before;
      expect(plateau.active).toBe(STREAMS);
      expect(produced).toBeGreaterThanOrEqual(STREAMS * WINDOW);
      expect(produced).toBeLessThanOrEqual(STREAMS * (WINDOW + 1));
      expect(produced).toBeLessThan((STREAMS * MAX) / 10);
      const memStalled = { edge: await rssMb(workerd!), router: await rssMb(routerPid), node: await rssMb(nodePid) };
      const s = await stats();
      expect(s.router.running).toBe(STREAMS);
      expect(s.router.bufferedBytes).toBeLessThan(64 * 1024);
      for (const k of ["edge", "router", "node"] as const) expect(memStalled[k] - memBefore[k], `${k} RSS growth, MiB`).toBeLessThan(64);
      // A reader that stays stalled is cut off after the stall timeout, freeing the node.
      const freed = await waitUntil("stalled streams cancelled", STALL_MS + 10_000, async () => ((await nodeStats()).active === 0 ? true : undefined), 250);
      expect(freed).toBe(true);
      expect((await nodeStats()).tokens - before).toBe(produced);
      // Reading again, the caller finds each stream ended by the stall bound, after its window.
      ws.ws.resume();
      await waitUntil("stall errors read", 10_000, () => (ws.all.filter((r) => r.ev.type === "error").length === STREAMS ? true : undefined));
      for (let i = 0; i < STREAMS; i++) {
        const s = ws.summary(`slow-${i}`);
        expect(s.tokens).toHaveLength(WINDOW);
        expect(s.end.ev).toMatchObject({ type: "error", code: "deadline_exceeded" });
        expect(s.end.ev.error).toMatch(/took no token/);
      }
    } finally {
      ws.ws.terminate();
    }
    await nodeIdle();
  });
});

describe("concurrency on one socket", () => {
  it("opening a socket and each request on it count against the key's rate limit", async () => {
    const created = await call(`${mesh.edge}/v1/keys`, { key: mesh.apiKey, json: { scopes: ["infer"], rateLimit: { perSecond: 1, burst: 3 } } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: created.body.key as string }); // 1 of 3
    try {
      const params = { text_input: "The river", parameters: { max_tokens: 2, seed: 1 } };
      const ends = [];
      for (let i = 0; i < 3; i++) ends.push((await within(ws.generate(`rl-${i}`, params, { autoAck: true }), 20_000, "rate-limited stream")).end.ev);
      expect(ends.map((e) => e.type)).toEqual(["done", "done", "error"]);
      expect((ends[2] as { code?: string }).code).toBe("rate_limited");
    } finally {
      ws.close();
    }
  });

  it("many concurrent streams on one socket keep their ids apart", async () => {
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      const N = 24;
      const prompts = ["The river", "In the morning", "She said", "The"];
      const reqs = Array.from({ length: N }, (_, i) => ({
        id: `req-${i}`,
        text_input: prompts[i % prompts.length]!,
        parameters: { max_tokens: 30 + (i % 5) * 7, temperature: 0.5 + (i % 4) * 0.2, top_k: i % 3 === 0 ? 0 : 10, seed: 1000 + i },
      }));
      const results = await within(
        Promise.all(reqs.map((r) => ws.generate(r.id, { text_input: r.text_input, parameters: r.parameters, window: 16 }, { autoAck: true }))),
        60_000,
        "concurrent streams",
      );
      for (const [i, r] of results.entries()) {
        const q = reqs[i]!;
        expect(r.end.ev.type, `${q.id}: ${JSON.stringify(r.end.ev)}`).toBe("done");
        expect(r.tokens.every((t) => t.ev.id === q.id)).toBe(true);
        expect(r.tokens.map((t) => t.ev.index), q.id).toEqual([...Array(q.parameters.max_tokens).keys()]);
        expect(r.text, q.id).toBe(await ref.text(q.text_input, q.parameters));
      }
      // They really ran at once: the socket's events interleave ids.
      const order = ws.all.filter((r) => r.ev.type === "token").map((r) => r.ev.id);
      let switches = 0;
      for (let i = 1; i < order.length; i++) if (order[i] !== order[i - 1]) switches++;
      expect(switches).toBeGreaterThan(N);
      // A duplicate id while running is refused, and the running one goes on unharmed.
      void ws.generate("dup", { text_input: "The", parameters: { max_tokens: 300, seed: 1 }, window: 16 }, { autoAck: true });
      await ws.waitTokens("dup", 1);
      ws.send({ type: "generate", id: "dup", text_input: "The" });
      const dupEvents = () => ws.events.get("dup") ?? [];
      await waitUntil("duplicate refused", 10_000, () => (dupEvents().some((r) => r.ev.type === "error") ? true : undefined));
      await waitUntil("first dup done", 30_000, () => (dupEvents().some((r) => r.ev.type === "done") ? true : undefined));
      expect(dupEvents().find((r) => r.ev.type === "error")!.ev).toMatchObject({ code: "bad_request" });
      expect(dupEvents().find((r) => r.ev.type === "done")!.ev).toMatchObject({ finish_reason: "length", tokens: 300 });
      expect(ws.tokensOf("dup").map((t) => t.ev.index)).toEqual([...Array(300).keys()]);
    } finally {
      ws.close();
    }
  });
});

describe("cold start", () => {
  it("a stream to a cold model shows queued, loading (bytes and percent) and running before its first token", async () => {
    await deployCopy("cold-chat");
    const ws = await StreamClient.open(wsUrl("cold-chat"), { key: mesh.apiKey });
    try {
      const params = { max_tokens: 20, temperature: 0.8, seed: 11 };
      const r = await within(ws.generate("cold", { text_input: "The river", parameters: params }), 30_000, "cold stream");
      expect(r.end.ev.type, JSON.stringify(r.end.ev)).toBe("done");
      expect(r.text).toBe(await ref.text("The river", params));
      const list = ws.events.get("cold")!;
      const firstToken = list.findIndex((e) => e.ev.type === "token");
      const before = list.slice(0, firstToken).map((e) => e.ev);
      expect(before.every((e) => e.type === "progress")).toBe(true);
      const stages = before.map((e) => e.stage);
      expect(stages[0]).toBe("queued");
      expect(stages.at(-1)).toBe("running");
      const loading = before.filter((e) => e.stage === "loading");
      expect(loading.length).toBeGreaterThanOrEqual(1);
      const size = (await readFile(modelPath)).length;
      for (const e of loading) {
        expect(e.total).toBe(size);
        expect(e.percent).toBe(Math.floor((e.bytes / e.total) * 100));
      }
      expect(loading.at(-1)!.bytes).toBe(size);
      expect(loading.at(-1)!.percent).toBe(100);
      expect(list.slice(firstToken).every((e) => e.ev.type !== "progress")).toBe(true);
      expect(r.end.ev.timing.load_ms).toBeGreaterThan(0);
      // Warm now: the next stream has nothing to wait for, so no progress events.
      const again = await within(ws.generate("warm", { text_input: "The river", parameters: params }), 30_000, "warm stream");
      expect(again.progress).toEqual([]);
      expect(again.text).toBe(r.text);
    } finally {
      ws.close();
    }
  });

  it("a plain generate call to a cold model just waits for the load and answers", async () => {
    await deployCopy("cold-chat-2");
    const params = { max_tokens: 15, temperature: 0, seed: 1 };
    const a = await post("/v2/models/cold-chat-2/generate", { text_input: "The", parameters: params });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.body.text_output).toBe(await ref.text("The", params));
    expect(a.headers.get("server-timing")).toMatch(/load;dur=[1-9]/);
  });
});

describe("refusals and the tokenizer", () => {
  it("authenticates at the upgrade: no key, a wrong key, a key without infer, a key protocol without a framing protocol", async () => {
    const refused = async (p: Promise<unknown>) => {
      const err = (await p.then(() => null, (e: unknown) => e)) as { status?: number; body?: string } | null;
      expect(err, "the upgrade was refused").not.toBeNull();
      return err!;
    };
    expect((await refused(StreamClient.open(wsUrl("demo-chat")))).status).toBe(401);
    expect((await refused(StreamClient.open(wsUrl("demo-chat"), { key: "mesh_" + "x".repeat(40) }))).status).toBe(401);
    expect((await refused(StreamClient.open(wsUrl("demo-chat"), { protocols: [`mesh.key.${mesh.apiKey}`] }))).status).toBe(400);
    const manageOnly = await post("/v1/keys", { name: "manage-only", scopes: ["manage"] });
    expect(manageOnly.status).toBe(201);
    const e = await refused(StreamClient.open(wsUrl("demo-chat"), { key: manageOnly.body.key }));
    expect(e.status).toBe(403);
    expect(JSON.parse(e.body!).code).toBe("forbidden");
    // Other accounts' models are as missing as missing ones.
    expect((await refused(StreamClient.open(wsUrl("no-such-model"), { key: mesh.apiKey }))).status).toBe(404);
    expectError(await call(`${mesh.edge}/v2/models/demo-chat/generate_stream`, { json: { text_input: "x" } }), 401, "unauthorized");
  });

  it("refuses models that cannot generate and requests that are wrong, with clear messages", async () => {
    const notGen = await post("/v2/models/demo-mlp/generate", { text_input: "hi" });
    expectError(notGen, 400, "bad_request");
    expect(notGen.body.error).toMatch(/cannot generate text/);
    expectError(await post("/v2/models/demo-chat/generate", { text_input: "" }), 400, "bad_request");
    const badParam = await post("/v2/models/demo-chat/generate", { text_input: "The", parameters: { maxTokens: 5 } });
    expectError(badParam, 400, "bad_request");
    expect(badParam.body.error).toMatch(/unknown parameter 'maxTokens'/);
    expectError(await post("/v2/models/demo-chat/generate", { text_input: "The", parameters: { max_tokens: 99_999 } }), 400, "bad_request");
    // On a socket, a bad message is answered on the socket, and the socket goes on.
    const ws = await StreamClient.open(wsUrl("demo-chat"), { key: mesh.apiKey });
    try {
      ws.send({ type: "generate", id: "bad", text_input: "The", parameters: { temperature: -1 } });
      ws.ws.send("not json");
      const ok = await within(ws.generate("good", { text_input: "The", parameters: { max_tokens: 5, seed: 1 } }), 30_000, "good");
      expect(ok.end.ev.type).toBe("done");
      expect(ws.events.get("bad")?.[0]?.ev).toMatchObject({ type: "error", code: "bad_request" });
      expect(ws.events.get("")?.[0]?.ev).toMatchObject({ type: "error", id: null, code: "invalid_json" });
    } finally {
      ws.close();
    }
  });

  it("stores a version's tokenizer once: the same file again is fine, another is a conflict, junk is refused", async () => {
    const put = (model: string, body: BodyInit) =>
      call(`${mesh.edge}/v1/models/${model}/versions/1/tokenizer`, { key: mesh.apiKey, method: "PUT", body, headers: { "content-type": "application/json" } });
    const same = await put("demo-chat", await readFile(tokenizerPath));
    expect(same.status, JSON.stringify(same.body)).toBe(200);
    expect(same.body.sha256).toMatch(/^[0-9a-f]{64}$/);
    const other = JSON.parse(await readFile(tokenizerPath, "utf8"));
    other.added_tokens[0].content = "<unknown>";
    other.model.unk_token = "<unknown>";
    delete other.model.vocab["<unk>"];
    other.model.vocab["<unknown>"] = 0;
    expectError(await put("demo-chat", JSON.stringify(other)), 409, "conflict");
    expectError(await put("demo-chat", "{not json"), 400, "bad_request");
    const unsupported = await put("demo-chat", JSON.stringify({ model: { type: "WordPiece", vocab: { a: 0 } } }));
    expectError(unsupported, 400, "bad_request");
    expect(unsupported.body.error).toMatch(/WordPiece/);
    const mlp = await put("demo-mlp", await readFile(tokenizerPath));
    expectError(mlp, 400, "bad_request");
    expect(mlp.body.error).toMatch(/not a generative model/);
    const got = await call(`${mesh.edge}/v1/models/demo-chat/versions/1/tokenizer`, { key: mesh.apiKey });
    expect(got.status).toBe(200);
    expect(got.body).toEqual(JSON.parse(await readFile(tokenizerPath, "utf8")));
    // Nodes fetch it only through a URL the edge signed.
    expectError(await call(`${mesh.edge}/internal/tokenizers/${same.body.sha256}`), 401, "unauthorized");
  });

  it("usage counts prompt and generated tokens", async () => {
    await post("/v2/models/demo-chat/generate", { text_input: "The river", parameters: { max_tokens: 12, seed: 1 } });
    const usage = await waitUntil("usage rows written", 10_000, async () => {
      const u = await call(`${mesh.edge}/v1/usage?model=demo-chat`, { key: mesh.apiKey });
      const row = u.body?.models?.find((m: { version: number }) => m.version === 1);
      return row && row.completionTokens > 0 ? row : undefined;
    }, 300);
    expect(usage.promptTokens).toBeGreaterThanOrEqual(9);
    expect(usage.completionTokens).toBeGreaterThanOrEqual(12);
  });
});

describe("playground", () => {
  it("in headless Chromium: enter a key, pick a model, watch the tokens arrive one by one, see a cold start's progress", async () => {
    const browser = await launchBrowser();
    try {
      const page = await browser.newPage();
      const errors = collectPageErrors(page);
      await page.goto(`${mesh.edge}/playground`);
      await page.fill("#key", mesh.apiKey);
      await page.dispatchEvent("#key", "change");
      // The key may read the model list (manage scope): the picker offers the account's models.
      await page.waitForFunction(() => [...document.querySelectorAll("#models option")].some((o) => (o as HTMLOptionElement).value === "demo-chat"), null, { timeout: 10_000 });
      await page.fill("#model", "demo-chat");
      await page.fill("#prompt", "The river");
      await page.fill("#max_tokens", "80");
      await page.fill("#temperature", "0.8");
      await page.fill("#top_k", "0");
      await page.fill("#seed", "5");
      // When each token reaches the page.
      await page.evaluate(() => {
        const w = window as unknown as { arrivals: number[] };
        w.arrivals = [];
        new MutationObserver((list) => {
          for (const m of list) for (const n of m.addedNodes) if ((n as Element).classList?.contains("tok")) w.arrivals.push(performance.now());
        }).observe(document.getElementById("output")!, { childList: true });
      });
      await page.click("#go");
      await page.waitForSelector("body[data-state=done]", { timeout: 30_000 });
      const text = await page.$$eval("#output .tok", (spans) => spans.map((s) => s.textContent).join(""));
      expect(text).toBe(await ref.text("The river", { max_tokens: 80, temperature: 0.8, top_k: 0, seed: 5 }));
      const arrivals = await page.evaluate(() => (window as unknown as { arrivals: number[] }).arrivals);
      expect(arrivals).toHaveLength(80);
      expect(arrivals[0]!).toBeLessThan(arrivals.at(-1)!);
      expect(await page.textContent("#count")).toBe("80");
      expect(await page.textContent("#status")).toMatch(/^done: length, 80 tokens/);

      // A cold model: the page shows why the first token waits.
      await deployCopy("cold-chat-page");
      await page.fill("#model", "cold-chat-page");
      await page.fill("#max_tokens", "20");
      await page.click("#go");
      await page.waitForSelector("body[data-state=done]", { timeout: 30_000 });
      const notes = await page.$$eval("#events li", (lis) => lis.map((l) => l.textContent ?? ""));
      const idx = (re: RegExp) => notes.findIndex((n) => re.test(n));
      expect(idx(/queued/)).toBeGreaterThanOrEqual(0);
      expect(idx(/loading the model 100% \(\d+ of \d+ bytes\)/)).toBeGreaterThan(idx(/queued/));
      expect(idx(/running/)).toBeGreaterThan(idx(/loading/));
      expect(idx(/done \(length\)/)).toBeGreaterThan(idx(/running/));
      await mkdir(join(process.cwd(), "test-artifacts"), { recursive: true });
      await page.screenshot({ path: join(process.cwd(), "test-artifacts", "playground.png"), fullPage: true });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
