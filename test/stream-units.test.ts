// The pieces of streaming without sockets: the node's generations under credit
// (gpu-node/generation-relay.ts driving the real demo-chat model in a real session child), the stream
// frames' validators (protocol/messages.ts), the edge's request parsing and model checks, and the
// edge's streamed HTTP channel against a scripted region response.

import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { createCodec } from "../protocol/codec.js";
import { frameBytes } from "../protocol/frame-stream.js";
import {
  MessageError,
  parseEdgeToRegion,
  parseNodeMessage,
  parseRegionGenerateRequest,
  parseRegionToEdge,
  parseRouterMessage,
  type EdgeToRegion,
  type NodeToRouter,
  type RegionToEdge,
  type RouterToNode,
  type TokenizerRef,
} from "../protocol/messages.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import { loadTokenizer, type Tokenizer } from "../formats/tokenizer.js";
import { generateText } from "../gpu-node/full-context-generator.js";
import { Generations, TokenizerFiles } from "../gpu-node/generation-relay.js";
import { ModelCache } from "../gpu-node/model-cache.js";
import { SessionProcess } from "../gpu-node/session-process.js";
import { parseGenerateInput } from "../edge/stream-protocol.js";
import { generativeSignature } from "../edge/tokenizers.js";
import { makeCharModel } from "../scripts/make-char-model.js";
import { waitUntil } from "./helpers/region-harness.js";

let dir: string;
let session: ort.InferenceSession;
let tokenizer: Tokenizer;
let tokRef: TokenizerRef;
let modelPath: string;
/** The model's session child, where the generations run. */
let proc: SessionProcess;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "stream-units-"));
  const files = await makeCharModel(join(dir, "models"));
  modelPath = files.modelPath;
  session = await ort.InferenceSession.create(files.modelPath, { executionProviders: ["cpu"] });
  const text = await readFile(files.tokenizerPath, "utf8");
  tokenizer = loadTokenizer(text);
  const sha256 = createHash("sha256").update(text).digest("hex");
  // Already in the node's cache: no download needed (the cache trusts a file of the right size).
  const cache = new ModelCache(join(dir, "cache"));
  await mkdir(dirname(cache.pathFor(sha256, "json")), { recursive: true });
  await writeFile(cache.pathFor(sha256, "json"), text);
  tokRef = { sha256, size: Buffer.byteLength(text), url: "http://127.0.0.1:9/unused" };
  proc = await SessionProcess.start({ path: modelPath, threads: 1, executionProviders: ["cpu"], memoryLimitBytes: 2 ** 30, loadTimeoutMs: 30_000 });
});

afterAll(async () => {
  proc?.kill();
  await session?.release();
  await rm(dir, { recursive: true, force: true });
});

type Frame = NodeToRouter;

function harness(opts: { withSession?: boolean } = {}) {
  const frames: Frame[] = [];
  const gens = new Generations({
    generator: (key) => (opts.withSession === false || key !== "chat" ? undefined : proc),
    tokenizers: new TokenizerFiles(new ModelCache(join(dir, "cache"))),
    simulatedTokenMs: 0,
  });
  // The node's token counter: what the child reports computing (the agent wires it the same way).
  proc.onGenStats = (n) => gens.counted(n);
  const start = (id: string, params: Partial<Extract<RouterToNode, { t: "generate" }>["params"]>, credit: number, tokenizerRef = tokRef) =>
    gens.start(
      {
        t: "generate",
        id,
        key: "chat",
        sha256: "c".repeat(64),
        prompt: "The river",
        params: { maxTokens: 64, temperature: 0.8, topK: 0, topP: 1, repetitionPenalty: 1, stop: [], seed: 1, ...params },
        tokenizer: tokenizerRef,
        credit,
      },
      (f) => frames.push(f),
    );
  const tokens = (id: string) => frames.filter((f): f is Extract<Frame, { t: "token" }> => f.t === "token" && f.id === id);
  const end = (id: string) => frames.find((f) => (f.t === "done" || f.t === "error") && f.id === id);
  return { gens, frames, start, tokens, end };
}

const settle = () => new Promise((r) => setTimeout(r, 50));

