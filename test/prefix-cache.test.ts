// Prefix KV-cache reuse (gpu-node/decoder/prefix-cache.ts + the engine's `prefix` and `keepDone`)
// on the real tiny-gpt bundle: a follow-up whose prompt extends a finished generation's ids
// prefills only the new ids and gives exactly the greedy tokens a fresh engine gives; a prompt
// that diverges part-way reuses only the shared part; tenants never see each other's entries;
// eviction is least-recently-used and by bytes. The conversation keys the edge and node agree on
// are checked here too (pure).
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecodeEngine, DecoderError, PrefixCache, parseDecoderConfig, type DecoderSession, type EngineEvent, type KeptCache, type KvPrefix } from "../gpu-node/decoder/index.js";
import { KvBatch, headOf, type KvShape } from "../gpu-node/decoder/kv-cache.js";
import { conversationKey, followUpKey } from "../protocol/conversation-key.js";
import { mulberry32 } from "../protocol/prng.js";

const MODEL_DIR = path.resolve(import.meta.dirname, "../models/tiny-gpt");
const haveModel = existsSync(path.join(MODEL_DIR, "model.onnx"));
if (!haveModel) console.warn(`prefix-cache: ${MODEL_DIR}/model.onnx is missing; the model tests are skipped`);

const GREEDY = { temperature: 0, stopTokenIds: [] } as const;

function prompt(n: number, seed: number, vocab: number): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(rng() * (vocab - 3)));
}

