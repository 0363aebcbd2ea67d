// The generative runtime on a real model: demo-chat (a character bigram LM counted from the
// repository's corpus) built into a temp dir, run in onnxruntime-node, and checked against the
// table it was built from; the tokenizer against its tokenizer.json; the generation loop for
// determinism, sampling, streaming, limits, stop sequences and cancellation.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chooseToken, generate, GenerateError, generateText, languageModelIo, mulberry32, type GeneratedToken, type GenerateOptions, type GenerateSession } from "../gpu-node/full-context-generator.js";
import { loadTokenizer, TokenizerError, UnsupportedTokenizerError, type Tokenizer } from "../gpu-node/tokenizer.js";
import { readOnnxSignature } from "../formats/onnx-signature.js";
import { buildCharModel, CHAR_MODEL_FILE, CHAR_TOKENIZER_FILE, makeCharModel, readCorpus, UNK_ID, type CharModel } from "../scripts/make-char-model.js";

let dir: string;
let modelPath: string;
let tokenizerPath: string;
let vocabSize: number;
let session: ort.InferenceSession;
let tokenizer: Tokenizer;
let tokenizerJson: Record<string, unknown>;
let corpus: string;
let reference: CharModel;

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), "generate-"));
  ({ modelPath, tokenizerPath, vocabSize } = await makeCharModel(dir));
  session = await ort.InferenceSession.create(modelPath);
  tokenizerJson = JSON.parse(await readFile(tokenizerPath, "utf8")) as Record<string, unknown>;
  tokenizer = loadTokenizer(tokenizerJson);
  corpus = await readCorpus();
  reference = buildCharModel(corpus);
});

afterAll(async () => {
  await session?.release();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function collect(prompt: string, opts: GenerateOptions, s: GenerateSession = session): Promise<GeneratedToken[]> {
  const out: GeneratedToken[] = [];
  for await (const t of generate(s, tokenizer, prompt, opts)) out.push(t);
  return out;
}

/** Greedy decoding straight from the counted table, without onnxruntime. */
function referenceGreedy(prompt: string, n: number): string {
  const V = reference.vocab.length;
  const table = Float32Array.from(reference.logProbs); // what the ONNX initializer holds
  let last = tokenizer.encode(prompt).at(-1)!;
  let text = "";
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < V; j++) if (table[last * V + j]! > table[last * V + best]!) best = j;
    text += reference.vocab[best];
    last = best;
  }
  return text;
}

describe("demo-chat model", () => {
  it("is written under the expected names, deterministically", async () => {
    expect(path.basename(modelPath)).toBe(CHAR_MODEL_FILE);
    expect(CHAR_MODEL_FILE).toBe("demo-chat.v1.onnx");
    expect(path.basename(tokenizerPath)).toBe(CHAR_TOKENIZER_FILE);
    expect(CHAR_TOKENIZER_FILE).toBe("demo-chat.tokenizer.json");
    const again = await mkdtemp(path.join(tmpdir(), "generate-again-"));
    try {
      const second = await makeCharModel(again);
      expect(await readFile(second.modelPath)).toEqual(await readFile(modelPath));
      expect(await readFile(second.tokenizerPath, "utf8")).toBe(await readFile(tokenizerPath, "utf8"));
    } finally {
      await rm(again, { recursive: true, force: true });
    }
  });

  it("has the signature of an exported language model", async () => {
    const sig = readOnnxSignature(new Uint8Array(await readFile(modelPath)));
    expect(sig.inputs).toEqual([{ name: "input_ids", datatype: "INT64", shape: [1, -1] }]);
    expect(sig.outputs).toEqual([{ name: "logits", datatype: "FP32", shape: [1, -1, vocabSize] }]);
    expect(vocabSize).toBe(tokenizer.vocabSize);
    expect(vocabSize).toBe(new Set(Array.from(corpus)).size + 1); // the corpus's characters + <unk>
    expect(session.inputNames).toEqual(["input_ids"]);
    expect(session.outputNames).toEqual(["logits"]);
    expect(languageModelIo(session)).toEqual({ inputIds: "input_ids", logits: "logits", attentionMask: null, positionIds: null });
  });

  it("gives log P(next | current) for every position, as counted from the corpus", async () => {
    const ids = tokenizer.encode("The river.");
    const out = await session.run({ input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, ids.length]) });
    const logits = out.logits!;
    expect(logits.type).toBe("float32");
    expect(logits.dims).toEqual([1, ids.length, vocabSize]);
    const data = logits.data as Float32Array;
    const V = vocabSize;
    for (const [t, id] of ids.entries()) {
      const row = data.subarray(t * V, (t + 1) * V);
      expect(Array.from(row)).toEqual(Array.from(Float32Array.from(reference.logProbs.subarray(id * V, (id + 1) * V))));
      // A real distribution over the characters (unk gets none).
      let total = 0;
      for (let j = 0; j < V; j++) total += Math.exp(row[j]!);
      expect(total).toBeCloseTo(1, 4);
      expect(row[UNK_ID]!).toBeLessThan(-50);
    }
    // The corpus's most common follower of "t" is "h".
    const afterT = reference.logProbs.subarray(tokenizer.tokenToId("t")! * V, (tokenizer.tokenToId("t")! + 1) * V);
    expect(reference.vocab[afterT.indexOf(Math.max(...afterT))]).toBe("h");
  });

  it("ships its tokenizer as a character-level tokenizer.json", () => {
    const model = tokenizerJson.model as Record<string, unknown>;
    expect(model.type).toBe("BPE");
    expect(model.merges).toEqual([]);
    expect(model.unk_token).toBe("<unk>");
    const vocab = model.vocab as Record<string, number>;
    for (const ch of new Set(Array.from(corpus))) expect(vocab[ch]).toBeTypeOf("number");
    expect(vocab["<unk>"]).toBe(0);
    expect(tokenizerJson.added_tokens).toEqual([expect.objectContaining({ id: 0, content: "<unk>", special: true })]);
    expect(tokenizerJson.decoder).toEqual({ type: "Fuse" });
  });
});

