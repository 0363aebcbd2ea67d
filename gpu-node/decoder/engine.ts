// The decode engine: many generation streams over one KV-cache decoder session. A stream's prompt
// is prefilled at most `prefillChunk` tokens a run (short prompts that arrive together share one
// left-padded run), so a long prompt is spread over several step() calls instead of stalling
// everyone; then the stream joins the decode batch, where
// one run per step() advances every stream by one token (left-padded caches, a mask of 0 on the
// padding, each stream's own position ids). Streams leave the batch when they end, are cancelled,
// or run out of credit (they keep their cache and rejoin when granted more). It deals in token
// ids only: the caller tokenizes, detokenizes and applies text stop sequences.

import * as ort from "onnxruntime-node";
import { fromHalfBits } from "../../formats/tensor.js";
import { DecoderError, detectLayout, parseDecoderConfig, type DecoderConfig, type DecoderLayout, type DecoderSession } from "./config.js";
import { bytesPerToken, gather, headOf, KvBatch, paddedMask, type KvArray, type KvRowRef, type KvShape } from "./kv-cache.js";
import { resolveSampling, Sampler, type SamplingParams } from "./sampler.js";

export interface EngineOptions {
  /** Most streams in one decode run (default 64); the others wait, in arrival order. */
  maxBatch?: number;
  /** Prompt tokens per prefill run (default 128). */
  prefillChunk?: number;
  /**
   * Hand each finished stream's cache (prompt and generated ids, one-row copy) to the caller
   * on its `done` event, for prefix reuse (prefix-cache.ts). Off: the cache is simply freed.
   */
  keepDone?: boolean;
}

/** A cache a new stream starts from: the KV of its prompt's first `length` ids (a one-row batch of exactly that many). */
export interface KvPrefix {
  kv: KvBatch;
  length: number;
}

/** A finished stream's cache: the ids whose KV it holds (context less the last, un-run token) and that KV. */
export interface KeptCache {
  ids: number[];
  kv: KvBatch;
}

export type EngineEvent =
  | { type: "token"; id: string; token: number; index: number }
  | { type: "done"; id: string; reason: "stop" | "length"; tokens: number; promptTokens: number; kept?: KeptCache }
  | { type: "error"; id: string; message: string };

export const DEFAULT_MAX_BATCH = 64;
export const DEFAULT_PREFILL_CHUNK = 128;

interface Stream {
  id: string;
  promptTokens: number;
  /** Prompt and generated ids; the last one has no KV yet once prefill is over. */
  context: number[];
  /** Ids whose KV is in the cache. */
  cached: number;
  emitted: number;
  credit: number;
  sampler: Sampler;
  /**
   * Its cache while it is outside the decode batch (prefilling, paused, waiting): a row of the
   * batch its prefill ran in, or of its own one-row copy.
   */
  kv: KvRowRef | null;
  prefilled: boolean;
  gone: boolean;
}

export class DecodeEngine {
  readonly maxBatch: number;
  readonly prefillChunk: number;
  readonly kvBytesPerToken: number;
  readonly keepDone: boolean;
  /** Prefill time per prompt token (EWMA over prefill runs, ms); 0 before the first run. */
  prefillMsPerToken = 0;
  private readonly shape: KvShape;
  private readonly streamsById = new Map<string, Stream>();
  /** Arrival order: prefill and batch places are given in it. */
  private order: Stream[] = [];
  private batch: KvBatch | null = null;
  private batchRows: Stream[] = [];
  private stepping = false;

  static create(session: DecoderSession, configJson: unknown, generationConfigJson?: unknown, opts: EngineOptions = {}): DecodeEngine {
    const config = parseDecoderConfig(configJson, generationConfigJson);
    return new DecodeEngine(session, detectLayout(session, config), config, opts);
  }

