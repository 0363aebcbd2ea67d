// Callers that leave, or stop reading, stop their generation on the node: real parts end to end
// (the edge in workerd, one region router, one node running demo-chat in onnxruntime-node, Redis
// behind the Upstash REST stand-in). The node adds 5 ms per token (MESH_SIMULATED_TOKEN_MS), so
// a generation of 4000 tokens would run for 20 s: one that ends with far fewer was stopped.
//
//  - A non-streamed answer (the OpenAI client's chat completion, the KServe generate route)
//    whose caller aborts once the node runs it: the edge learns it from request.signal and
//    cancels the generation on the node; its usage row has the tokens that reached the edge.
//    Local workerd notices a closed connection only when it writes to it, and a gathered answer
//    writes nothing until the end, so these callers go through the mesh's front-line stand-in
//    (local/edge-server.ts FRONT_LINE), which cancels the edge's request when its caller
//    disconnects, as Cloudflare's front line does.
//  - A streamed chat the client aborts mid-stream stops on the node too (the body's cancel).
//  - An SSE caller that stops reading but keeps its connection: on one machine the buffers to
//    it take a whole answer, so the node runs to its end at full speed and is free again (the
//    stall bound for a reader whose buffers are full is test/sse-body.test.ts).

import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { call } from "./helpers/mesh-client.js";
import { waitUntil, within } from "./helpers/region-harness.js";
import { streamStats, nodeIdle as waitForNodeIdle, type StreamStats } from "./helpers/stream-client.js";

const REGION = "us-west";
const MAX_TOKENS = 4000;

let mesh: MeshHandle;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "generation-cancel-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    nodeEnv: { HEARTBEAT_MS: "200", MESH_SIMULATED_TOKEN_MS: "5", MESH_EXECUTION_PROVIDER: "cpu" },
    frontLine: true,
    tinyGpt: false,
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
}, 240_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const stats = (): Promise<StreamStats> => streamStats(mesh.regions[REGION]!, mesh.regionSecrets[REGION]!);

const nodeIdle = (timeoutMs = 30_000) => waitForNodeIdle(stats, timeoutMs);

/** Waits until the node runs a generation that has produced tokens (the request reached it). */
async function nodeRunning(before: number): Promise<void> {
  await waitUntil("generation running on the node", 30_000, async () => {
    const n = (await stats()).nodes[0]!;
    return n.active > 0 && n.tokens > before ? true : undefined;
  }, 100);
}

type UsageRow = { calls: number; errors: number; promptTokens: number; completionTokens: number };

/** demo-chat's usage since `from`, once it has `calls` rows. */
async function usageSince(from: number, calls: number): Promise<UsageRow> {
  return waitUntil(
    "usage row",
    30_000,
    async () => {
      const u = await call(`${mesh.edge}/v1/usage?model=demo-chat&from=${from}`, { key: mesh.apiKey });
      const r = (u.body.models as UsageRow[] | undefined)?.[0];
      return r && r.calls >= calls ? r : undefined;
    },
    250,
  );
}

