// Token-by-token generation over an onnxruntime session for decoder-style language models:
// `input_ids` INT64 [1, T] in, `logits` [1, T, V] out (the last position's row is the next-token
// distribution). No KV cache: each step runs the model on the whole context window, which is
// kept to the last `maxContext` tokens so a long generation costs a bounded amount per step.
//
// The generator yields each token as soon as it is chosen, except where the text so far ends in
// the beginning of a stop sequence: those tokens are held until it is clear whether the stop
// sequence follows (then they are dropped with it) or not (then they are yielded). Text and
// stop sequences are token-text.ts's, shared with the KV-cache path in the session child.

import * as ort from "onnxruntime-node";
import { mulberry32 } from "../protocol/prng.js";
import { fromHalfBits } from "../formats/tensor.js";
import { IncrementalDetokenizer, StopWindow } from "./token-text.js";
import type { Tokenizer } from "./tokenizer.js";

export interface GenerateOptions {
  /** Most tokens to generate (default 64). Held-back and stop tokens count too. */
  maxTokens?: number;
  /** Softmax temperature; 0 picks the most likely token every time (default 1). */
  temperature?: number;
  /** Sample only among the k most likely tokens; 0 or absent: all of them. */
  topK?: number;
  /** Seed of the sampler's PRNG; the same seed, prompt and options give the same text. Default: random. */
  seed?: number;
  /** Stop as soon as the generated text contains one of these; the stop text is not yielded. */
  stop?: readonly string[];
  /** Stop when the model picks one of these ids (e.g. an end-of-sequence token); it is not yielded. */
  stopTokenIds?: readonly number[];
  /** Checked between tokens: an abort stops the generation before the next token is yielded. */
  signal?: AbortSignal;
  /** Tokens of context the model sees at each step, the most recent ones (default 256). */
  maxContext?: number;
  /** The prompt already tokenized (a rendered chat, say); `prompt` is then not encoded. */
  promptIds?: readonly number[];
}

export interface GeneratedToken {
  /** The token's text. The concatenation of every yielded token is the generated text. */
  token: string;
  id: number;
  /** 0, 1, 2 ... in the order yielded. */
  index: number;
}

/** What generate() needs of an onnxruntime InferenceSession. */
export type GenerateSession = Pick<ort.InferenceSession, "inputNames" | "outputNames" | "run">;

/** Why a generation ended by itself: a stop sequence or stop token, or maxTokens. */
export type GenerateFinish = "stop" | "length";

export class GenerateError extends Error {
  override name = "GenerateError";
}

export const DEFAULT_MAX_TOKENS = 64;
export const DEFAULT_MAX_CONTEXT = 256;

/** The seeded PRNG (protocol/prng.ts), exported here for the decoder and tests that import it from the token loop. */
export { mulberry32 };

export interface LanguageModelIo {
  /** The token id input. */
  inputIds: string;
  /** The logits output. */
  logits: string;
  /** Optional inputs generate() fills in itself (all ones / 0..T-1). */
  attentionMask: string | null;
  positionIds: string | null;
}

/**
 * Finds the input and output names: `input_ids` and `logits` when present, otherwise the only
 * input and the first output. `attention_mask` and `position_ids` are filled in when the model
 * has them; any other input (a KV cache, for instance) is refused.
 */
export function languageModelIo(session: Pick<ort.InferenceSession, "inputNames" | "outputNames">): LanguageModelIo {
  const inputs = [...session.inputNames];
  const attentionMask = inputs.includes("attention_mask") ? "attention_mask" : null;
  const positionIds = inputs.includes("position_ids") ? "position_ids" : null;
  const rest = inputs.filter((n) => n !== attentionMask && n !== positionIds);
  let inputIds: string;
  if (rest.includes("input_ids")) inputIds = "input_ids";
  else if (rest.length === 1) inputIds = rest[0]!;
  else throw new GenerateError(`cannot tell which input takes the token ids (inputs: ${inputs.join(", ") || "none"}); name it input_ids`);
  const others = rest.filter((n) => n !== inputIds);
  if (others.length > 0) {
    throw new GenerateError(
      `the model has inputs generate() cannot fill: ${others.join(", ")} (only input_ids, attention_mask and position_ids are supported; no KV cache)`,
    );
  }
  const outputs = [...session.outputNames];
  const logits = outputs.includes("logits") ? "logits" : outputs[0];
  if (logits === undefined) throw new GenerateError("the model has no outputs");
  return { inputIds, logits, attentionMask, positionIds };
}