  constructor(
    private readonly session: DecoderSession,
    readonly layout: DecoderLayout,
    readonly config: DecoderConfig,
    opts: EngineOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? DEFAULT_MAX_BATCH;
    this.prefillChunk = opts.prefillChunk ?? DEFAULT_PREFILL_CHUNK;
    this.keepDone = opts.keepDone ?? false;
    if (!Number.isSafeInteger(this.maxBatch) || this.maxBatch < 1) throw new DecoderError("maxBatch must be an integer >= 1");
    if (!Number.isSafeInteger(this.prefillChunk) || this.prefillChunk < 1) throw new DecoderError("prefillChunk must be an integer >= 1");
    this.shape = { layers: config.numLayers, heads: config.numKvHeads, headDim: config.headDim, type: layout.kvType };
    this.kvBytesPerToken = bytesPerToken(this.shape);
  }

  /**
   * Queues a stream; see the module header. credit: tokens it may emit before a grant().
   * prefix: the KV of the prompt's first ids, computed earlier (the caller vouches that they
   * are these ids); only the rest of the prompt is prefilled. At least one prompt id must be
   * left to run, since its logits give the first token.
   */
  add(id: string, promptIds: readonly number[], params: SamplingParams, credit = Infinity, prefix?: KvPrefix): void {
    if (this.streamsById.has(id)) throw new DecoderError(`a stream '${id}' is already running`);
    if (promptIds.length === 0) throw new DecoderError("the prompt has no tokens; the model needs at least one to continue from");
    if (promptIds.length > this.config.maxPositions) {
      throw new DecoderError(`the prompt has ${promptIds.length} tokens; the model's context is ${this.config.maxPositions}`);
    }
    for (const t of promptIds) {
      if (!Number.isSafeInteger(t) || t < 0 || t >= this.config.vocabSize) throw new DecoderError(`token id ${t} is outside the vocabulary (${this.config.vocabSize})`);
    }
    if (!(credit >= 0)) throw new DecoderError("credit must be >= 0");
    if (prefix && prefix.length > 0) this.checkPrefix(prefix, promptIds.length);
    const sampler = new Sampler(resolveSampling(params, this.config.eosTokenIds), this.config.vocabSize);
    sampler.observe(promptIds);
    const s: Stream = {
      id,
      promptTokens: promptIds.length,
      context: [...promptIds],
      cached: prefix?.length ?? 0,
      emitted: 0,
      credit,
      sampler,
      kv: prefix && prefix.length > 0 ? { batch: prefix.kv, row: 0 } : null,
      prefilled: false,
      gone: false,
    };
    this.streamsById.set(id, s);
    this.order.push(s);
  }

  grant(id: string, n: number): void {
    const s = this.streamsById.get(id);
    if (s && n > 0) s.credit += n;
  }

  /** Ends a stream now; no event follows. Its KV is freed at once, or at the end of a step in flight. */
  cancel(id: string): boolean {
    const s = this.streamsById.get(id);
    if (!s) return false;
    this.remove(s);
    if (!this.stepping) this.relayout();
    return true;
  }

  /**
   * Ends a stream now as cancel() does, but hands back its cache as a `done` would (keepDone on,
   * between steps): for a caller that ends a stream for its own reasons (a text stop sequence)
   * and still wants the cache kept.
   */
  stopAndKeep(id: string): KeptCache | undefined {
    const s = this.streamsById.get(id);
    if (!s) return undefined;
    const kept = this.keepDone && !this.stepping ? this.keptOf(s) : undefined;
    this.cancel(id);
    return kept;
  }

  get hasWork(): boolean {
    // A stream asking for 0 tokens needs no credit to be told it is done.
    return this.order.some((s) => s.credit > 0 || s.sampler.params.maxTokens === 0);
  }

  get streams(): number {
    return this.streamsById.size;
  }

  get kvBytes(): number {
    // Streams prefilled together share one batch until each is copied out: count it once.
    const held = new Set<KvBatch>();
    if (this.batch) held.add(this.batch);
    for (const s of this.order) if (s.kv) held.add(s.kv.batch);
    let n = 0;
    for (const b of held) n += b.bytes;
    return n;
  }