describe("tokenizer", () => {
  it("round-trips the corpus, one id per character", () => {
    const ids = tokenizer.encode(corpus);
    expect(ids.length).toBe(Array.from(corpus).length);
    expect(ids).not.toContain(UNK_ID);
    expect(tokenizer.decode(ids)).toBe(corpus);
    expect(tokenizer.encode("The river")).toEqual(Array.from("The river", (c) => tokenizer.tokenToId(c)!));
    expect(tokenizer.idToToken(tokenizer.tokenToId("a")!)).toBe("a");
  });

  it("maps characters outside the vocabulary to <unk>", () => {
    const ids = tokenizer.encode("a€b😀");
    expect(ids).toEqual([tokenizer.tokenToId("a"), UNK_ID, tokenizer.tokenToId("b"), UNK_ID]); // one unk per code point
    expect(tokenizer.decode(ids)).toBe("a<unk>b<unk>");
    expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe("ab");
    expect(tokenizer.encode("x<unk>y")).toEqual([tokenizer.tokenToId("x"), UNK_ID, tokenizer.tokenToId("y")]);
    expect(() => tokenizer.decode([vocabSize + 5])).toThrow(/cannot decode id/);
  });

  it("refuses unknown characters when the tokenizer has no unk_token", () => {
    const json = structuredClone(tokenizerJson) as { model: Record<string, unknown>; added_tokens: unknown[] };
    json.model.unk_token = null;
    const strict = loadTokenizer(json);
    expect(strict.unkId).toBeNull();
    expect(strict.encode("ab")).toEqual(tokenizer.encode("ab"));
    expect(() => strict.encode("a€")).toThrow(TokenizerError);
    expect(() => strict.encode("a€")).toThrow(/"€".*no unk_token/);
  });

  it("accepts the JSON text as well as the parsed object", () => {
    const fromText = loadTokenizer(JSON.stringify(tokenizerJson));
    expect(fromText.encode("hello")).toEqual(tokenizer.encode("hello"));
    expect(() => loadTokenizer("{not json")).toThrow(/invalid tokenizer.json: not JSON/);
  });

  it("applies BPE merges by rank, and joins tokens with spaces without a decoder", () => {
    const bpe = loadTokenizer({
      model: { type: "BPE", vocab: { a: 0, b: 1, c: 2, ab: 3, abc: 4 }, merges: ["a b", ["ab", "c"]] },
      decoder: null,
    });
    expect(bpe.encode("abcab")).toEqual([4, 3]);
    expect(bpe.encode("cba")).toEqual([2, 1, 0]);
    expect(bpe.decode([4, 3])).toBe("abc ab");
  });

  it("says clearly when a tokenizer.json is of a form it does not support", () => {
    const wordPiece = { model: { type: "WordPiece", vocab: { "[UNK]": 0, a: 1 }, unk_token: "[UNK]" } };
    expect(() => loadTokenizer(wordPiece)).toThrow(UnsupportedTokenizerError);
    expect(() => loadTokenizer(wordPiece)).toThrow(/unsupported tokenizer.json: model.type "WordPiece".*supported: model.type "BPE"/);
    const byteLevel = { ...tokenizerJson, pre_tokenizer: { type: "ByteLevel", add_prefix_space: false } };
    expect(() => loadTokenizer(byteLevel)).toThrow(/unsupported tokenizer.json: pre_tokenizer "ByteLevel"/);
    const metaspace = { ...tokenizerJson, decoder: { type: "Metaspace" } };
    expect(() => loadTokenizer(metaspace)).toThrow(/decoder "Metaspace"/);
    const byteFallback = { ...tokenizerJson, model: { ...(tokenizerJson.model as object), byte_fallback: true } };
    expect(() => loadTokenizer(byteFallback)).toThrow(/byte_fallback/);
    expect(() => loadTokenizer([1, 2])).toThrow(/invalid tokenizer.json: the top level is not an object/);
    expect(() => loadTokenizer({ model: { type: "BPE", vocab: { a: "zero" } } })).toThrow(/model.vocab\["a"\] is not a non-negative integer id/);
    expect(() => loadTokenizer({ model: { type: "BPE", vocab: { a: 0 }, unk_token: "<unk>" } })).toThrow(/unk_token "<unk>" is not in the vocabulary/);
  });

  it("has no Node-only imports", async () => {
    const source = await readFile(new URL("../gpu-node/tokenizer.ts", import.meta.url), "utf8");
    expect(source).not.toMatch(/^import /m);
  });
});