describe("the node's generation loop", () => {
  it("sends exactly the credit it was given, holds one token, and goes on when granted more", async () => {
    const h = harness();
    h.start("a", { maxTokens: 200 }, 3);
    await waitUntil("three tokens", 5_000, () => (h.tokens("a").length === 3 ? true : undefined));
    await settle();
    expect(h.tokens("a")).toHaveLength(3);
    expect(h.gens.active).toBe(1);
    // The fourth token is chosen and held: the loop computes nothing further while it waits.
    await waitUntil("the held token counted", 5_000, () => (h.gens.tokens === 4 ? true : undefined));
    await settle();
    expect(h.gens.tokens).toBe(4);
    h.gens.credit("a", 2);
    await waitUntil("five tokens", 5_000, () => (h.tokens("a").length === 5 ? true : undefined));
    await waitUntil("the next held token counted", 5_000, () => (h.gens.tokens === 6 ? true : undefined));
    await settle();
    expect(h.tokens("a")).toHaveLength(5);
    expect(h.gens.tokens).toBe(6);
    expect(h.gens.cancel("a")).toBe(true);
    await waitUntil("ended", 5_000, () => h.end("a"));
    expect(h.end("a")).toMatchObject({ t: "done", reason: "cancelled", tokens: 5, promptTokens: 9 });
    expect(h.gens.active).toBe(0);
    expect(h.gens.tokens).toBe(6);
    expect(h.gens.cancel("a")).toBe(false);
    expect(h.tokens("a").map((t) => t.i)).toEqual([0, 1, 2, 3, 4]);
  });

  it("streams the same text as the loop run whole, and says why it ended", async () => {
    const h = harness();
    const params = { maxTokens: 50, temperature: 0.9, topK: 5, seed: 42 };
    h.start("whole", params, 1024);
    await waitUntil("ended", 5_000, () => h.end("whole"));
    const expected = await generateText(session, tokenizer, "The river", params);
    expect(h.tokens("whole").map((t) => t.text).join("")).toBe(expected);
    expect(h.end("whole")).toMatchObject({ t: "done", reason: "length", tokens: 50, promptTokens: 9 });
    const stop = expected.slice(10, 12);
    h.start("stopped", { ...params, stop: [stop] }, 1024);
    await waitUntil("ended", 5_000, () => h.end("stopped"));
    expect(h.tokens("stopped").map((t) => t.text).join("")).toBe(expected.slice(0, expected.indexOf(stop)));
    expect(h.end("stopped")).toMatchObject({ reason: "stop" });
  });

  it("runs generations side by side, each with its own credit", async () => {
    const h = harness();
    h.start("x", { maxTokens: 30, seed: 1 }, 2);
    h.start("y", { maxTokens: 30, seed: 2 }, 1024);
    await waitUntil("y ended", 5_000, () => h.end("y"));
    expect(h.tokens("y")).toHaveLength(30);
    expect(h.tokens("x")).toHaveLength(2);
    h.gens.credit("x", 1024);
    await waitUntil("x ended", 5_000, () => h.end("x"));
    expect(h.tokens("x").map((t) => t.text).join("")).toBe(await generateText(session, tokenizer, "The river", { maxTokens: 30, temperature: 0.8, seed: 1 }));
  });

  it("says node_error when it does not hold the model or cannot fetch the tokenizer, inference_failed for a bad tokenizer", async () => {
    const none = harness({ withSession: false });
    none.start("n", {}, 10);
    await waitUntil("ended", 5_000, () => none.end("n"));
    expect(none.end("n")).toMatchObject({ t: "error", code: "node_error" });

    const h = harness();
    h.start("t", {}, 10, { sha256: "0".repeat(64), size: 10, url: "http://127.0.0.1:9/nothing-listens-here" });
    await waitUntil("ended", 10_000, () => h.end("t"));
    expect(h.end("t")).toMatchObject({ t: "error", code: "node_error" });

    const junk = "{not a tokenizer}";
    const sha = createHash("sha256").update(junk).digest("hex");
    const junkPath = new ModelCache(join(dir, "cache")).pathFor(sha, "json");
    await mkdir(dirname(junkPath), { recursive: true });
    await writeFile(junkPath, junk);
    h.start("j", {}, 10, { sha256: sha, size: junk.length, url: "http://127.0.0.1:9/unused" });
    await waitUntil("ended", 5_000, () => h.end("j"));
    expect(h.end("j")).toMatchObject({ t: "error", code: "inference_failed" });
    expect((h.end("j") as { message: string }).message).toMatch(/invalid tokenizer.json/);
  });

  it("cancels everything when the router connection goes", async () => {
    const h = harness();
    for (const id of ["p", "q", "r"]) h.start(id, { maxTokens: 500 }, 2);
    await waitUntil("all waiting", 5_000, () => (["p", "q", "r"].every((id) => h.tokens(id).length === 2) ? true : undefined));
    h.gens.cancelAll("router connection closed");
    await waitUntil("all ended", 5_000, () => (["p", "q", "r"].every((id) => h.end(id)) ? true : undefined));
    for (const id of ["p", "q", "r"]) expect(h.end(id)).toMatchObject({ reason: "cancelled", tokens: 2 });
    expect(h.gens.active).toBe(0);
  });
});

