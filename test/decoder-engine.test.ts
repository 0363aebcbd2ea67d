// The KV-cache decode engine (gpu-node/decoder/) on the real tiny-gpt bundle in onnxruntime-node:
// greedy with the cache equals greedy that re-runs the whole context, streams that share a batch
// (joining mid-way, leaving, pausing for credit, cancelled) get exactly the tokens they get alone,
// seeded sampling is reproducible, and a cancelled stream's cache is freed. The pure parts
// (sampling, padding and mask math) are checked on small hand-made inputs.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DecodeEngine, DecodeLoop, DecoderError, detectLayout, isKvDecoder, parseDecoderConfig, type DecoderSession, type EngineEvent, type EngineOptions, type SamplingParams } from "../gpu-node/decoder/index.js";
import { gather, KvBatch, paddedMask, type KvShape } from "../gpu-node/decoder/kv-cache.js";
import { chooseFromScores, keepTopK, keepTopP, resolveSampling, Sampler } from "../gpu-node/decoder/sampler.js";
import { mulberry32 } from "../gpu-node/full-context-generator.js";
import { fromHalfBits } from "../formats/tensor.js";

const MODEL_DIR = path.resolve(import.meta.dirname, "../models/tiny-gpt");
const haveModel = existsSync(path.join(MODEL_DIR, "model.onnx"));
if (!haveModel) console.warn(`decoder-engine: ${MODEL_DIR}/model.onnx is missing; the model tests are skipped (the tiny-gpt bundle comes from the model branch)`);

let session: ort.InferenceSession;
let configJson: string;
let generationJson: string | undefined;

/** A prompt of n ids drawn from the vocabulary, never an end-of-sequence id. */
function prompt(n: number, seed: number, vocab: number): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(rng() * (vocab - 3)));
}

function engine(opts: EngineOptions = {}): DecodeEngine {
  return DecodeEngine.create(session, configJson, generationJson, opts);
}

/** Steps until nothing can progress; tokens per stream, and every event in order. */
async function drain(e: DecodeEngine, events: EngineEvent[] = []): Promise<EngineEvent[]> {
  while (e.hasWork) events.push(...(await e.step()));
  return events;
}

function tokensOf(events: EngineEvent[], id: string): number[] {
  return events.filter((e): e is Extract<EngineEvent, { type: "token" }> => e.type === "token" && e.id === id).map((e) => e.token);
}

async function alone(ids: number[], params: SamplingParams, opts: EngineOptions = {}): Promise<number[]> {
  const e = engine(opts);
  e.add("alone", ids, params);
  return tokensOf(await drain(e), "alone");
}

/** Greedy without a cache: every step runs the model on the whole context (empty past). */
async function greedyNoCache(ids: number[], n: number, s: ort.InferenceSession = session): Promise<number[]> {
  const config = parseDecoderConfig(configJson);
  const kvType = detectLayout(s, config).kvType;
  const context = [...ids];
  const out: number[] = [];
  for (let step = 0; step < n; step++) {
    const T = context.length;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", BigInt64Array.from(context, BigInt), [1, T]),
      attention_mask: new ort.Tensor("int64", new BigInt64Array(T).fill(1n), [1, T]),
    };
    if (s.inputNames.includes("position_ids")) feeds["position_ids"] = new ort.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]);
    for (let l = 0; l < config.numLayers; l++) {
      for (const kv of ["key", "value"]) {
        feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor(kvType, kvType === "float16" ? new Uint16Array(0) : new Float32Array(0), [1, config.numKvHeads, 0, config.headDim]);
      }
    }
    const t = (await s.run(feeds, ["logits"]))["logits"]!;
    const logits = t.type === "float16" ? Array.from(t.data as Uint16Array, fromHalfBits) : (t.data as Float32Array);
    const V = config.vocabSize;
    let best = 0;
    for (let j = 1; j < V; j++) if (logits[(T - 1) * V + j]! > logits[(T - 1) * V + best]!) best = j;
    out.push(best);
    context.push(best);
  }
  return out;
}

const GREEDY = { temperature: 0, stopTokenIds: [] } as const;

