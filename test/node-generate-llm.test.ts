// Generations of a real KV-cache LLM (the tiny-gpt bundle: models/tiny-gpt/) through a real
// router and node: the bundle's files land beside the graph, the generation runs inside the
// model's session child (decode engine, HF tokenizer, chat template), and its tokens come back
// over the router's stream socket. Checked against the decode engine run in this process.
// Skipped, with a message, when models/tiny-gpt/ is missing.

import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import { conversationKey } from "../protocol/conversation-key.js";
import { GENERATE_GRANT_METHOD, type ChatMessage, type GenerateParams, type ModelRef, type RegionGenerateRequest } from "../protocol/messages.js";
import { signRequest } from "../protocol/signing.js";
import { ChildGenerations, type GenReply } from "../gpu-node/child-generations.js";
import { DecodeEngine, DecodeLoop } from "../gpu-node/decoder/index.js";
import { makeTextSide, type TextSide } from "../gpu-node/text-side.js";
import { harnessPids, RegionHarness, ROOT, waitUntil } from "./helpers/region-harness.js";
import { RegionStream, streamStats } from "./helpers/stream-client.js";

const BUNDLE = join(ROOT, "models", "tiny-gpt");
const FILES = ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"];
const present = existsSync(join(BUNDLE, "model.onnx")) && FILES.every((f) => existsSync(join(BUNDLE, f)));
if (!present) console.warn(`node-generate-llm: skipped, no tiny-gpt bundle at ${BUNDLE} (helper model's models/tiny-gpt/)`);

const codec = createCodec();
const greedy = (maxTokens: number): GenerateParams => ({ maxTokens, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] });