describe("a non-streamed generation whose caller leaves stops on the node", () => {
  it("the openai client aborts a chat completion (stream false) once the node runs it", async () => {
    const before = await nodeIdle();
    const from = Date.now();
    const client = new OpenAI({ apiKey: mesh.apiKey, baseURL: `${mesh.front}/openai/v1`, maxRetries: 0 });
    const abort = new AbortController();
    const answer = client.chat.completions
      .create({ model: "demo-chat", messages: [{ role: "user", content: "Go on and on." }], max_tokens: MAX_TOKENS, temperature: 0.8, seed: 2 }, { signal: abort.signal })
      .then(
        () => null,
        (e: unknown) => e,
      );
    await nodeRunning(before);
    abort.abort();
    // The client's own abort (the front line answered 200 at once, so it comes while the body is read).
    expect(await within(answer, 10_000, "the aborted call")).toMatchObject({ name: expect.stringMatching(/Abort/) });
    const after = await nodeIdle();
    // The node stopped once the edge saw its caller go: far short of max_tokens.
    expect(after - before).toBeGreaterThan(0);
    expect(after - before).toBeLessThan(MAX_TOKENS / 2);
    // One whole usage row (answered 499: cancelled), with the tokens that reached the edge before
    // it cancelled: not max_tokens, not nothing, never more than the node produced.
    const row = await usageSince(from, 1);
    expect(row.calls).toBe(1);
    expect(row.errors).toBe(1);
    expect(row.completionTokens).toBeGreaterThan(0);
    expect(row.completionTokens).toBeLessThanOrEqual(after - before);
    // Its running-stream place and region stream were given back: the next call runs whole.
    const next = await new OpenAI({ apiKey: mesh.apiKey, baseURL: `${mesh.edge}/openai/v1`, maxRetries: 0 }).chat.completions.create({ model: "demo-chat", messages: [{ role: "user", content: "hi" }], max_tokens: 3 });
    expect(next.usage?.completion_tokens).toBe(3);
  });

  it("a KServe generate call (the whole text at once) aborted the same way", async () => {
    const before = await nodeIdle();
    const from = Date.now();
    const abort = new AbortController();
    const res = fetch(`${mesh.front}/v2/models/demo-chat/generate`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ text_input: "The river", parameters: { max_tokens: MAX_TOKENS, temperature: 0.8, seed: 4 } }),
      signal: abort.signal,
    }).then((r) => r.text());
    await nodeRunning(before);
    abort.abort();
    await expect(res).rejects.toMatchObject({ name: "AbortError" });
    const after = await nodeIdle();
    expect(after - before).toBeGreaterThan(0);
    expect(after - before).toBeLessThan(MAX_TOKENS / 2);
    const row = await usageSince(from, 1);
    expect(row.completionTokens).toBeGreaterThan(0);
    expect(row.completionTokens).toBeLessThanOrEqual(after - before);
  });
});

describe("a streamed generation whose caller leaves stops on the node", () => {
  it("the openai client aborts a streamed chat completion mid-stream (the edge directly)", async () => {
    const before = await nodeIdle();
    const from = Date.now();
    const client = new OpenAI({ apiKey: mesh.apiKey, baseURL: `${mesh.edge}/openai/v1`, maxRetries: 0 });
    const stream = await client.chat.completions.create({ model: "demo-chat", messages: [{ role: "user", content: "Go on and on." }], max_tokens: MAX_TOKENS, temperature: 0.8, seed: 5, stream: true });
    let seen = 0;
    for await (const ch of stream) {
      if (ch.choices[0]?.delta.content && ++seen >= 10) {
        stream.controller.abort();
        break;
      }
    }
    expect(seen).toBe(10);
    const after = await nodeIdle();
    expect(after - before).toBeLessThan(MAX_TOKENS / 2);
    const row = await usageSince(from, 1);
    expect(row.completionTokens).toBeGreaterThanOrEqual(10);
    expect(row.completionTokens).toBeLessThanOrEqual(after - before);
  });
});

describe("an SSE reader that stops reading", () => {
  // The stall bound itself (edge/sse-body.ts) is test/sse-body.test.ts: on one machine the kernel
  // takes a few MB for a reader that reads nothing (2.7 MB measured, with a 4 KiB receive buffer)
  // before workerd stops pulling, more than any answer here, so the edge never sees it stall.
  it("on one machine the buffers take the whole answer: the node runs to max_tokens and is free, nothing is lost", async () => {
    const maxTokens = 600;
    const before = await nodeIdle();
    const edge = new URL(mesh.edge);
    const body = JSON.stringify({ model: "demo-chat", messages: [{ role: "user", content: "Go on and on." }], max_tokens: maxTokens, temperature: 0.8, seed: 3, stream: true });
    const socket = connect(Number(edge.port), edge.hostname);
    const received: Buffer[] = [];
    socket.on("data", (d: Buffer) => received.push(d));
    socket.on("error", () => undefined);
    await new Promise<void>((resolve) => socket.once("connect", () => resolve()));
    socket.write(
      `POST /openai/v1/chat/completions HTTP/1.1\r\nHost: ${edge.host}\r\nAuthorization: Bearer ${mesh.apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
    // A reader that takes nothing more.
    socket.pause();
    await nodeRunning(before);
    const after = await nodeIdle();
    expect(after - before).toBe(maxTokens);
    // Reading again: the whole stream was kept for it.
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.resume();
    await within(closed, 30_000, "the end of the stream");
    const text = Buffer.concat(received).toString("utf8");
    expect(text).toContain("data: [DONE]");
    expect(text.match(/"delta":\{"content"/g)).toHaveLength(maxTokens);
  });
});
