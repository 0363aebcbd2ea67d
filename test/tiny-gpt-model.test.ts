// The committed tiny-gpt bundle (models/tiny-gpt/, built by scripts/tiny-gpt/build.py) against
// the parts that consume it: @huggingface/tokenizers must give the ids the Python trainer
// gave and round-trip held-out text; the chat template must render in @huggingface/jinja; the
// ONNX graph must have the KV-cache layout of the issue-13 contract and, run in
// onnxruntime-node, greedy decoding with the cache must pick the same tokens as re-running the
// whole context, alone or in a left-padded batch. The greedy loops here are deliberately
// minimal references; the real engine lives in gpu-node/decoder/.

import { readFileSync } from "node:fs";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import { float16Value } from "../scripts/onnx-writer.js";

const dir = path.resolve("models/tiny-gpt");
const readJson = (name: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(dir, name), "utf8"));
const config = readJson("config.json") as {
  vocab_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  head_dim: number;
  hidden_size: number;
  max_position_embeddings: number;
  eos_token_id: number;
};
const tokenizerConfig = readJson("tokenizer_config.json");
const tokenizer = new Tokenizer(readJson("tokenizer.json"), tokenizerConfig);
const L = config.num_hidden_layers;
const H = config.num_key_value_heads;
const D = config.head_dim;
const V = config.vocab_size;

/** A session and the float type of its past/present/logits. */
interface Runner {
  session: ort.InferenceSession;
  float: "float32" | "float16";
}
let fp32: Runner;
let fp16: Runner;
beforeAll(async () => {
  fp32 = { session: await ort.InferenceSession.create(path.join(dir, "model.onnx")), float: "float32" };
  fp16 = { session: await ort.InferenceSession.create(path.join(dir, "model_fp16.onnx")), float: "float16" };
});

const i64 = (rows: number[][]): ort.Tensor =>
  new ort.Tensor("int64", BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0]!.length]);

interface Cache {
  past: ort.Tensor[]; // 2L tensors [B, H, P, D]: key, value per layer
  mask: number[][]; // [B, P]
}

const emptyCache = (run: Runner, batch: number): Cache => ({
  past: Array.from({ length: 2 * L }, () =>
    run.float === "float32"
      ? new ort.Tensor("float32", new Float32Array(0), [batch, H, 0, D])
      : new ort.Tensor("float16", new Uint16Array(0), [batch, H, 0, D]),
  ),
  mask: Array.from({ length: batch }, () => []),
});

/** One model call: appends `ids` (same length for each row; `valid` 0 marks left padding) to the
 * cache; position ids are the cumulative mask minus one, clamped at 0, as Hugging Face does. */
async function step(run: Runner, cache: Cache, ids: number[][], valid: number[][]): Promise<{ logits: Float32Array; cache: Cache }> {
  const mask = cache.mask.map((row, b) => [...row, ...valid[b]!]);
  const T = ids[0]!.length;
  const positions = mask.map((row) => {
    let sum = 0;
    const cum = row.map((m) => (sum += m) - 1);
    return cum.slice(cum.length - T).map((p) => Math.max(p, 0));
  });
  const feeds: Record<string, ort.Tensor> = { input_ids: i64(ids), attention_mask: i64(mask), position_ids: i64(positions) };
  for (let i = 0; i < L; i++) {
    feeds[`past_key_values.${i}.key`] = cache.past[2 * i]!;
    feeds[`past_key_values.${i}.value`] = cache.past[2 * i + 1]!;
  }
  const out = await run.session.run(feeds);
  const past: ort.Tensor[] = [];
  for (let i = 0; i < L; i++) past.push(out[`present.${i}.key`]!, out[`present.${i}.value`]!);
  const raw = out.logits!.data as Float32Array | Uint16Array;
  const logits = raw instanceof Float32Array ? raw : Float32Array.from(raw, float16Value);
  return { logits, cache: { past, mask } };
}

const argmax = (logits: Float32Array, offset: number): number => {
  let best = offset;
  for (let i = offset; i < offset + V; i++) if (logits[i]! > logits[best]!) best = i;
  return best - offset;
};

/** Greedy with the KV cache: prefill with past = 0, then one token per call. Rows of a batch
 * are left-padded to a common length. */
