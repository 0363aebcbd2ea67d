// Picks each stream's next token id from a row of logits, in the order Hugging Face applies its
// processors: repetition penalty over every id already in the context (prompt and generated),
// then temperature (0 = greedy: the largest score, the lowest id on a tie), top-k, top-p, and a
// draw from a seeded mulberry32 PRNG (one number per token), so the same seed, prompt and
// parameters give the same tokens whatever else shares the batch.

import { mulberry32 } from "../generate.js";
import { DecoderError } from "./config.js";

export interface SamplingParams {
  /** Tokens emitted at most; the stop token is neither emitted nor counted. */
  maxTokens: number;
  /** 0 = greedy. Default 1. */
  temperature?: number;
  /** 0 = off. */
  topK?: number;
  /** 1 = off; in (0, 1]. */
  topP?: number;
  /** 1 = off; > 0. Scores of ids already in the context: positive ones divided by it, negative ones multiplied. */
  repetitionPenalty?: number;
  /** PRNG seed; default random. */
  seed?: number;
  /** Picking one ends the stream ("stop"). Default: the model's eos ids. */
  stopTokenIds?: readonly number[];
}

export interface ResolvedSampling {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  seed: number;
  stopTokenIds: ReadonlySet<number>;
}

export function resolveSampling(p: SamplingParams, defaultStop: readonly number[]): ResolvedSampling {
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new DecoderError(what);
  };
  check(Number.isSafeInteger(p.maxTokens) && p.maxTokens >= 0, `maxTokens must be an integer >= 0, got ${p.maxTokens}`);
  const temperature = p.temperature ?? 1;
  check(Number.isFinite(temperature) && temperature >= 0, `temperature must be a finite number >= 0, got ${temperature}`);
  const topK = p.topK ?? 0;
  check(Number.isSafeInteger(topK) && topK >= 0, `topK must be an integer >= 0, got ${topK}`);
  const topP = p.topP ?? 1;
  check(Number.isFinite(topP) && topP > 0 && topP <= 1, `topP must be in (0, 1], got ${topP}`);
  const repetitionPenalty = p.repetitionPenalty ?? 1;
  check(Number.isFinite(repetitionPenalty) && repetitionPenalty > 0, `repetitionPenalty must be a finite number > 0, got ${repetitionPenalty}`);
  const seed = p.seed ?? Math.floor(Math.random() * 2 ** 32);
  check(Number.isFinite(seed), `seed must be a finite number, got ${seed}`);
  const stop = p.stopTokenIds ?? defaultStop;
  check(stop.every((id) => Number.isSafeInteger(id) && id >= 0), "stopTokenIds must be token ids");
  return { maxTokens: p.maxTokens, temperature, topK, topP, repetitionPenalty, seed, stopTokenIds: new Set(stop) };
}

/** One stream's sampler: its parameters, PRNG and the set of ids in its context. */
export class Sampler {
  private readonly rng: () => number;
  private readonly seen: Uint8Array;
  private readonly seenIds: number[] = [];
  private readonly scores: Float64Array;

  constructor(
    readonly params: ResolvedSampling,
    vocabSize: number,
  ) {
    this.rng = mulberry32(params.seed);
    this.seen = new Uint8Array(vocabSize);
    this.scores = new Float64Array(vocabSize);
  }

  /** Records ids now in the context (the prompt, then each chosen token), for the penalty. */
  observe(ids: Iterable<number>): void {
    if (this.params.repetitionPenalty === 1) return;
    for (const id of ids) {
      if (id < this.seen.length && this.seen[id] === 0) {
        this.seen[id] = 1;
        this.seenIds.push(id);
      }
    }
  }

  /** The next id from logits[offset .. offset + vocab). */
  next(logits: ArrayLike<number>, offset = 0): number {
    const p = this.params;
    const V = this.scores.length;
    const s = this.scores;
    for (let i = 0; i < V; i++) {
      const v = logits[offset + i]!;
      s[i] = Number.isNaN(v) ? -Infinity : v;
    }
    if (p.repetitionPenalty !== 1) {
      for (const id of this.seenIds) s[id] = s[id]! > 0 ? s[id]! / p.repetitionPenalty : s[id]! * p.repetitionPenalty;
    }
    return chooseFromScores(s, p.temperature, p.topK, p.topP, this.rng);
  }
}