describe.skipIf(!haveModel)("prefix reuse on tiny-gpt", () => {
  let session: ort.InferenceSession;
  let configJson: string;
  let vocab: number;
  /** input_ids columns the model ran, summed over rows: the prefill work done. */
  let ranTokens = 0;
  let counting: DecoderSession;

  beforeAll(async () => {
    session = await ort.InferenceSession.create(path.join(MODEL_DIR, "model.onnx"), { intraOpNumThreads: 1, interOpNumThreads: 1 });
    configJson = readFileSync(path.join(MODEL_DIR, "config.json"), "utf8");
    vocab = parseDecoderConfig(configJson).vocabSize;
    counting = {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: session.inputMetadata,
      outputMetadata: session.outputMetadata,
      run: ((feeds: Record<string, ort.Tensor>, fetches: string[]) => {
        ranTokens += feeds["input_ids"]!.dims[1]! * feeds["input_ids"]!.dims[0]!;
        return session.run(feeds, fetches);
      }) as DecoderSession["run"],
    };
  });
  afterAll(async () => {
    await session?.release();
  });

  const engine = (keepDone = true) => DecodeEngine.create(counting, configJson, undefined, { keepDone });

  async function generate(e: DecodeEngine, id: string, ids: number[], maxTokens: number, prefix?: KvPrefix): Promise<{ tokens: number[]; kept?: KeptCache; ran: number }> {
    const before = ranTokens;
    e.add(id, ids, { ...GREEDY, maxTokens }, Infinity, prefix);
    const events: EngineEvent[] = [];
    while (e.hasWork) events.push(...(await e.step()));
    const done = events.find((x): x is Extract<EngineEvent, { type: "done" }> => x.type === "done" && x.id === id);
    const tokens = events.filter((x): x is Extract<EngineEvent, { type: "token" }> => x.type === "token" && x.id === id).map((x) => x.token);
    return { tokens, ...(done?.kept ? { kept: done.kept } : {}), ran: ranTokens - before };
  }

  it("a follow-up that extends a finished generation prefills only its new ids and gives the same greedy tokens", async () => {
    const e = engine();
    const cache = new PrefixCache(shapeOf(e));
    const turn1 = prompt(300, 11, vocab);
    const first = await generate(e, "t1", turn1, 24);
    expect(first.kept).toBeDefined();
    // The kept ids are the prompt and every generated token whose KV was computed (all but the last).
    expect(first.kept!.ids).toEqual([...turn1, ...first.tokens.slice(0, -1)]);
    expect(first.kept!.kv.pastLength).toBe(first.kept!.ids.length);
    cache.put("acct-a", first.kept!);

    const followUp = [...turn1, ...first.tokens, ...prompt(40, 12, vocab)];
    const hit = cache.match("acct-a", followUp);
    expect(hit?.length).toBe(first.kept!.ids.length);
    const reused = await generate(e, "t2", followUp, 16, hit!);
    const fresh = await generate(engine(false), "t2-fresh", followUp, 16);
    expect(reused.tokens).toEqual(fresh.tokens);
    // Prefill ran only the ids after the reused prefix (decode steps run one id each after).
    expect(reused.ran - (reused.tokens.length - 1)).toBe(followUp.length - hit!.length);
    expect(fresh.ran - (fresh.tokens.length - 1)).toBe(followUp.length);
    expect(fresh.kept).toBeUndefined(); // keepDone off: nothing is copied out
  });

  it("a prompt that diverges part-way reuses only the shared ids, and the output still matches", async () => {
    const e = engine();
    const cache = new PrefixCache(shapeOf(e));
    const base = prompt(150, 21, vocab);
    const first = await generate(e, "a", base, 8);
    cache.put("t", first.kept!);
    const other = [...base.slice(0, 90), ...prompt(30, 22, vocab)];
    const hit = cache.match("t", other)!;
    expect(hit.length).toBe(90 + (other[90] === base[90] ? 1 : 0));
    const reused = await generate(e, "b", other, 12, hit);
    expect(reused.tokens).toEqual((await generate(engine(false), "b2", other, 12)).tokens);
    // The very same prompt again: everything but its last id is reused (its logits are needed).
    const again = cache.match("t", base)!;
    expect(again.length).toBe(base.length - 1);
    expect((await generate(e, "c", base, 8, again)).tokens).toEqual(first.tokens);
  });

  it("caches kept from a shared, left-padded decode batch (and one that stopped in its prefill) are each stream's own", async () => {
    const e = engine();
    const cache = new PrefixCache(shapeOf(e));
    const specs = [
      { id: "s1", ids: prompt(30, 31, vocab), n: 12 },
      { id: "s2", ids: prompt(90, 32, vocab), n: 5 },
      { id: "s3", ids: prompt(12, 33, vocab), n: 1 }, // done right after its prefill: its cache is the prompt's
    ];
    for (const sp of specs) e.add(sp.id, sp.ids, { ...GREEDY, maxTokens: sp.n });
    const events: EngineEvent[] = [];
    while (e.hasWork) events.push(...(await e.step()));
    for (const sp of specs) {
      const done = events.find((x): x is Extract<EngineEvent, { type: "done" }> => x.type === "done" && x.id === sp.id)!;
      const tokens = events.filter((x): x is Extract<EngineEvent, { type: "token" }> => x.type === "token" && x.id === sp.id).map((x) => x.token);
      expect(done.kept!.ids).toEqual([...sp.ids, ...tokens.slice(0, -1)]);
      cache.put(sp.id, done.kept!);
      const next = [...sp.ids, ...tokens, ...prompt(10, 40, vocab)];
      const hit = cache.match(sp.id, next)!;
      expect(hit.length).toBe(done.kept!.ids.length);
      expect((await generate(e, `${sp.id}-next`, next, 8, hit)).tokens).toEqual((await generate(engine(false), `${sp.id}-fresh`, next, 8)).tokens);
    }
  });

  it("a prefix that leaves nothing to run, or of another shape, is refused", () => {
    const e = engine();
    const shape = shapeOf(e);
    const kv = KvBatch.empty(shape);
    const ids = prompt(10, 1, vocab);
    const full = new KvBatch(shape, kv.keys.map(() => new Float32Array(shape.heads * 10 * shape.headDim)), kv.values.map(() => new Float32Array(shape.heads * 10 * shape.headDim)), 1, 10, [0]);
    expect(() => e.add("x", ids, { ...GREEDY, maxTokens: 1 }, Infinity, { kv: full, length: 10 })).toThrow(DecoderError);
    expect(() => e.add("y", [...ids, 5], { ...GREEDY, maxTokens: 1 }, Infinity, { kv: full, length: 9 })).toThrow(/exactly its length/);
  });
});

function shapeOf(e: DecodeEngine): KvShape {
  return { layers: e.config.numLayers, heads: e.config.numKvHeads, headDim: e.config.headDim, type: e.layout.kvType };
}