describe("generate", () => {
  it("decodes greedily, deterministically, and as the counted table says", async () => {
    const opts = { temperature: 0, maxTokens: 40 };
    const a = await generateText(session, tokenizer, "The river", opts);
    const b = await generateText(session, tokenizer, "The river", { ...opts, seed: 999 }); // the seed does not matter
    expect(a).toBe(b);
    expect(a).toBe(referenceGreedy("The river", 40));
    expect(Array.from(a)).toHaveLength(40);
    for (const ch of a) expect(tokenizer.tokenToId(ch)).toBeGreaterThan(UNK_ID);
    expect(a).toContain("the"); // the corpus's favourite word
    expect(chooseToken([0.5, 2, 2, -1], 0, 0, mulberry32(1))).toBe(1); // lowest id on a tie
  });

  it("samples reproducibly with a seed, and differently with another", async () => {
    const opts = { temperature: 0.9, maxTokens: 80 };
    const a = await generateText(session, tokenizer, "The river", { ...opts, seed: 1 });
    const again = await generateText(session, tokenizer, "The river", { ...opts, seed: 1 });
    const other = await generateText(session, tokenizer, "The river", { ...opts, seed: 2 });
    expect(again).toBe(a);
    expect(other).not.toBe(a);
    expect(a).not.toBe(await generateText(session, tokenizer, "The river", { temperature: 0, maxTokens: 80 }));
    for (const text of [a, other]) {
      expect(Array.from(text)).toHaveLength(80);
      for (const ch of text) expect(tokenizer.tokenToId(ch)).toBeGreaterThan(UNK_ID);
    }
    // topK 1 is greedy whatever the temperature.
    expect(await generateText(session, tokenizer, "The river", { temperature: 1.5, topK: 1, seed: 3, maxTokens: 30 })).toBe(
      referenceGreedy("The river", 30),
    );
    // topK changes the draw but is just as reproducible.
    const k5 = await generateText(session, tokenizer, "The river", { temperature: 1, topK: 5, seed: 1, maxTokens: 80 });
    expect(await generateText(session, tokenizer, "The river", { temperature: 1, topK: 5, seed: 1, maxTokens: 80 })).toBe(k5);
  });

  it("streams token by token exactly what generateText returns", async () => {
    for (const opts of [{ temperature: 0.8, seed: 11, maxTokens: 60 }, { temperature: 0, maxTokens: 25 }]) {
      const tokens = await collect("In the morning", opts);
      expect(tokens.map((t) => t.index)).toEqual(tokens.map((_, i) => i));
      for (const t of tokens) expect(tokenizer.decode([t.id])).toBe(t.token);
      expect(tokens.map((t) => t.token).join("")).toBe(await generateText(session, tokenizer, "In the morning", opts));
    }
  });

  it("honours maxTokens", async () => {
    expect(await collect("The", { maxTokens: 0, seed: 1 })).toEqual([]);
    expect(await collect("The", { maxTokens: 1, seed: 1 })).toHaveLength(1);
    expect(await collect("The", { maxTokens: 7, seed: 1 })).toHaveLength(7);
    await expect(generate(session, tokenizer, "The", { maxTokens: -1 }).next()).rejects.toThrow(RangeError);
  });

  it("stops at a stop sequence without emitting it", async () => {
    const opts = { temperature: 0.8, seed: 5, maxTokens: 120 };
    const full = await generateText(session, tokenizer, "The river", opts);
    // Any 3 characters of the unstopped text: the stopped text is everything before their first occurrence.
    const stop = full.slice(30, 33);
    const expected = full.slice(0, full.indexOf(stop));
    const tokens = await collect("The river", { ...opts, stop: [stop] });
    const text = tokens.map((t) => t.token).join("");
    expect(text).toBe(expected);
    expect(text).not.toContain(stop);
    expect(await generateText(session, tokenizer, "The river", { ...opts, stop: ["\u0001never", stop] })).toBe(expected);
    // A stop sequence whose beginning shows up but whose end never does holds tokens back, then lets them go.
    expect(await generateText(session, tokenizer, "The river", { ...opts, stop: ["the\u0001", "e\u0002"] })).toBe(full);
    // A stop sequence in the prompt does not count.
    expect(await generateText(session, tokenizer, "The river", { ...opts, stop: ["river"] })).toBe(
      full.includes("river") ? full.slice(0, full.indexOf("river")) : full,
    );
  });

  it("stops at a stop token id without emitting it", async () => {
    const full = await generateText(session, tokenizer, "The", { temperature: 0.8, seed: 8, maxTokens: 60 });
    const id = tokenizer.tokenToId(full[10]!)!;
    const text = await generateText(session, tokenizer, "The", { temperature: 0.8, seed: 8, maxTokens: 60, stopTokenIds: [id] });
    expect(text).toBe(full.slice(0, full.indexOf(full[10]!)));
  });

  it("stops within one token of an abort", async () => {
    const controller = new AbortController();
    const got: GeneratedToken[] = [];
    const run = (async () => {
      for await (const t of generate(session, tokenizer, "The river", { temperature: 0.8, seed: 1, maxTokens: 100, signal: controller.signal })) {
        got.push(t);
        if (t.index === 4) controller.abort();
      }
    })();
    await expect(run).rejects.toMatchObject({ name: "AbortError" });
    expect(got).toHaveLength(5);

    // The signal's reason is what is thrown; an already-aborted signal yields nothing.
    const before = new AbortController();
    before.abort(new Error("client went away"));
    const none: GeneratedToken[] = [];
    await expect(
      (async () => {
        for await (const t of generate(session, tokenizer, "The", { signal: before.signal })) none.push(t);
      })(),
    ).rejects.toThrow("client went away");
    expect(none).toEqual([]);

    // An abort while onnxruntime is running a step: that step's token is not yielded.
    const mid = new AbortController();
    const aborting: GenerateSession = {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      run: (async (feeds: ort.InferenceSession.FeedsType, fetches: string[]) => {
        const out = await session.run(feeds, fetches);
        mid.abort();
        return out;
      }) as GenerateSession["run"],
    };
    const midTokens: GeneratedToken[] = [];
    await expect(
      (async () => {
        for await (const t of generate(aborting, tokenizer, "The", { signal: mid.signal })) midTokens.push(t);
      })(),
    ).rejects.toMatchObject({ name: "AbortError" });
    expect(midTokens).toEqual([]);
  });

  it("keeps the context window bounded", async () => {
    const lengths: number[] = [];
    const recording: GenerateSession = {
      inputNames: session.inputNames,
      outputNames: session.outputNames,
      run: ((feeds: ort.InferenceSession.FeedsType, fetches: string[]) => {
        lengths.push((feeds.input_ids as ort.Tensor).dims[1]!);
        return session.run(feeds, fetches);
      }) as GenerateSession["run"],
    };
    const prompt = corpus.slice(0, 1000);
    const opts = { temperature: 0.7, seed: 4, maxTokens: 50 };
    const long = await generateText(recording, tokenizer, prompt, { ...opts, maxContext: 16 });
    expect(lengths).toHaveLength(50);
    expect(Math.max(...lengths)).toBe(16);
    // A bigram model only looks at the last character, so the window changes nothing.
    expect(long).toBe(await generateText(session, tokenizer, prompt.at(-1)!, opts));
    lengths.length = 0;
    await generateText(recording, tokenizer, "ab", { ...opts, maxTokens: 300 }); // default window: 256
    expect(Math.max(...lengths)).toBe(256);
  });

  it("refuses what it cannot run", async () => {
    await expect(generateText(session, tokenizer, "", { maxTokens: 3 })).rejects.toThrow(GenerateError);
    const kv = { inputNames: ["input_ids", "past_key_values.0.key"], outputNames: ["logits"] };
    expect(() => languageModelIo(kv)).toThrow(/past_key_values.0.key.*no KV cache/);
    expect(languageModelIo({ inputNames: ["ids", "attention_mask"], outputNames: ["out", "logits"] })).toEqual({
      inputIds: "ids",
      logits: "logits",
      attentionMask: "attention_mask",
      positionIds: null,
    });
  });
});