describe.skipIf(!haveModel)("decode engine on tiny-gpt", () => {
  let vocab: number;
  beforeAll(async () => {
    session = await ort.InferenceSession.create(path.join(MODEL_DIR, "model.onnx"), { intraOpNumThreads: 1, interOpNumThreads: 1 });
    configJson = readFileSync(path.join(MODEL_DIR, "config.json"), "utf8");
    const gen = path.join(MODEL_DIR, "generation_config.json");
    generationJson = existsSync(gen) ? readFileSync(gen, "utf8") : undefined;
    vocab = parseDecoderConfig(configJson).vocabSize;
  });
  afterAll(async () => {
    await session?.release();
  });

  it("reads the layout from the session's names and config.json", () => {
    const config = parseDecoderConfig(configJson, generationJson);
    expect(isKvDecoder(session)).toBe(true);
    const layout = detectLayout(session, config);
    expect(layout.past).toHaveLength(config.numLayers);
    expect(layout.kvType).toBe("float32");
    expect(layout.positionIds).toBe("position_ids");
    // config.json saying more layers than the graph has is refused, not run.
    expect(() => detectLayout(session, { ...config, numLayers: config.numLayers + 1 })).toThrow(DecoderError);
    expect(() => detectLayout(session, { ...config, numLayers: config.numLayers - 1 })).toThrow(/more layers/);
  });

  it("greedy with the KV cache gives the tokens greedy without a cache gives, prompts short and longer than a prefill chunk", async () => {
    for (const [n, seed] of [[1, 1], [9, 2], [64, 3], [200, 4], [300, 5]] as const) {
      const ids = prompt(n, seed, vocab);
      const expected = await greedyNoCache(ids, 16);
      expect(await alone(ids, { ...GREEDY, maxTokens: 16 }), `prompt of ${n}`).toEqual(expected);
    }
    // Many small chunks: the cache grows across prefill runs exactly as in one.
    const ids = prompt(40, 6, vocab);
    expect(await alone(ids, { ...GREEDY, maxTokens: 12 }, { prefillChunk: 7 })).toEqual(await greedyNoCache(ids, 12));
  });

  it("streams joining and leaving a batch mid-way each get exactly the tokens they get alone", async () => {
    // Greedy and seeded sampling both: a sample follows the logits closely, so a cache mix-up shows.
    const sample = (seed: number) => ({ temperature: 1, seed, stopTokenIds: [] });
    const specs = [
      { id: "a", ids: prompt(12, 11, vocab), maxTokens: 30, joinAt: 0, p: GREEDY },
      { id: "b", ids: prompt(150, 12, vocab), maxTokens: 8, joinAt: 0, p: sample(1) },
      // c, f and g arrive together and are prefilled in one left-padded run (3 x 20 <= 64).
      { id: "c", ids: prompt(3, 13, vocab), maxTokens: 25, joinAt: 4, p: sample(2) },
      { id: "f", ids: prompt(20, 16, vocab), maxTokens: 9, joinAt: 4, p: sample(4) },
      { id: "g", ids: prompt(7, 17, vocab), maxTokens: 14, joinAt: 4, p: GREEDY },
      { id: "d", ids: prompt(60, 14, vocab), maxTokens: 12, joinAt: 9, p: GREEDY },
      { id: "e", ids: prompt(1, 15, vocab), maxTokens: 5, joinAt: 15, p: sample(3) },
    ];
    const expected = new Map<string, number[]>();
    for (const s of specs) expected.set(s.id, await alone(s.ids, { ...s.p, maxTokens: s.maxTokens }));

    // The session, recording the shape of each run's input_ids.
    const shapes: string[] = [];
    const recording: DecoderSession = {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: session.inputMetadata,
      run: ((feeds: Record<string, ort.Tensor>, fetches: string[]) => {
        shapes.push(feeds["input_ids"]!.dims.join("x"));
        return session.run(feeds, fetches);
      }) as DecoderSession["run"],
    };
    const e = DecodeEngine.create(recording, configJson, generationJson, { prefillChunk: 64 });
    const events: EngineEvent[] = [];
    let maxRows = 0;
    for (let step = 0; step < 200 && (e.hasWork || specs.some((s) => s.joinAt >= step)); step++) {
      for (const s of specs) if (s.joinAt === step) e.add(s.id, s.ids, { ...s.p, maxTokens: s.maxTokens });
      events.push(...(await e.step()));
      maxRows = Math.max(maxRows, e.streams);
    }
    expect(maxRows).toBeGreaterThanOrEqual(3);
    expect(shapes).toContain("3x20"); // c, f, g prefilled together
    expect(shapes.filter((x) => x === "1x64")).toHaveLength(2); // b's 150 tokens: 64 + 64 + 22
    expect(shapes).toContain("1x22");
    expect(shapes.some((x) => /^[4-9]x1$/.test(x))).toBe(true); // decode steps batched
    for (const s of specs) {
      expect(tokensOf(events, s.id), s.id).toEqual(expected.get(s.id));
      expect(events.filter((x) => x.type === "done" && x.id === s.id)).toEqual([{ type: "done", id: s.id, reason: "length", tokens: s.maxTokens, promptTokens: s.ids.length }]);
    }
    expect(e.streams).toBe(0);
    expect(e.kvBytes).toBe(0);
  });

  it("a long prompt is prefilled a chunk per step while the batch keeps decoding a token per step", async () => {
    const e = engine({ prefillChunk: 64 });
    e.add("running", prompt(8, 91, vocab), { ...GREEDY, maxTokens: 40 });
    await e.step();
    e.add("long", prompt(300, 92, vocab), { ...GREEDY, maxTokens: 3 });
    // 300 tokens = 5 chunks; "running" gets one token in each of those steps.
    for (let i = 0; i < 5; i++) {
      const events = await e.step();
      expect(tokensOf(events, "running"), `step ${i}`).toHaveLength(1);
      expect(tokensOf(events, "long")).toHaveLength(i < 4 ? 0 : 2); // its first token, then a decode step with the batch
    }
    e.cancel("running");
    e.cancel("long");
    expect(e.kvBytes).toBe(0);
  });

  it("a DecodeLoop runs the engine until every stream has ended or waits for credit", async () => {
    const e = engine();
    const events: EngineEvent[] = [];
    const loop = new DecodeLoop(e, (x) => events.push(x));
    e.add("one", prompt(5, 61, vocab), { ...GREEDY, maxTokens: 6 }, 2);
    loop.kick();
    e.add("two", prompt(7, 62, vocab), { ...GREEDY, maxTokens: 4 });
    loop.kick();
    await loop.idle();
    expect(tokensOf(events, "one")).toHaveLength(2);
    expect(events.at(-1)).toMatchObject({ type: "done", id: "two", tokens: 4 });
    e.grant("one", 10);
    loop.kick();
    await loop.idle();
    expect(events.at(-1)).toMatchObject({ type: "done", id: "one", tokens: 6 });
    expect(loop.running).toBe(false);
  });

  it("a stream out of credit keeps its cache, leaves the batch, and resumes on a grant with the same tokens", async () => {
    const ids = prompt(20, 21, vocab);
    const other = prompt(33, 22, vocab);
    const expected = await alone(ids, { ...GREEDY, maxTokens: 10 });
    const e = engine();
    e.add("paced", ids, { ...GREEDY, maxTokens: 10 }, 3);
    e.add("other", other, { ...GREEDY, maxTokens: 20 });
    const events = await drain(e);
    expect(tokensOf(events, "paced")).toEqual(expected.slice(0, 3));
    expect(e.streams).toBe(1);
    expect(e.hasWork).toBe(false);
    expect(e.kvBytes).toBe((20 + 3 - 1) * e.kvBytesPerToken);
    e.grant("paced", 100);
    await drain(e, events);
    expect(tokensOf(events, "paced")).toEqual(expected);
    expect(tokensOf(events, "other")).toEqual(await alone(other, { ...GREEDY, maxTokens: 20 }));
    expect(e.kvBytes).toBe(0);
  });

  it("sampling: the same seed gives the same tokens, alone or batched; top-k 1 is greedy; top-p and the repetition penalty change the output deterministically", async () => {
    const ids = prompt(24, 31, vocab);
    const sampled = { maxTokens: 24, temperature: 1.2, topK: 200, topP: 0.9, seed: 7, stopTokenIds: [] };
    const first = await alone(ids, sampled);
    expect(await alone(ids, sampled)).toEqual(first);
    expect(await alone(ids, { ...sampled, seed: 8 })).not.toEqual(first);

    const e = engine();
    e.add("s", ids, sampled);
    e.add("noise", prompt(50, 32, vocab), { ...sampled, seed: 99 });
    expect(tokensOf(await drain(e), "s")).toEqual(first);

    const greedy = await alone(ids, { ...GREEDY, maxTokens: 24 });
    expect(await alone(ids, { maxTokens: 24, temperature: 1, topK: 1, seed: 5, stopTokenIds: [] })).toEqual(greedy);

    const penalised = await alone(ids, { ...GREEDY, maxTokens: 24, repetitionPenalty: 1.8 });
    expect(penalised).not.toEqual(greedy);
    expect(await alone(ids, { ...GREEDY, maxTokens: 24, repetitionPenalty: 1.8 })).toEqual(penalised);
  });

  it("stops at a stop id without emitting it, at maxTokens, and at the model's context limit", async () => {
    const ids = prompt(10, 41, vocab);
    // Seeded sampling (an untrained model's greedy output can be one token over and over).
    const sampled = { maxTokens: 16, temperature: 1, seed: 3, stopTokenIds: [] };
    const free = await alone(ids, sampled);
    // The first token that did not come before: stopping on it ends the stream right there.
    const stopAt = free.findIndex((t, i) => i >= 1 && free.indexOf(t) === i);
    expect(stopAt, "the sample repeats one token; pick another seed").toBeGreaterThan(0);
    const e = engine();
    e.add("x", ids, { ...sampled, stopTokenIds: [free[stopAt]!] });
    e.add("zero", ids, { ...GREEDY, maxTokens: 0 });
    const events = await drain(e);
    expect(tokensOf(events, "x")).toEqual(free.slice(0, stopAt));
    expect(events.find((x) => x.type === "done" && x.id === "x")).toMatchObject({ reason: "stop", tokens: stopAt });
    expect(events.find((x) => x.type === "done" && x.id === "zero")).toMatchObject({ reason: "length", tokens: 0 });

    const max = parseDecoderConfig(configJson).maxPositions;
    const f = engine();
    f.add("long", prompt(max - 2, 42, vocab), { ...GREEDY, maxTokens: 50 });
    const done = (await drain(f)).find((x) => x.type === "done");
    // Positions max-2 .. max-1 are fed after the first token: three tokens in all.
    expect(done).toMatchObject({ reason: "length", tokens: 3 });
    expect(() => f.add("too-long", prompt(max + 1, 43, vocab), { maxTokens: 1 })).toThrow(DecoderError);
    expect(() => f.add("empty", [], { maxTokens: 1 })).toThrow(DecoderError);
    expect(() => f.add("bad-id", [vocab], { maxTokens: 1 })).toThrow(DecoderError);
  });

  it.skipIf(!existsSync(path.join(MODEL_DIR, "model_fp16.onnx")))("runs the float16 export: a half-size cache, the first token equal to full-context greedy's, batched equal to alone", async () => {
    const half = await ort.InferenceSession.create(path.join(MODEL_DIR, "model_fp16.onnx"), { intraOpNumThreads: 1, interOpNumThreads: 1 });
    try {
      const make = () => DecodeEngine.create(half, configJson, generationJson);
      expect(make().layout.kvType).toBe("float16");
      expect(make().kvBytesPerToken).toBe(engine().kvBytesPerToken / 2);
      // The export computes in float32 and rounds only what it outputs, so tokens after the first
      // (which attend to float16-rounded cached keys) may differ from a full-context run's by
      // rounding; the first comes from the same single run either way.
      const ids = prompt(100, 71, vocab);
      const e = make();
      e.add("h", ids, { ...GREEDY, maxTokens: 10 });
      const solo = tokensOf(await drain(e), "h");
      expect(solo).toHaveLength(10);
      expect(solo[0]).toBe((await greedyNoCache(ids, 1, half))[0]);
      const f = make();
      f.add("h", ids, { ...GREEDY, maxTokens: 10 });
      f.add("other", prompt(9, 72, vocab), { maxTokens: 30, temperature: 1, seed: 1, stopTokenIds: [] });
      expect(tokensOf(await drain(f), "h")).toEqual(solo);
      expect(f.kvBytes).toBe(0);
    } finally {
      await half.release();
    }
  });

  it("a failed run ends the streams in it with an error event and frees their cache; the engine carries on", async () => {
    let failNext = false;
    const flaky: DecoderSession = {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      inputMetadata: session.inputMetadata,
      run: ((feeds: Record<string, ort.Tensor>, fetches: string[]) => {
        if (failNext) {
          failNext = false;
          return Promise.reject(new Error("device lost"));
        }
        return session.run(feeds, fetches);
      }) as DecoderSession["run"],
    };
    const e = DecodeEngine.create(flaky, configJson, generationJson);
    e.add("a", prompt(5, 81, vocab), { ...GREEDY, maxTokens: 20 });
    e.add("b", prompt(6, 82, vocab), { ...GREEDY, maxTokens: 20 });
    const events = [...(await e.step()), ...(await e.step())];
    failNext = true;
    events.push(...(await e.step()));
    expect(events.filter((x) => x.type === "error")).toEqual([
      { type: "error", id: "a", message: "device lost" },
      { type: "error", id: "b", message: "device lost" },
    ]);
    expect(e.streams).toBe(0);
    expect(e.kvBytes).toBe(0);
    const c = prompt(7, 83, vocab);
    e.add("c", c, { ...GREEDY, maxTokens: 6 });
    expect(tokensOf(await drain(e), "c")).toEqual(await alone(c, { ...GREEDY, maxTokens: 6 }));
  });

  it("cancel frees the stream's cache at once, also during a step, and the others carry on unchanged", async () => {
    const a = prompt(30, 51, vocab);
    const expectedA = await alone(a, { ...GREEDY, maxTokens: 12 });
    const e = engine();
    e.add("a", a, { ...GREEDY, maxTokens: 12 });
    e.add("b", prompt(80, 52, vocab), { ...GREEDY, maxTokens: 100 });
    e.add("c", prompt(5, 53, vocab), { ...GREEDY, maxTokens: 100 });
    const events: EngineEvent[] = [];
    for (let i = 0; i < 4; i++) events.push(...(await e.step()));
    const withThree = e.kvBytes;
    expect(withThree).toBeGreaterThan(0);
    expect(e.cancel("b")).toBe(true);
    expect(e.kvBytes).toBeLessThan(withThree);
    // Cancelled while its step runs: its token from that step is dropped.
    const inFlight = e.step();
    e.cancel("c");
    events.push(...(await inFlight));
    await drain(e, events);
    expect(events.filter((x) => x.id === "b" || x.id === "c").length).toBe(tokensOf(events, "b").length + tokensOf(events, "c").length);
    expect(tokensOf(events, "c").length).toBeLessThan(6);
    expect(tokensOf(events, "a")).toEqual(expectedA);
    expect(e.cancel("b")).toBe(false);
    expect(e.streams).toBe(0);
    expect(e.kvBytes).toBe(0);
  });
});