  /** One prefill chunk (if a stream waits for one), then one decode run over the batch. */
  async step(): Promise<EngineEvent[]> {
    if (this.stepping) throw new DecoderError("step() is already running");
    this.stepping = true;
    const events: EngineEvent[] = [];
    try {
      for (const s of this.order) {
        // maxTokens 0: nothing to compute.
        if (s.sampler.params.maxTokens === 0) this.finish(s, "length", events);
      }
      const group = this.prefillGroup();
      if (group.length > 0) await this.prefill(group, events);
      this.relayout();
      if (this.batchRows.length > 0) await this.decode(events);
    } finally {
      this.stepping = false;
      this.relayout();
    }
    return events;
  }

  private remove(s: Stream): void {
    s.gone = true;
    s.kv = null;
    this.streamsById.delete(s.id);
    this.order = this.order.filter((x) => x !== s);
  }

  private checkPrefix(p: KvPrefix, promptLength: number): void {
    const b = p.kv;
    const sh = b.shape;
    if (!Number.isSafeInteger(p.length) || p.length >= promptLength) throw new DecoderError(`a reused prefix of ${p.length} ids must leave at least one of the prompt's ${promptLength} to run`);
    if (b.rows !== 1 || b.pastLength !== p.length || b.pads[0] !== 0) throw new DecoderError("a reused prefix must be one unpadded row of exactly its length");
    if (sh.layers !== this.shape.layers || sh.heads !== this.shape.heads || sh.headDim !== this.shape.headDim || sh.type !== this.shape.type) {
      throw new DecoderError("a reused prefix has another model's cache shape");
    }
  }

  private finish(s: Stream, reason: "stop" | "length", events: EngineEvent[]): void {
    const kept = this.keepDone ? this.keptOf(s) : undefined;
    events.push({ type: "done", id: s.id, reason, tokens: s.emitted, promptTokens: s.promptTokens, ...(kept ? { kept } : {}) });
    this.remove(s);
  }

  /** A copy of a finishing stream's cache: its own row, or its row of the decode batch. */
  private keptOf(s: Stream): KeptCache | undefined {
    let ref = s.kv;
    if (!ref) {
      const row = this.batchRows.indexOf(s);
      if (row < 0 || !this.batch) return undefined;
      ref = { batch: this.batch, row };
    }
    const n = Math.min(s.cached, ref.batch.length(ref.row));
    if (n <= 0) return undefined;
    return { ids: s.context.slice(0, n), kv: headOf(this.shape, ref, n) };
  }

  private fail(streams: Stream[], err: unknown, events: EngineEvent[]): void {
    const message = err instanceof Error ? err.message : String(err);
    for (const s of streams) {
      if (s.gone) continue;
      events.push({ type: "error", id: s.id, message });
      this.remove(s);
    }
  }

  /**
   * Takes the sampled id: ends the stream on a stop id, else emits it and ends the stream at
   * maxTokens or the context limit.
   */
  private take(s: Stream, token: number, events: EngineEvent[]): void {
    const p = s.sampler.params;
    if (p.stopTokenIds.has(token)) return this.finish(s, "stop", events);
    s.context.push(token);
    s.sampler.observe([token]);
    events.push({ type: "token", id: s.id, token, index: s.emitted++ });
    s.credit--;
    // The next run would feed this token at position context.length - 1.
    if (s.emitted >= p.maxTokens || s.context.length > this.config.maxPositions) this.finish(s, "length", events);
  }

  private sampleAndTake(s: Stream, logits: ort.Tensor, row: number, events: EngineEvent[]): void {
    let token: number;
    try {
      token = s.sampler.next(logitsRow(logits, row, this.config.vocabSize));
    } catch (err) {
      return this.fail([s], err, events);
    }
    this.take(s, token, events);
  }