/**
 * The choice itself, on penalised scores (modified in place). Exported for unit tests.
 * Sampling draws u = rng() * total and walks the kept ids in ascending order.
 */
export function chooseFromScores(s: Float64Array, temperature: number, topK: number, topP: number, rng: () => number): number {
  const V = s.length;
  let best = -1;
  for (let i = 0; i < V; i++) if (s[i]! > -Infinity && (best < 0 || s[i]! > s[best]!)) best = i;
  if (best < 0) throw new DecoderError("the model gave no token a usable logit");
  if (temperature === 0) return best;

  // Softmax weights relative to the best score; ids outside top-k / top-p get weight 0.
  const max = s[best]!;
  const w = s; // reuse the buffer: s is not needed after this
  if (max === Infinity) {
    for (let i = 0; i < V; i++) w[i] = s[i] === Infinity ? 1 : 0;
  } else {
    for (let i = 0; i < V; i++) w[i] = s[i] === -Infinity ? 0 : Math.exp((s[i]! - max) / temperature);
  }
  if (topK > 0 && topK < V) keepTopK(w, topK);
  if (topP < 1) keepTopP(w, topP);

  let total = 0;
  for (let i = 0; i < V; i++) total += w[i]!;
  let u = rng() * total;
  let last = best;
  for (let i = 0; i < V; i++) {
    const x = w[i]!;
    if (x === 0) continue;
    last = i;
    u -= x;
    if (u < 0) return i;
  }
  // Rounding can leave u a hair above zero: take the last id with any weight.
  return last;
}

/** Ids ordered by weight, heaviest first, the lower id first on a tie. */
function byWeight(w: Float64Array, ids: number[]): number[] {
  return ids.sort((a, b) => w[b]! - w[a]! || a - b);
}

/**
 * Zeroes all but the k heaviest weights (ties broken toward the lower id). Only ids above a
 * threshold are sorted; the threshold is lowered until at least k ids are above it, which
 * means the k heaviest are among them.
 */
function keepTopK(w: Float64Array, k: number): void {
  let max = 0;
  let nonzero = 0;
  for (let i = 0; i < w.length; i++) {
    if (w[i]! > 0) nonzero++;
    if (w[i]! > max) max = w[i]!;
  }
  if (nonzero <= k) return;
  let candidates: number[] = [];
  for (let threshold = max * 1e-2; ; threshold *= 1e-2) {
    candidates = [];
    for (let i = 0; i < w.length; i++) if (w[i]! > 0 && w[i]! >= threshold) candidates.push(i);
    if (candidates.length >= k || threshold < Number.MIN_VALUE) break;
  }
  const kept = new Uint8Array(w.length);
  for (const id of byWeight(w, candidates).slice(0, k)) kept[id] = 1;
  for (let i = 0; i < w.length; i++) if (!kept[i]) w[i] = 0;
}

/**
 * Zeroes all but the nucleus: the heaviest ids whose share of the total first reaches p (at
 * least one). Only ids above a threshold are sorted; the threshold is lowered until the ids
 * above it already hold share p, which means the nucleus lies among them.
 */
function keepTopP(w: Float64Array, p: number): void {
  let total = 0;
  let max = 0;
  for (let i = 0; i < w.length; i++) {
    total += w[i]!;
    if (w[i]! > max) max = w[i]!;
  }
  if (total === 0) return;
  let candidates: number[] = [];
  for (let threshold = max * 1e-3; ; threshold *= 1e-3) {
    candidates = [];
    let mass = 0;
    for (let i = 0; i < w.length; i++) {
      if (w[i]! > 0 && w[i]! >= threshold) {
        candidates.push(i);
        mass += w[i]!;
      }
    }
    if (mass >= p * total || threshold < Number.MIN_VALUE) break;
  }
  const kept = new Uint8Array(w.length);
  let mass = 0;
  for (const id of byWeight(w, candidates)) {
    kept[id] = 1;
    mass += w[id]!;
    if (mass >= p * total) break;
  }
  for (let i = 0; i < w.length; i++) if (!kept[i]) w[i] = 0;
}