describe.skipIf(!present)("a KV-cache LLM bundle generating on a real node", () => {
  let h: RegionHarness;
  let model: ModelRef;
  let s: RegionStream;
  let session: ort.InferenceSession;
  let side: TextSide;
  let config: unknown;
  let genConfig: unknown;
  let n = 0;

  beforeAll(async () => {
    h = await RegionHarness.create();
    await h.startRouter();
    // Two session children: the generations must still all go to one of them (so they batch).
    await h.startNode("llm-1", { NODE_WORKERS_PER_MODEL: "2", HEARTBEAT_MS: "100" });
    model = await h.addBundle("tiny-gpt", 1, BUNDLE, "model.onnx", FILES);
    s = await RegionStream.open(h.routerUrl, await signRequest(h.secret, "GET", "/v1/streams"));
    const json = async (f: string) => JSON.parse(await readFile(join(BUNDLE, f), "utf8")) as unknown;
    [config, genConfig] = [await json("config.json"), await json("generation_config.json")];
    side = makeTextSide({ tokenizer: await json("tokenizer.json"), tokenizerConfig: await json("tokenizer_config.json"), config, generationConfig: genConfig });
    session = await ort.InferenceSession.create(join(BUNDLE, "model.onnx"), { executionProviders: ["cpu"] });
  }, 90_000);

  afterAll(async () => {
    s?.close();
    await session?.release();
    await h?.close();
  });

  /** Sends a generate under a fresh grant; `window` is the stream's credit. */
  async function start(input: { prompt: string } | { chat: ChatMessage[] }, params: GenerateParams, window = 64, account?: string): Promise<string> {
    const sid = `g${++n}`;
    const req: RegionGenerateRequest = {
      requestId: `llm-${sid}`,
      model: account ? { ...model, account } : model,
      prompt: "prompt" in input ? input.prompt : "",
      ...("chat" in input ? { chat: input.chat } : {}),
      params,
      deadline: Date.now() + 60_000,
    };
    const bytes = codec.encode(req);
    s.generate(sid, bytes, await signRequest(h.secret, GENERATE_GRANT_METHOD, "/v1/streams", bytes), window);
    return sid;
  }

  const tokensOf = (sid: string) => s.of(sid).filter((f) => f.t === "token");

  /** The same generation by the decode engine in this process: token ids, their text, prompt length. */
  async function alone(promptIds: number[], params: GenerateParams): Promise<{ ids: number[]; text: string }> {
    const engine = DecodeEngine.create(session, config, genConfig);
    const ids: number[] = [];
    const loop = new DecodeLoop(engine, (e) => {
      if (e.type === "token") ids.push(e.token);
      if (e.type === "error") throw new Error(e.message);
    });
    engine.add("ref", promptIds, { ...params, stopTokenIds: [...new Set([...engine.config.eosTokenIds, ...side.stopTokenIds])] });
    loop.kick();
    await loop.idle();
    return { ids, text: side.tokenizer.decode(ids, { skipSpecialTokens: true }) };
  }

  /** The node's token counter once it has settled (the same figure twice; and no generation active unless `busy`). */
  async function nodeTokens(busy = false): Promise<number> {
    let last = -1;
    return waitUntil("node settled", 15_000, async () => {
      const node = (await streamStats(h.routerUrl, h.secret)).nodes.find((x) => x.id === "llm-1");
      if (!node) return undefined;
      const settled = (busy ? node.active === 1 : node.active === 0) && node.tokens === last;
      last = node.tokens;
      return settled ? node.tokens : undefined;
    }, 250);
  }

  it("greedy: the node streams the tokens and text the engine gives in-process, and bills the prompt's tokens", async () => {
    const prompt = "The river ran past the old mill and";
    const params = greedy(40);
    const sid = await start({ prompt }, params);
    const end = await s.end(sid, 60_000);
    expect(end).toMatchObject({ t: "done" });
    const ids = side.encodePrompt(prompt);
    const ref = await alone(ids, params);
    const got = tokensOf(sid);
    expect(ref.ids.length).toBeGreaterThan(0);
    expect(got.map((t) => t.id)).toEqual(ref.ids);
    expect(got.map((t) => t.text).join("")).toBe(ref.text);
    expect(got.map((t) => t.i)).toEqual(ref.ids.map((_, i) => i));
    expect(end.tokens).toBe(ref.ids.length);
    expect(end.promptTokens).toBe(ids.length);
    expect(end.reason).toBe(ref.ids.length === 40 ? "length" : "stop");
  }, 90_000);

  it("a chat is rendered with the bundle's template on the node", async () => {
    const chat = [
      { role: "system", content: "You answer briefly." },
      { role: "user", content: "Where does the river go?" },
    ];
    const params = greedy(24);
    const sid = await start({ chat }, params);
    const end = await s.end(sid, 60_000);
    const ids = side.encodePrompt("", chat);
    expect(side.tokenizer.decode(ids)).toContain("<|im_start|>assistant\n");
    const ref = await alone(ids, params);
    expect(end).toMatchObject({ t: "done", promptTokens: ids.length, tokens: ref.ids.length });
    expect(tokensOf(sid).map((t) => t.id)).toEqual(ref.ids);
  }, 90_000);

  it("a follow-up chat turn reuses the first turn's KV cache kept on the node, with the tokens a fresh engine gives; another account reuses nothing", async () => {
    const first = [
      { role: "system", content: "You are a storyteller. ".repeat(12) + "Answer in a few words." },
      { role: "user", content: "Tell me about the river and the old mill." },
    ];
    const sid1 = await start({ chat: first }, greedy(30));
    const end1 = await s.end(sid1, 60_000);
    expect(end1).toMatchObject({ t: "done" });
    expect(end1.cachedTokens).toBeUndefined();
    const answer = tokensOf(sid1).map((t) => t.text).join("");
    const followUp = [...first, { role: "assistant", content: answer }, { role: "user", content: "And then?" }];
    const params = greedy(20);
    const sid2 = await start({ chat: followUp }, params);
    const end2 = await s.end(sid2, 60_000);
    const ids = side.encodePrompt("", followUp);
    const ref = await alone(ids, params);
    expect(end2).toMatchObject({ t: "done", promptTokens: ids.length });
    // At least the first turn's whole prompt came from the kept cache (its answer too, when it re-tokenizes the same).
    expect(end2.cachedTokens).toBeGreaterThanOrEqual(side.encodePrompt("", first).length);
    expect(end2.cachedTokens).toBeLessThan(ids.length);
    expect(tokensOf(sid2).map((t) => t.id)).toEqual(ref.ids);
    // The same follow-up from another account: nothing of the first account's cache is reused.
    const sid3 = await start({ chat: followUp }, params, 64, "another-account");
    const end3 = await s.end(sid3, 60_000);
    expect(end3).toMatchObject({ t: "done" });
    expect(end3.cachedTokens).toBeUndefined();
    expect(tokensOf(sid3).map((t) => t.id)).toEqual(ref.ids);
  }, 90_000);

  it("concurrent streams on one node share its decode batch and each gets its alone-text", async () => {
    const prompts = ["Once upon a time", "The king said to the people of the town that", "A"];
    const params = prompts.map((_, i) => greedy(30 + 5 * i));
    const sids = await Promise.all(prompts.map((prompt, i) => start({ prompt }, params[i]!)));
    const ends = await Promise.all(sids.map((sid) => s.end(sid, 90_000)));
    for (const [i, sid] of sids.entries()) {
      expect(ends[i]).toMatchObject({ t: "done" });
      const ref = await alone(side.encodePrompt(prompts[i]!), params[i]!);
      expect(ref.ids.length).toBeGreaterThan(0);
      expect(tokensOf(sid).map((t) => t.id)).toEqual(ref.ids);
      expect(tokensOf(sid).map((t) => t.text).join("")).toBe(ref.text);
    }
    // Whether they shared decode steps depends on when each frame reached the node (a loaded
    // machine can deliver one after another finished): the engine's own tests check the batch
    // runs; here, each stream's text is what it is alone whatever the interleaving.
  }, 120_000);

  it("a stream that is not read stops computing at its credit, and a cancel ends it in the child", async () => {
    const before = await nodeTokens();
    const WINDOW = 4;
    // Sampling (so an early eos is unlikely to end it first), far more tokens than the credit.
    const sid = await start({ prompt: "The river" }, { ...greedy(400), temperature: 1, seed: 7 }, WINDOW);
    await waitUntil("credit used", 30_000, () => (tokensOf(sid).length === WINDOW || s.of(sid).some((f) => f.t === "done") ? true : undefined));
    expect(s.of(sid).some((f) => f.t === "done")).toBe(false);
    // Without credit the node computes nothing more than it was granted (held text counts none).
    const atStall = await nodeTokens(true);
    expect(atStall - before).toBeGreaterThanOrEqual(WINDOW);
    expect(atStall - before).toBeLessThanOrEqual(WINDOW + 1);
    s.ws.send(codec.encode({ t: "cancel", sid }), { binary: true });
    const end = await s.end(sid, 30_000);
    expect(end).toMatchObject({ t: "done", reason: "cancelled", tokens: tokensOf(sid).length });
    const afterCancel = await nodeTokens();
    expect(afterCancel).toBe(atStall);
    // New work runs; the counter grows by exactly its tokens (the cancelled stream computes nothing more).
    const next = await start({ prompt: "Once upon a time" }, greedy(20));
    const nextEnd = await s.end(next, 60_000);
    expect(nextEnd.t).toBe("done");
    expect(await nodeTokens()).toBe(afterCancel + nextEnd.tokens);
  }, 120_000);

  it("a session child killed mid-generation ends its stream with a clear error, and the model serves again", async () => {
    const sid = await start({ prompt: "The river" }, { ...greedy(400), temperature: 1, seed: 11 }, 2);
    await waitUntil("stalled at its credit", 30_000, () => (tokensOf(sid).length === 2 ? true : undefined));
    // The model's session children (the agent marks them with the version they hold).
    const children: number[] = [];
    for (const pid of await harnessPids(h.id)) {
      const env = await readFile(`/proc/${pid}/environ`, "latin1").catch(() => "");
      if (env.includes("MESH_SESSION_SHA256=")) children.push(pid);
    }
    expect(children.length).toBeGreaterThan(0);
    for (const pid of children) process.kill(pid, "SIGKILL");
    const end = await s.end(sid, 30_000);
    expect(end).toMatchObject({ t: "error", code: "inference_failed" });
    expect(end.message).toMatch(/session stopped during the generation/);
    // The node replaces its children (or reloads the model): a new stream runs and is right.
    const again = await waitUntil("the model generates again", 60_000, async () => {
      const next = await start({ prompt: "Once upon a time" }, greedy(10));
      const e = await s.end(next, 60_000);
      return e.t === "done" ? next : undefined;
    }, 500);
    const ref = await alone(side.encodePrompt("Once upon a time"), greedy(10));
    expect(tokensOf(again).map((t) => t.id)).toEqual(ref.ids);
  }, 120_000);

  it("the child reports a kept conversation's key (an answer cut by a stop sequence too), and evicts kept caches before refusing a stream for memory", async () => {
    const perToken = DecodeEngine.create(session, config, genConfig).kvBytesPerToken;
    const replies: GenReply[] = [];
    const gens = new ChildGenerations(session, join(BUNDLE, "model.onnx"), (m) => replies.push(m), perToken * 260);
    const ended = (id: string) => replies.find((r) => (r.t === "gen_done" || r.t === "gen_failed") && r.id === id);
    const chat = [{ role: "user", content: "Tell me about the river and the old mill, and the king of the town." }];
    gens.handle({ t: "gen", id: "turn1", prompt: "", chat, params: greedy(20), credit: 1_000, account: "acct", key: "tiny@1" });
    await waitUntil("turn1 ended", 30_000, () => ended("turn1"));
    const answer = replies.filter((r) => r.t === "gen_token" && r.id === "turn1").map((r) => (r as { text: string }).text).join("");
    const key = await conversationKey("acct", "tiny@1", [...chat, { role: "assistant", content: answer }]);
    const stats = await waitUntil("the kept conversation reported", 10_000, () =>
      replies.find((r): r is Extract<GenReply, { t: "gen_stats" }> => r.t === "gen_stats" && !!r.conversations?.some((c) => c.key === key)),
    );
    expect(stats.kvBytes).toBeGreaterThan(0); // the kept cache counts as the child's KV memory
    // An answer cut by a text stop sequence is kept too, keyed by the text the client got.
    const stop = answer.slice(Math.floor(answer.length / 2), Math.floor(answer.length / 2) + 3);
    expect(answer.indexOf(stop)).toBeGreaterThan(0);
    gens.handle({ t: "gen", id: "cut", prompt: "", chat, params: { ...greedy(20), stop: [stop] }, credit: 1_000, account: "acct2", key: "tiny@1" });
    await waitUntil("cut ended", 30_000, () => ended("cut"));
    const cutText = replies.filter((r) => r.t === "gen_token" && r.id === "cut").map((r) => (r as { text: string }).text).join("");
    expect(cutText).toBe(answer.slice(0, answer.indexOf(stop)));
    const cutKey = await conversationKey("acct2", "tiny@1", [...chat, { role: "assistant", content: cutText }]);
    await waitUntil("the cut conversation reported", 10_000, () => (replies.some((r) => r.t === "gen_stats" && !!r.conversations?.some((c) => c.key === cutKey)) ? true : undefined));
    // A stream that needs nearly the whole budget: the kept cache gives way, the stream runs.
    gens.handle({ t: "gen", id: "big", prompt: "The river", params: greedy(240), credit: 1_000, account: "acct", key: "tiny@1" });
    await waitUntil("big ended", 60_000, () => ended("big"));
    expect(ended("big")).toMatchObject({ t: "gen_done" });
  }, 90_000);

  it("a stream whose KV cache would not fit the child's budget fails at once as busy, and one that fits runs", async () => {
    // The child's generations in this process (the same class the session child runs).
    const perToken = DecodeEngine.create(session, config, genConfig).kvBytesPerToken;
    const replies: GenReply[] = [];
    const gens = new ChildGenerations(session, join(BUNDLE, "model.onnx"), (m) => replies.push(m), perToken * 100);
    gens.handle({ t: "gen", id: "big", prompt: "The river", params: greedy(200), credit: 1_000 });
    gens.handle({ t: "gen", id: "small", prompt: "The river", params: greedy(20), credit: 1_000 });
    const ended = (id: string) => replies.find((r) => (r.t === "gen_done" || r.t === "gen_failed") && r.id === id);
    await waitUntil("both ended", 30_000, () => (ended("big") && ended("small") ? true : undefined));
    expect(ended("big")).toMatchObject({ t: "gen_failed", busy: true, known: true });
    expect((ended("big") as { message: string }).message).toMatch(/no memory left on this node for this generation's KV cache/);
    const ref = await alone(side.encodePrompt("The river"), greedy(20));
    expect(ended("small")).toMatchObject({ t: "gen_done", tokens: ref.ids.length });
    expect(replies.filter((r) => r.t === "gen_token" && r.id === "small").map((r) => (r as { tokenId: number }).tokenId)).toEqual(ref.ids);
    // With room for its cache, the same stream runs.
    const roomy = new ChildGenerations(session, join(BUNDLE, "model.onnx"), (m) => replies.push(m), perToken * 210);
    roomy.handle({ t: "gen", id: "big2", prompt: "The river", params: greedy(200), credit: 1_000 });
    await waitUntil("big2 ended", 60_000, () => ended("big2"));
    expect(ended("big2")).toMatchObject({ t: "gen_done" });
  }, 90_000);
});