  private feeds(ids: BigInt64Array, rows: number, cols: number, mask: BigInt64Array, positions: BigInt64Array, past: KvBatch): Record<string, ort.Tensor> {
    const l = this.layout;
    const f: Record<string, ort.Tensor> = {
      [l.inputIds]: new ort.Tensor("int64", ids, [rows, cols]),
      [l.attentionMask]: new ort.Tensor("int64", mask, [rows, mask.length / rows]),
    };
    if (l.positionIds) f[l.positionIds] = new ort.Tensor("int64", positions, [rows, cols]);
    const dims = past.dims();
    for (let i = 0; i < l.past.length; i++) {
      f[l.past[i]!.key] = new ort.Tensor(l.kvType, past.keys[i]!, dims);
      f[l.past[i]!.value] = new ort.Tensor(l.kvType, past.values[i]!, dims);
    }
    return f;
  }

  private async run(feeds: Record<string, ort.Tensor>, rows: number, pads: readonly number[]): Promise<{ logits: ort.Tensor; kv: KvBatch }> {
    const l = this.layout;
    const fetches = [l.logits, ...l.present.flatMap((p) => [p.key, p.value])];
    const out = await this.session.run(feeds, fetches);
    const logits = out[l.logits];
    if (!logits) throw new DecoderError(`the model produced no '${l.logits}'`);
    const keys = [];
    const values = [];
    let total = -1;
    for (const p of l.present) {
      const k = out[p.key];
      const v = out[p.value];
      if (!k || !v) throw new DecoderError(`the model produced no '${p.key}' / '${p.value}'`);
      if (k.type !== l.kvType || v.type !== l.kvType) throw new DecoderError(`'${p.key}' has type ${k.type}; expected ${l.kvType}`);
      const d = k.dims;
      if (d.length !== 4 || d[0] !== rows || d[1] !== this.shape.heads || d[3] !== this.shape.headDim) {
        throw new DecoderError(`'${p.key}' has shape [${d.join(", ")}]; expected [${rows}, ${this.shape.heads}, past, ${this.shape.headDim}]`);
      }
      total = d[2]!;
      keys.push(kvArray(k));
      values.push(kvArray(v));
    }
    return { logits, kv: new KvBatch(this.shape, keys, values, rows, total, pads) };
  }

  /**
   * Who is prefilled next, in arrival order among streams with credit: the first one alone when
   * it is part-way through its prompt or its prompt is longer than a chunk (one chunk of it);
   * else it and the fresh streams after it whose whole prompts fit, left-padded, in one chunk's
   * tokens (rows x longest prompt <= prefillChunk), so many short prompts cost one run.
   */
  private prefillGroup(): Stream[] {
    const queue = this.order.filter((s) => !s.prefilled && s.credit > 0);
    const first = queue[0];
    if (!first) return [];
    if (first.cached > 0 || first.context.length > this.prefillChunk) return [first];
    const group = [first];
    let longest = first.context.length;
    for (const s of queue.slice(1)) {
      const l = Math.max(longest, s.context.length);
      if (s.cached > 0 || l * (group.length + 1) > this.prefillChunk || group.length >= this.maxBatch) break;
      group.push(s);
      longest = l;
    }
    return group;
  }

  /**
   * One prefill run: the next chunk of one stream's prompt after its cache, or the whole prompts
   * of several fresh streams, left-padded (mask 0 and position 0 on the padding). A stream whose
   * prompt is done samples its first token from its last column's logits.
   */
  private async prefill(group: Stream[], events: EngineEvent[]): Promise<void> {
    const n = group.length;
    const from = n === 1 ? group[0]!.cached : 0;
    const lengths = group.map((s) => Math.min(this.prefillChunk, s.context.length - from));
    const L = Math.max(...lengths);
    const pads = lengths.map((l) => L - l);
    const ids = new BigInt64Array(n * L);
    const positions = new BigInt64Array(n * L);
    group.forEach((s, r) => {
      for (let j = pads[r]!; j < L; j++) {
        ids[r * L + j] = BigInt(s.context[from + j - pads[r]!]!);
        positions[r * L + j] = BigInt(from + j - pads[r]!);
      }
    });
    const past = n === 1 && group[0]!.kv ? group[0]!.kv.batch : KvBatch.empty(this.shape, n);
    let result;
    const t0 = performance.now();
    try {
      result = await this.run(this.feeds(ids, n, L, paddedMask(pads, from + L), positions, past), n, pads);
    } catch (err) {
      return this.fail(group, err, events);
    }
    const perToken = (performance.now() - t0) / lengths.reduce((a, b) => a + b, 0);
    this.prefillMsPerToken = this.prefillMsPerToken === 0 ? perToken : 0.8 * this.prefillMsPerToken + 0.2 * perToken;
    group.forEach((s, r) => {
      if (s.gone) return; // cancelled during the run
      s.kv = { batch: result.kv, row: r };
      s.cached = from + lengths[r]!;
      if (s.cached < s.context.length) return;
      s.prefilled = true;
      this.sampleAndTake(s, result.logits, r * L + L - 1, events);
    });
  }