interface Resolved {
  maxTokens: number;
  temperature: number;
  topK: number;
  seed: number;
  stop: string[];
  stopTokenIds: Set<number>;
  signal: AbortSignal | undefined;
  maxContext: number;
}

function resolveOptions(opts: GenerateOptions): Resolved {
  const int = (name: string, v: number | undefined, dflt: number, min: number): number => {
    if (v === undefined) return dflt;
    if (!Number.isSafeInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`);
    return v;
  };
  const temperature = opts.temperature ?? 1;
  if (!Number.isFinite(temperature) || temperature < 0) throw new RangeError(`temperature must be a finite number >= 0, got ${temperature}`);
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32);
  if (!Number.isFinite(seed)) throw new RangeError(`seed must be a finite number, got ${seed}`);
  const stop = [...(opts.stop ?? [])];
  if (stop.some((s) => typeof s !== "string" || s === "")) throw new RangeError("stop sequences must be non-empty strings");
  return {
    maxTokens: int("maxTokens", opts.maxTokens, DEFAULT_MAX_TOKENS, 0),
    temperature,
    topK: int("topK", opts.topK, 0, 0),
    seed,
    stop,
    stopTokenIds: new Set(opts.stopTokenIds ?? []),
    signal: opts.signal,
    maxContext: int("maxContext", opts.maxContext, DEFAULT_MAX_CONTEXT, 1),
  };
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("the generation was aborted", "AbortError");
}

/** The last position's logits as float64, whatever float type and rank ([1,T,V], [T,V], [1,V], [V]) the model gives. */
function lastRow(t: ort.Tensor, name: string): Float64Array {
  const dims = t.dims;
  const V = dims[dims.length - 1];
  if (V === undefined || V === 0) throw new GenerateError(`output '${name}' has shape [${dims.join(", ")}]; expected [1, T, V]`);
  if (dims.length === 3 && dims[0] !== 1) throw new GenerateError(`output '${name}' has batch ${dims[0]}; expected 1`);
  const offset = t.size - V;
  const row = new Float64Array(V);
  switch (t.type) {
    case "float32":
    case "float64": {
      const data = t.data as Float32Array | Float64Array;
      for (let i = 0; i < V; i++) row[i] = data[offset + i]!;
      break;
    }
    case "float16": {
      const data = t.data as unknown as ArrayLike<number>;
      // Uint16Array of half bits where the platform has no Float16Array.
      const bits = data instanceof Uint16Array;
      for (let i = 0; i < V; i++) row[i] = bits ? fromHalfBits(data[offset + i]!) : data[offset + i]!;
      break;
    }
    default:
      throw new GenerateError(`output '${name}' has type ${t.type}; logits must be float32, float64 or float16`);
  }
  return row;
}

/**
 * Chooses the next id from a row of logits. Ids whose logit is -Infinity or NaN, or that the
 * caller masks, are never chosen. Greedy (temperature 0) takes the largest logit, the lowest id
 * on a tie; sampling draws one uniform number per token from rng.
 */
export function chooseToken(logits: ArrayLike<number>, temperature: number, topK: number, rng: () => number, allowed?: (id: number) => boolean): number {
  const candidates: number[] = [];
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i]!;
    if (v === -Infinity || Number.isNaN(v) || (allowed && !allowed(i))) continue;
    candidates.push(i);
  }
  if (candidates.length === 0) throw new GenerateError("the model gave no token a usable logit");
  if (temperature === 0) {
    let best = candidates[0]!;
    for (const i of candidates) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  let pool = candidates;
  if (topK > 0 && topK < pool.length) {
    pool = [...pool].sort((a, b) => logits[b]! - logits[a]! || a - b).slice(0, topK).sort((a, b) => a - b);
  }
  let max = -Infinity;
  for (const i of pool) max = Math.max(max, logits[i]!);
  const weights = pool.map((i) => (max === Infinity ? (logits[i] === Infinity ? 1 : 0) : Math.exp((logits[i]! - max) / temperature)));
  let total = 0;
  for (const w of weights) total += w;
  let u = rng() * total;
  for (let k = 0; k < pool.length; k++) {
    u -= weights[k]!;
    if (u < 0) return pool[k]!;
  }
  // Rounding can leave u a hair above zero: take the last token with any weight.
  for (let k = pool.length - 1; k >= 0; k--) if (weights[k]! > 0) return pool[k]!;
  return pool[pool.length - 1]!;
}

/**
 * Generates up to maxTokens tokens after prompt, yielding each one as it is chosen. Stops early
 * at a stop sequence or stop token id, and throws the signal's reason (an AbortError by
 * default) when the signal is aborted, without yielding anything more. Returns why it ended
 * ("stop" or "length"), for callers that drive it with next().
 */
export async function* generate(
  session: GenerateSession,
  tokenizer: Tokenizer,
  prompt: string,
  opts: GenerateOptions = {},
): AsyncGenerator<GeneratedToken, GenerateFinish, undefined> {
  const o = resolveOptions(opts);
  const io = languageModelIo(session);
  const rng = mulberry32(o.seed);
  let context = opts.promptIds ? [...opts.promptIds] : tokenizer.encode(prompt);
  if (context.length === 0) throw new GenerateError("the prompt encodes to no tokens; the model needs at least one to continue from");
  const allowed = (id: number): boolean => tokenizer.idToToken(id) !== undefined;
  const detokenizer = new IncrementalDetokenizer((ids) => tokenizer.decode(ids));
  const window = new StopWindow(o.stop);
  let index = 0;
  let finish: GenerateFinish = "length";

  const checkAbort = (): void => {
    if (o.signal?.aborted) throw abortError(o.signal);
  };

  for (let step = 0; step < o.maxTokens; step++) {
    checkAbort();
    if (context.length > o.maxContext) context = context.slice(context.length - o.maxContext);
    const T = context.length;
    const feeds: Record<string, ort.Tensor> = {
      [io.inputIds]: new ort.Tensor("int64", BigInt64Array.from(context, (id) => BigInt(id)), [1, T]),
    };
    if (io.attentionMask) feeds[io.attentionMask] = new ort.Tensor("int64", new BigInt64Array(T).fill(1n), [1, T]);
    if (io.positionIds) feeds[io.positionIds] = new ort.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]);
    const result = await session.run(feeds, [io.logits]);
    const out = result[io.logits];
    if (!out) throw new GenerateError(`the model produced no output '${io.logits}'`);
    checkAbort();

    const id = chooseToken(lastRow(out, io.logits), o.temperature, o.topK, rng, allowed);
    if (o.stopTokenIds.has(id)) {
      finish = "stop";
      break;
    }
    context.push(id);
    // The token's text: what it adds to the decoded text (token-text.ts), held back while it may start a stop sequence.
    const pieces = window.push(id, detokenizer.push(id));
    for (const [k, p] of pieces.entries()) {
      // The consumer may abort while holding a token: stop before yielding the next one.
      if (k > 0) checkAbort();
      yield { token: p.text, id: p.id, index: index++ };
    }
    if (window.stopped) return "stop";
  }

  // No stop sequence followed: the held tokens are ordinary text after all.
  for (const p of window.finish()) {
    checkAbort();
    yield { token: p.text, id: p.id, index: index++ };
  }
  return finish;
}

/** The whole generated text, as the concatenation of what generate() yields with the same options. */
export async function generateText(session: GenerateSession, tokenizer: Tokenizer, prompt: string, opts: GenerateOptions = {}): Promise<string> {
  let text = "";
  for await (const t of generate(session, tokenizer, prompt, opts)) text += t.token;
  return text;
}
