// Picks each stream's next token id from a row of logits, in the order Hugging Face applies its
// processors: repetition penalty over every id already in the context (prompt and generated),
// then temperature (0 = greedy: the largest score, the lowest id on a tie), top-k, top-p, and a
// draw from a seeded mulberry32 PRNG (one number per token), so the same seed, prompt and
// parameters give the same tokens whatever else shares the batch.

import { mulberry32 } from "../full-context-generator.js";
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

  // Top-k on the scores (the order is the weights' order); then only the ids left (k of them,
  // or every usable one) are weighed, trimmed to top-p and drawn from, in ascending id order.
  if (topK > 0 && topK < V) keepTopK(s, topK, -Infinity);
  const ids: number[] = [];
  for (let i = 0; i < V; i++) if (s[i]! > -Infinity) ids.push(i);
  const max = s[best]!;
  const w = new Float64Array(ids.length);
  for (let j = 0; j < ids.length; j++) {
    const x = s[ids[j]!]!;
    w[j] = max === Infinity ? (x === Infinity ? 1 : 0) : Math.exp((x - max) / temperature);
  }
  if (topP < 1) keepTopP(w, topP);

  let total = 0;
  for (let j = 0; j < w.length; j++) total += w[j]!;
  let u = rng() * total;
  let last = best;
  for (let j = 0; j < w.length; j++) {
    const x = w[j]!;
    if (x === 0) continue;
    last = ids[j]!;
    u -= x;
    if (u < 0) return last;
  }
  // Rounding can leave u a hair above zero: take the last id with any weight.
  return last;
}

/** Scratch space for the kept values (one engine runs on one thread). */
let scratch = new Float64Array(0);

/** Copies the values above `removed` into scratch; returns how many there are. */
function present(w: Float64Array, removed: number): number {
  if (scratch.length < w.length) scratch = new Float64Array(w.length);
  let n = 0;
  for (let i = 0; i < w.length; i++) if (w[i]! > removed) scratch[n++] = w[i]!;
  return n;
}

/**
 * Sets to `removed` every value below `cutoff`, and all but the first (lowest-id)
 * `keepAtCutoff` of those equal to it: the tie-break toward the lower id.
 */
function cut(w: Float64Array, cutoff: number, keepAtCutoff: number, removed: number): void {
  for (let i = 0; i < w.length; i++) {
    const x = w[i]!;
    if (x > cutoff) continue;
    if (x === cutoff && keepAtCutoff > 0) keepAtCutoff--;
    else w[i] = removed;
  }
}

/** The k-th largest (1-based) of a[0..n), by quickselect; reorders a. */
function kthLargest(a: Float64Array, n: number, k: number): number {
  let lo = 0;
  let hi = n - 1;
  const target = k - 1; // index in descending order
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1]!;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! > pivot) i++;
      while (a[j]! < pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target]!;
  }
  return a[target]!;
}

/**
 * Keeps the k largest values (ties broken toward the lower id), in O(vocab); the others become
 * `removed` (0 for weights, -Infinity for scores), as do values already at or below it.
 */
export function keepTopK(w: Float64Array, k: number, removed = 0): void {
  const n = present(w, removed);
  if (n <= k) return;
  const cutoff = kthLargest(scratch, n, k);
  let above = 0;
  for (let i = 0; i < w.length; i++) if (w[i]! > cutoff) above++;
  cut(w, cutoff, k - above, removed);
}

/**
 * Zeroes all but the nucleus: the heaviest weights, in the order (weight descending, id
 * ascending), up to the first at which their share of the total reaches p (at least one).
 * A native numeric sort of the positive weights finds the cut-off; after top-k they are few.
 */
export function keepTopP(w: Float64Array, p: number): void {
  const n = present(w, 0);
  let total = 0;
  for (let i = 0; i < n; i++) total += scratch[i]!;
  if (total === 0) return;
  const sorted = scratch.subarray(0, n).sort();
  let mass = 0;
  let at = -1;
  for (let i = n - 1; i >= 0; i--) {
    mass += sorted[i]!;
    if (mass >= p * total) {
      at = i;
      break;
    }
  }
  if (at < 0) return; // rounding: everything is needed
  const cutoff = sorted[at]!;
  let atCutoff = 0;
  for (let i = at; i < n && sorted[i] === cutoff; i++) atCutoff++;
  cut(w, cutoff, atCutoff, 0);
}