  /** One token for every stream in the batch. */
  private async decode(events: EngineEvent[]): Promise<void> {
    const rows = this.batchRows;
    const batch = this.batch!;
    const B = rows.length;
    const ids = BigInt64Array.from(rows, (s) => BigInt(s.context[s.context.length - 1]!));
    const positions = BigInt64Array.from(rows, (s) => BigInt(s.context.length - 1));
    let result;
    try {
      result = await this.run(this.feeds(ids, B, 1, batch.stepMask(), positions, batch), B, batch.pads);
    } catch (err) {
      this.batch = null;
      this.batchRows = [];
      return this.fail(rows, err, events);
    }
    this.batch = result.kv;
    for (let r = 0; r < B; r++) {
      const s = rows[r]!;
      if (s.gone) continue;
      s.cached++;
      this.sampleAndTake(s, result.logits, r, events);
    }
  }

  /**
   * Makes the batch hold exactly the streams that should decode next: prefilled, not gone, with
   * credit, the first maxBatch in arrival order. Leavers that stay (paused, or beyond maxBatch)
   * get their row copied out; joiners and stayers are gathered into a new batch. Nothing is
   * copied when the membership is unchanged.
   */
  private relayout(): void {
    const want = this.order.filter((s) => s.prefilled && s.credit > 0).slice(0, this.maxBatch);
    const oldRows = this.batchRows;
    if (want.length === oldRows.length && want.every((s, i) => oldRows[i] === s)) return;
    const old = this.batch;
    const oldRow = new Map(oldRows.map((s, i) => [s, i]));
    const wanted = new Set(want);
    for (const s of oldRows) {
      if (!s.gone && !wanted.has(s) && old) s.kv = { batch: gather(this.shape, [{ batch: old, row: oldRow.get(s)! }]), row: 0 };
    }
    const refs = want.map((s) => {
      const r = oldRow.get(s);
      return r !== undefined && old ? { batch: old, row: r } : s.kv!;
    });
    this.batch = want.length > 0 ? gather(this.shape, refs) : null;
    this.batchRows = want;
    for (const s of want) s.kv = null;
  }
}

/**
 * A present output's data as the cache keeps it: Float32Array, or float16 as Uint16Array bits
 * (onnxruntime gives a Float16Array where the platform has one; same bits, other view).
 */
function kvArray(t: ort.Tensor): KvArray {
  const d = t.data as ArrayBufferView & { length: number };
  if (d instanceof Float32Array || d instanceof Uint16Array) return d;
  return new Uint16Array(d.buffer, d.byteOffset, d.length);
}

/** Row `r` of logits [rows, seq, V] flattened (r counts rows of V), as float32. */
function logitsRow(t: ort.Tensor, r: number, V: number): Float32Array {
  const last = t.dims[t.dims.length - 1];
  if (last !== V) throw new DecoderError(`logits have ${last} columns; config.json says vocab_size ${V}`);
  if (t.type === "float32") return (t.data as Float32Array).subarray(r * V, (r + 1) * V);
  if (t.type === "float16") {
    const bits = t.data as unknown as ArrayLike<number>;
    const half = bits instanceof Uint16Array;
    const out = new Float32Array(V);
    for (let i = 0; i < V; i++) out[i] = half ? fromHalfBits(bits[r * V + i]!) : bits[r * V + i]!;
    return out;
  }
  throw new DecoderError(`logits have type ${t.type}; float32 or float16 expected`);
}