describe("stream frames", () => {
  const codec = createCodec();
  const roundTrip = (v: unknown) => codec.decode(codec.encode(v));
  const params = { maxTokens: 10, temperature: 0.5, topK: 0, topP: 1, repetitionPenalty: 1, stop: ["\n"], seed: 3 };
  const model = {
    key: "m@1",
    account: "acct-1",
    name: "m",
    version: 1,
    sha256: "a".repeat(64),
    size: 10,
    artifactUrl: "http://x/a",
    signature: { inputs: [], outputs: [] },
    tokenizer: { sha256: "b".repeat(64), size: 5, url: "http://x/t" },
  };

  it("carries generate, credit, cancel, progress, token, done and error, validated", () => {
    // The request travels as bytes under its grant; it is decoded (parseRegionGenerateRequest) only once the grant checks.
    const req = { requestId: "r", model, prompt: "hi", params, deadline: 1 };
    const gen = { t: "generate", sid: "g1", window: 64, req: createCodec().encode(req), grant: { "x-mesh-stamp": "1" } };
    expect(parseEdgeToRegion(roundTrip(gen))).toEqual({ ...gen, req: expect.any(Uint8Array) });
    expect(parseRegionGenerateRequest(createCodec().decode((parseEdgeToRegion(roundTrip(gen)) as { req: Uint8Array }).req))).toEqual(req);
    expect(parseEdgeToRegion(roundTrip({ t: "credit", sid: "g1", n: 5 }))).toEqual({ t: "credit", sid: "g1", n: 5 });
    expect(parseEdgeToRegion(roundTrip({ t: "cancel", sid: "g1" }))).toEqual({ t: "cancel", sid: "g1" });
    const progress = { t: "progress", sid: "g1", stage: "loading", bytes: 5, total: 10, node: "n1" };
    expect(parseRegionToEdge(roundTrip(progress))).toEqual(progress);
    expect(parseRegionToEdge(roundTrip({ t: "token", sid: "g1", i: 0, text: "a", id: 3 }))).toEqual({ t: "token", sid: "g1", i: 0, text: "a", id: 3 });
    const done = { t: "done", sid: "g1", reason: "stop", tokens: 3, promptTokens: 2, node: "n1", timing: { queueMs: 1, loadMs: 0, ttftMs: 2, genMs: 3, regionMs: 4 } };
    expect(parseRegionToEdge(roundTrip(done))).toEqual(done);
    expect(parseRegionToEdge(roundTrip({ t: "error", sid: "g1", code: "no_capacity", message: "full" }))).toMatchObject({ code: "no_capacity" });
    const nodeGen = { t: "generate", id: "1", key: "m@1", sha256: "a".repeat(64), prompt: "hi", params, tokenizer: model.tokenizer, credit: 8 };
    expect(parseRouterMessage(roundTrip(nodeGen))).toEqual(nodeGen);
    expect(parseRouterMessage(roundTrip({ t: "credit", id: "1", n: 2 }))).toEqual({ t: "credit", id: "1", n: 2 });
    expect(parseNodeMessage(roundTrip({ t: "token", id: "1", i: 4, text: "b", tokenId: 9 }))).toEqual({ t: "token", id: "1", i: 4, text: "b", tokenId: 9 });
    expect(parseNodeMessage(roundTrip({ t: "done", id: "1", reason: "length", tokens: 4, promptTokens: 2, genMs: 1.5 }))).toMatchObject({ reason: "length" });
    const beat = parseNodeMessage(roundTrip({ t: "heartbeat", inflight: 0, queued: 0, utilisation: 0, warm: [], gen: { active: 2, tokens: 99 }, mem: { rssMb: 80.5, heapUsedMb: 12 } }));
    expect(beat).toMatchObject({ gen: { active: 2, tokens: 99 }, mem: { rssMb: 80.5 } });
  });

  it("refuses frames out of range or of the wrong shape", () => {
    const bad = (p: Record<string, unknown>) => () => parseRouterMessage({ t: "generate", id: "1", key: "k", prompt: "hi", params: { ...params, ...p }, tokenizer: model.tokenizer, credit: 1 });
    expect(bad({ temperature: 9 })).toThrow(MessageError);
    expect(bad({ maxTokens: 100_000 })).toThrow(/maxTokens/);
    expect(bad({ stop: ["", "x"] })).toThrow(/stop/);
    expect(bad({ stop: Array(20).fill("x") })).toThrow(/stop/);
    expect(bad({ seed: -1 })).toThrow(/seed/);
    expect(() => parseEdgeToRegion({ t: "credit", sid: "g", n: 1_000_000 })).toThrow(/'n'/);
    expect(() => parseRegionGenerateRequest({ requestId: "r", model: { ...model, tokenizer: { sha256: "zz", size: 1, url: "u" } }, prompt: "x", params, deadline: 1 })).toThrow(/sha256/);
    expect(() => parseEdgeToRegion({ t: "generate", sid: "g", window: 10, req: { requestId: "r" }, grant: {} })).toThrow(/'req'/);
    expect(() => parseEdgeToRegion({ t: "generate", sid: "g", window: 10, req: new Uint8Array(1), grant: { a: 1 } })).toThrow(/'a'/);
    expect(() => parseRegionToEdge({ t: "progress", sid: "g", stage: "sleeping" })).toThrow(/stage/);
    expect(() => parseRegionToEdge({ t: "done", sid: "g", reason: "tired", tokens: 1, promptTokens: 1, node: "n", timing: {} })).toThrow(/reason/);
    expect(() => parseNodeMessage({ t: "token", id: "1", i: -1, text: "a", tokenId: 1 })).toThrow(/'i'/);
  });
});