describe("decode engine, pure parts", () => {
  it("masks and gathers left-padded rows into the last columns", () => {
    expect([...paddedMask([2, 0], 3)]).toEqual([0n, 0n, 1n, 1n, 1n, 1n]);
    const shape: KvShape = { layers: 1, heads: 2, headDim: 2, type: "float32" };
    // Row of 1 entry (values 1..4 over heads x dim) and a row of 2 entries.
    const one = new KvBatch(shape, [Float32Array.from([1, 2, 3, 4])], [Float32Array.from([5, 6, 7, 8])], 1, 1, [0]);
    const two = new KvBatch(shape, [Float32Array.from([1, 1, 2, 2, 3, 3, 4, 4])], [new Float32Array(8)], 1, 2, [0]);
    const b = gather(shape, [{ batch: one, row: 0 }, { batch: two, row: 0 }]);
    expect(b.pastLength).toBe(2);
    expect(b.pads).toEqual([1, 0]);
    // [B=2, H=2, P=2, D=2]: row 0 has zeros in its first column of each head.
    expect([...b.keys[0]!]).toEqual([0, 0, 1, 2, 0, 0, 3, 4, 1, 1, 2, 2, 3, 3, 4, 4]);
    expect([...b.stepMask()]).toEqual([0n, 1n, 1n, 1n, 1n, 1n]);
    expect(b.bytes).toBe(2 * 2 * 2 * 2 * 2 * 4);
    // Back out of the batch: the padding is dropped.
    const back = gather(shape, [{ batch: b, row: 0 }]);
    expect([...back.keys[0]!]).toEqual([1, 2, 3, 4]);
    expect([...back.values[0]!]).toEqual([5, 6, 7, 8]);
    const half = gather({ ...shape, type: "float16" }, [{ batch: new KvBatch({ ...shape, type: "float16" }, [Uint16Array.from([1, 2, 3, 4])], [Uint16Array.from([5, 6, 7, 8])], 1, 1, [0]), row: 0 }]);
    expect(half.keys[0]).toBeInstanceOf(Uint16Array);
  });

  it("greedy takes the largest score, the lowest id on a tie; top-k 1 and a tiny top-p are greedy", () => {
    const scores = [0.5, 2, 2, -1];
    const rng = mulberry32(1);
    expect(chooseFromScores(Float64Array.from(scores), 0, 0, 1, rng)).toBe(1);
    for (let i = 0; i < 20; i++) {
      expect(chooseFromScores(Float64Array.from([0.5, 3, 2, -1]), 1, 1, 1, rng)).toBe(1);
      expect(chooseFromScores(Float64Array.from([0.5, 3, 2, -1]), 1, 0, 0.01, rng)).toBe(1);
    }
    expect(() => chooseFromScores(Float64Array.from([-Infinity, -Infinity]), 1, 0, 1, rng)).toThrow(DecoderError);
  });

  it("top-k and top-p keep only the heaviest ids; sampling follows the softmax", () => {
    const rng = mulberry32(3);
    const counts = new Array<number>(4).fill(0);
    for (let i = 0; i < 4000; i++) counts[chooseFromScores(Float64Array.from([Math.log(1), Math.log(2), Math.log(3), Math.log(4)]), 1, 2, 1, rng)]!++;
    expect(counts[0]! + counts[1]!).toBe(0);
    expect(counts[3]! / counts[2]!).toBeGreaterThan(1.15);
    expect(counts[3]! / counts[2]!).toBeLessThan(1.5);
    // probabilities .1 .2 .3 .4: top-p 0.6 keeps 4 and 3 (0.7 >= 0.6), never 1 or 2.
    for (let i = 0; i < 200; i++) expect(chooseFromScores(Float64Array.from([Math.log(1), Math.log(2), Math.log(3), Math.log(4)]), 1, 0, 0.6, rng)).toBeGreaterThanOrEqual(2);
  });

  it("top-k and top-p keep what a full sort by (weight desc, id asc) keeps, ties included", () => {
    const rng = mulberry32(9);
    const kept = (w: Float64Array) => [...w.keys()].filter((i) => w[i]! > 0);
    for (let trial = 0; trial < 200; trial++) {
      const n = 1 + Math.floor(rng() * 300);
      // Few distinct values, so ties are common; some zeros.
      const w = Float64Array.from({ length: n }, () => Math.floor(rng() * 6) / 5);
      const order = [...w.keys()].filter((i) => w[i]! > 0).sort((a, b) => w[b]! - w[a]! || a - b);
      const k = 1 + Math.floor(rng() * 20);
      const byK = Float64Array.from(w);
      keepTopK(byK, k);
      expect(kept(byK)).toEqual(order.slice(0, k).sort((a, b) => a - b));
      const p = 0.05 + rng() * 0.9;
      const total = order.reduce((m, i) => m + w[i]!, 0);
      let mass = 0;
      let m = 0;
      while (m < order.length && mass < p * total) mass += w[order[m++]!]!;
      const byP = Float64Array.from(w);
      keepTopP(byP, p);
      expect(kept(byP)).toEqual(order.slice(0, Math.max(1, m)).sort((a, b) => a - b));
    }
  });

  it("the repetition penalty divides positive and multiplies negative scores of ids seen", () => {
    const s = new Sampler(resolveSampling({ maxTokens: 1, temperature: 0, repetitionPenalty: 4, stopTokenIds: [] }, []), 3);
    expect(s.next([3, 2, -1])).toBe(0);
    s.observe([0]);
    expect(s.next([3, 2, -1])).toBe(1); // 3 / 4 < 2
    s.observe([1]);
    expect(s.next([3, 2, -1])).toBe(0); // 0.75 > 0.5 > -1
    expect(() => resolveSampling({ maxTokens: 1, topP: 0 }, [])).toThrow(DecoderError);
    expect(() => resolveSampling({ maxTokens: -1 }, [])).toThrow(DecoderError);
    expect(resolveSampling({ maxTokens: 1 }, [0, 2]).stopTokenIds).toEqual(new Set([0, 2]));
  });

  it("reads GPT-2-style and Llama-style config names and generation_config's eos", () => {
    const c = parseDecoderConfig({ n_layer: 2, n_head: 4, n_embd: 64, vocab_size: 10, n_positions: 32, eos_token_id: 9 });
    expect(c).toMatchObject({ numLayers: 2, numKvHeads: 4, headDim: 16, maxPositions: 32, eosTokenIds: [9] });
    const d = parseDecoderConfig(JSON.stringify({ num_hidden_layers: 1, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 8, vocab_size: 10, max_position_embeddings: 16 }), { eos_token_id: [1, 2] });
    expect(d).toMatchObject({ numKvHeads: 2, headDim: 8, eosTokenIds: [1, 2] });
    expect(() => parseDecoderConfig({ vocab_size: 10 })).toThrow(DecoderError);
    expect(() => parseDecoderConfig("{not json")).toThrow(DecoderError);
  });
});