async function greedyCached(prompts: number[][], n: number, run = fp32): Promise<number[][]> {
  const width = Math.max(...prompts.map((p) => p.length));
  const ids = prompts.map((p) => [...Array<number>(width - p.length).fill(0), ...p]);
  const valid = prompts.map((p) => [...Array<number>(width - p.length).fill(0), ...p.map(() => 1)]);
  let r = await step(run, emptyCache(run, prompts.length), ids, valid);
  const out: number[][] = prompts.map(() => []);
  for (let k = 0; k < n; k++) {
    const T = r.logits.length / prompts.length / V;
    const next = prompts.map((_, b) => argmax(r.logits, (b * T + T - 1) * V));
    next.forEach((t, b) => out[b]!.push(t));
    if (k + 1 < n) r = await step(run, r.cache, next.map((t) => [t]), next.map(() => [1]));
  }
  return out;
}

/** Greedy without a cache: every step re-runs the whole context from an empty past. */
async function greedyFull(prompt: number[], n: number, run = fp32): Promise<number[]> {
  const ids = [...prompt];
  for (let k = 0; k < n; k++) {
    const r = await step(run, emptyCache(run, 1), [ids], [ids.map(() => 1)]);
    ids.push(argmax(r.logits, (ids.length - 1) * V));
  }
  return ids.slice(prompt.length);
}

describe("tiny-gpt tokenizer", () => {
  it("gives the ids build.py gave for fixed strings, special tokens included", () => {
    for (const [text, ids] of KNOWN_IDS) expect(tokenizer.encode(text, { add_special_tokens: false }).ids, text).toEqual(ids);
  });

  it("round-trips the held-out chapters at over 3 characters a token", () => {
    const text = readFileSync("scripts/tiny-gpt/heldout.txt", "utf8");
    const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
    expect(tokenizer.decode(ids)).toBe(text);
    expect(text.length / ids.length).toBeGreaterThan(3);
    expect(Math.max(...ids)).toBeLessThan(V);
  });

  it("renders the ChatML chat template with a generation prompt", () => {
    const rendered = new Template(String(tokenizerConfig.chat_template)).render({
      messages: [
        { role: "user", content: "The LORD is my shepherd" },
        { role: "assistant", content: "I shall not want." },
        { role: "user", content: "And then?" },
      ],
      add_generation_prompt: true,
      bos_token: tokenizerConfig.bos_token,
      eos_token: tokenizerConfig.eos_token,
    });
    expect(rendered).toBe(
      "<|im_start|>user\nThe LORD is my shepherd<|im_end|>\n<|im_start|>assistant\nI shall not want.<|im_end|>\n" +
        "<|im_start|>user\nAnd then?<|im_end|>\n<|im_start|>assistant\n",
    );
    const ids = tokenizer.encode(rendered, { add_special_tokens: false }).ids;
    expect(ids.filter((t) => t === tokenizer.token_to_id("<|im_start|>")).length).toBe(4);
    expect(ids.filter((t) => t === tokenizer.token_to_id("<|im_end|>")).length).toBe(3);
  });
});