describe("the edge's side", () => {
  it("parses generate requests with the KServe names, defaults and clear refusals", () => {
    expect(parseGenerateInput({ text_input: "hi" })).toEqual({ prompt: "hi", params: { maxTokens: 64, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] } });
    expect(parseGenerateInput({ id: "a1", text_input: "hi", parameters: { max_tokens: 5, temperature: 0, top_k: 3, seed: 7, stop: "\n" } })).toEqual({
      id: "a1",
      prompt: "hi",
      params: { maxTokens: 5, temperature: 0, topK: 3, topP: 1, repetitionPenalty: 1, seed: 7, stop: ["\n"] },
    });
    expect(() => parseGenerateInput({})).toThrow(/text_input/);
    expect(() => parseGenerateInput({ text_input: "x".repeat(40_000) })).toThrow(/longer than/);
    expect(() => parseGenerateInput({ text_input: "hi", parameters: { max_tokens: 1.5 } })).toThrow(/max_tokens/);
    expect(() => parseGenerateInput({ text_input: "hi", parameters: { temperature: "hot" } })).toThrow(/temperature/);
    expect(() => parseGenerateInput({ text_input: "hi", parameters: { best_of: 2 } })).toThrow(/unknown parameter 'best_of'/);
    expect(() => parseGenerateInput({ text_input: "hi", id: "has space" })).toThrow(/'id'/);
  });

  it("tells a decoder language model from other models (a KV-cache decoder's past_key_values inputs are the node's, not the caller's)", async () => {
    const sig = readOnnxSignature(new Uint8Array(await readFile(modelPath)));
    const chat = generativeSignature({ inputs: sig.inputs, outputs: sig.outputs });
    expect(chat.problem).toBeNull();
    expect(chat.vocab).toBe(tokenizer.vocabSize);
    expect(generativeSignature({ inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }], outputs: [{ name: "y", datatype: "FP32", shape: [-1, 3] }] }).problem).toMatch(/INT64/);
    expect(
      generativeSignature({
        inputs: [{ name: "input_ids", datatype: "INT64", shape: [1, -1] }, { name: "past_key_values.0", datatype: "FP32", shape: [1, -1] }],
        outputs: [{ name: "logits", datatype: "FP32", shape: [1, -1, 10] }],
      }).problem,
    ).toBeNull();
    expect(generativeSignature({ inputs: [{ name: "input_ids", datatype: "INT64", shape: [1, -1] }], outputs: [{ name: "logits", datatype: "INT64", shape: [1, -1, 10] }] }).problem).toMatch(/float logits/);
  });
});