describe("prefix cache bookkeeping (fake caches)", () => {
  const shape: KvShape = { layers: 1, heads: 1, headDim: 2, type: "float32" };
  /** A cache whose entries are their position, so a copy can be checked. */
  const kept = (ids: number[]): KeptCache => {
    const data = Float32Array.from({ length: ids.length * 2 }, (_, i) => i);
    return { ids, kv: new KvBatch(shape, [data], [data.slice()], 1, ids.length, [0]) };
  };
  const seq = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

  it("matches only the asking tenant's entries", () => {
    const c = new PrefixCache(shape, { minReuse: 2 });
    c.put("a", kept(seq(0, 20)));
    expect(c.match("b", seq(0, 30))).toBeNull();
    expect(c.match("a", seq(0, 30))?.length).toBe(20);
    expect(c.hits).toBe(1);
    expect(c.lookups).toBe(2);
  });

  it("hands out a copy of the shared part, and never the whole prompt", () => {
    const c = new PrefixCache(shape, { minReuse: 2 });
    c.put("a", kept(seq(0, 20)));
    const m = c.match("a", [...seq(0, 5), 99, 100])!;
    expect(m.length).toBe(5);
    expect(m.kv.pastLength).toBe(5);
    expect(Array.from(m.kv.keys[0]!)).toEqual(seq(0, 10));
    expect(c.match("a", seq(0, 20))?.length).toBe(19);
    expect(c.match("a", [...seq(0, 1), 50, 51])).toBeNull(); // below minReuse
    expect(Array.from(headOf(shape, { batch: m.kv, row: 0 }, 2).values[0]!)).toEqual([0, 1, 2, 3]);
  });

  it("a longer turn of the same conversation replaces the shorter one; LRU goes first when shrinking", () => {
    const c = new PrefixCache(shape, { minReuse: 2 });
    c.put("a", kept(seq(0, 10)));
    c.put("a", kept(seq(0, 16))); // extends the first: replaces it
    expect(c.size).toBe(1);
    c.put("b", kept(seq(0, 10))); // another tenant's same ids: kept apart
    c.put("a", kept(seq(100, 10)));
    expect(c.size).toBe(3);
    expect(c.bytes).toBe((16 + 10 + 10) * 2 * 2 * 4);
    c.match("a", seq(0, 20)); // touches the 16-long one: now the most recent
    c.shrinkTo(c.bytes - 1); // one must go: b's, the least recently used
    expect(c.match("b", seq(0, 20))).toBeNull();
    expect(c.size).toBe(2);
    c.shrinkTo(0);
    expect(c.size).toBe(0);
    expect(c.bytes).toBe(0);
  });

  it("keeps at most maxEntries and lists conversation keys most recent first", () => {
    const c = new PrefixCache(shape, { maxEntries: 2, minReuse: 2 });
    const e1 = c.put("a", kept(seq(0, 4)));
    e1.keys = [{ key: "k1", tokens: 4 }];
    const e2 = c.put("a", kept(seq(50, 4)));
    e2.keys = [{ key: "k2", tokens: 4 }];
    c.match("a", seq(0, 6));
    expect(c.conversations(10).map((x) => x.key)).toEqual(["k1", "k2"]);
    c.put("a", kept(seq(80, 4)));
    expect(c.size).toBe(2);
    expect(c.conversations(10)).toEqual([{ key: "k1", tokens: 4 }]);
  });
});

describe("conversation keys", () => {
  const chat = [
    { role: "system", content: "be brief" },
    { role: "user", content: "hi" },
  ];
  it("a follow-up names the key of the conversation its previous turn ended with, per account and model", async () => {
    const after = [...chat, { role: "assistant", content: "hello!" }];
    const k = await conversationKey("acct", "m@1", after);
    expect(k).toMatch(/^[0-9a-f]{32}$/);
    expect(await followUpKey("acct", "m@1", [...after, { role: "user", content: "more" }])).toBe(k);
    expect(await followUpKey("other", "m@1", [...after, { role: "user", content: "more" }])).not.toBe(k);
    expect(await followUpKey("acct", "m@2", [...after, { role: "user", content: "more" }])).not.toBe(k);
    // A first turn continues nothing.
    expect(await followUpKey("acct", "m@1", chat)).toBeUndefined();
    expect(await followUpKey("acct", "m@1", undefined)).toBeUndefined();
    // Role and content boundaries are part of the key.
    expect(await conversationKey("a", "m", [{ role: "user", content: "ab" }])).not.toBe(await conversationKey("a", "m", [{ role: "userab", content: "" }]));
  });
});