describe("tiny-gpt ONNX graph", () => {
  it.each(["float32", "float16"] as const)("has the contract's KV-cache inputs and outputs (%s)", (float) => {
    const session = (float === "float32" ? fp32 : fp16).session;
    const past = Array.from({ length: L }, (_, i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]).flat();
    const present = Array.from({ length: L }, (_, i) => [`present.${i}.key`, `present.${i}.value`]).flat();
    expect([...session.inputNames]).toEqual(["input_ids", "attention_mask", "position_ids", ...past]);
    expect([...session.outputNames]).toEqual(["logits", ...present]);
    const meta = Object.fromEntries([...session.inputMetadata, ...session.outputMetadata].map((m) => [m.name, m]));
    const shape = (name: string) => {
      const m = meta[name]!;
      return m.isTensor ? { type: m.type, shape: m.shape } : undefined;
    };
    expect(shape("input_ids")).toEqual({ type: "int64", shape: ["batch_size", "sequence_length"] });
    expect(shape("attention_mask")).toEqual({ type: "int64", shape: ["batch_size", "total_sequence_length"] });
    expect(shape("position_ids")).toEqual({ type: "int64", shape: ["batch_size", "sequence_length"] });
    expect(shape("past_key_values.0.key")).toEqual({ type: float, shape: ["batch_size", H, "past_sequence_length", D] });
    expect(shape("logits")).toEqual({ type: float, shape: ["batch_size", "sequence_length", V] });
    expect(shape(`present.${L - 1}.value`)).toEqual({ type: float, shape: ["batch_size", H, "total_sequence_length", D] });
    expect(config.hidden_size).toBe(H * D);
    expect(config.num_attention_heads).toBe(H);
  });

  it("prefills with an empty past and returns presents of the prompt's length", async () => {
    const prompt = tokenizer.encode("In the beginning God").ids;
    const r = await step(fp32, emptyCache(fp32, 1), [prompt], [prompt.map(() => 1)]);
    expect(r.logits.length).toBe(prompt.length * V);
    expect(r.cache.past[0]!.dims).toEqual([1, H, prompt.length, D]);
    expect([...r.logits].every(Number.isFinite)).toBe(true);
  });

  const prompts = [
    "In the beginning",
    "And Jesus said unto them,",
    "<|im_start|>user\nThe LORD is my shepherd<|im_end|>\n<|im_start|>assistant\n",
  ];

  it("greedy with the KV cache picks the same tokens as re-running the whole context", async () => {
    for (const text of prompts) {
      const prompt = tokenizer.encode(text, { add_special_tokens: false }).ids;
      expect(await greedyCached([prompt], 12), text).toEqual([await greedyFull(prompt, 12)]);
    }
  });

  it("a left-padded batch of two decodes each row as it decodes alone", async () => {
    const [short, long] = [prompts[0]!, prompts[2]!].map((t) => tokenizer.encode(t, { add_special_tokens: false }).ids);
    const alone = [(await greedyCached([short!], 10))[0], (await greedyCached([long!], 10))[0]];
    expect(await greedyCached([short!, long!], 10)).toEqual(alone);
  });

  it("the float16 variant, decoding through its float16 cache, stays close to float32", async () => {
    const prompt = tokenizer.encode(prompts[1]!, { add_special_tokens: false }).ids;
    const continuation = await greedyFull(prompt, 8);
    // Feed the float32 continuation through the float16 cache one token at a time and compare
    // each step's logits with float32 over the same context, relative to the logits' range.
    let r = await step(fp16, emptyCache(fp16, 1), [prompt], [prompt.map(() => 1)]);
    const context = [...prompt];
    let worst = 0;
    for (const token of continuation) {
      const full = await step(fp32, emptyCache(fp32, 1), [context], [context.map(() => 1)]);
      const want = full.logits.subarray((context.length - 1) * V);
      const got = r.logits.subarray(r.logits.length - V);
      const scale = Math.max(...want.map(Math.abs));
      for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(want[i]! - got[i]!) / scale);
      context.push(token);
      r = await step(fp16, r.cache, [[token]], [[1]]);
    }
    expect(worst).toBeLessThan(0.02);
    expect(r.cache.past[0]!.type).toBe("float16");
    expect(r.cache.past[0]!.dims).toEqual([1, H, context.length, D]);
  });
});

// Printed by build.py's encoder (and equal in @huggingface/tokenizers) for this tokenizer.json.
const KNOWN_IDS: [string, number[]][] = [
  ["In the beginning God created the heaven and the earth.", [1192, 261, 1776, 1240, 395, 284, 578, 286, 261, 743, 270, 261, 641, 49]],
  ["And Jesus said unto them, Verily I say unto you", [301, 691, 398, 328, 347, 47, 35, 89, 267, 1011, 307, 453, 328, 374]],
  ["<|im_start|>user\nThe LORD is my shepherd<|im_end|>\n<|im_start|>assistant\n", [1, 334, 13, 459, 353, 346, 386, 512, 2026, 103, 2, 13, 1, 336, 13]],
  // Outside the corpus's ASCII: digits, accents, CJK (byte tokens), runs of spaces, a special.
  ["Hello, world! 3:16 caf\u00e9 \u4e2d\u6587  spaces\n\n<|endoftext|>", [75, 592, 114, 47, 1176, 36, 35, 54, 61, 52, 57, 493, 105, 198, 172, 35, 231, 187, 176, 233, 153, 138, 35, 387, 611, 283, 13, 13, 0]],
];