/** What these tests use of edge/stream-client.ts's HttpRegionChannel. */
interface HttpChannel {
  register(sid: string, h: (f: RegionToEdge) => void): void;
  onClose(l: (reason: string) => void): void;
  send(frame: EdgeToRegion): void;
  close(): void;
}

describe("the edge's streamed HTTP channel", () => {
  const codec = createCodec();
  let HttpRegionChannel: new (region: string, secret: string, url: string, delayMs: number) => HttpChannel;
  beforeAll(async () => {
    // By path at run time: the root project does not type-check edge/ (workers types).
    const mod = (await import(/* @vite-ignore */ "../edge/stream-client.js" as string)) as { HttpRegionChannel: typeof HttpRegionChannel };
    HttpRegionChannel = mod.HttpRegionChannel;
  });
  const done: RegionToEdge = { t: "done", sid: "s1", reason: "length", tokens: 1, promptTokens: 3, node: "n1", timing: { queueMs: 0, loadMs: 0, ttftMs: 1, genMs: 1, regionMs: 1 } };
  afterEach(() => vi.unstubAllGlobals());

  /**
   * A channel whose POST is answered with `frames`, one per read, then the response's end; the
   * handler closes the channel (as the generation's pool does) once `closeOn` arrives. Says
   * whether the request was aborted and whether the edge read the response to its end.
   */
  async function run(frames: RegionToEdge[], closeOn: RegionToEdge["t"]) {
    let signal: AbortSignal | undefined;
    let endRead = false;
    const queue = frames.map((f) => frameBytes(codec.encode(f)));
    const body = new ReadableStream<Uint8Array>(
      {
        pull: (c) => {
          const next = queue.shift();
          if (next) return c.enqueue(next);
          endRead = true;
          c.close();
        },
      },
      { highWaterMark: 0 },
    );
    vi.stubGlobal("fetch", async (_url: string, init: RequestInit) => {
      signal = init.signal ?? undefined;
      return new Response(body, { status: 200 });
    });
    const ch = new HttpRegionChannel("us-west", "secret", "http://region.test", 0);
    const seen: string[] = [];
    ch.register("s1", (f) => {
      seen.push(f.t);
      if (f.t === closeOn) ch.close();
    });
    const closed = new Promise<void>((r) => ch.onClose(() => r()));
    ch.send({ t: "generate", sid: "s1", req: new Uint8Array([1]), grant: {}, window: 8 } as EdgeToRegion);
    await closed;
    return { seen, aborted: () => signal?.aborted ?? false, endRead: () => endRead };
  }

  it("reads the response's end after the region's last frame instead of aborting it (the connection stays usable)", async () => {
    const r = await run([{ t: "token", sid: "s1", i: 0, text: "a", id: 1 }, done], "done");
    expect(r.seen).toEqual(["token", "done"]);
    await waitUntil("the response read to its end", 5_000, () => (r.endRead() ? true : undefined), 5);
    expect(r.aborted()).toBe(false);
  });

  it("aborts the request when the channel closes before the region's last frame (a cancel)", async () => {
    const r = await run([{ t: "token", sid: "s1", i: 0, text: "a", id: 1 }, { t: "token", sid: "s1", i: 1, text: "b", id: 2 }, done], "token");
    expect(r.seen).toEqual(["token"]);
    expect(r.aborted()).toBe(true);
  });
});
