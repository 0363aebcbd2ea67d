// Generations inside a session child (gpu-node/session-child.ts), next to the model they run:
// the agent only forwards the router's frames here and the replies back (session-process.ts).
//
// Two paths, chosen by the graph's inputs:
//  - a KV-cache decoder (past_key_values.* inputs): every generation of this child joins one
//    DecodeEngine (gpu-node/decoder/), so concurrent streams share each batched decode step;
//    the bundle's config.json / generation_config.json beside the graph describe it;
//  - a plain language model (input_ids -> logits, demo-chat): generate.ts's loop, one per
//    stream, on this child's session (no IPC per step).
// Text is made here too: the prompt (or a chat, through the bundle's template) is tokenized with
// the bundle's tokenizer.json or the uploaded one the agent fetched, each token's text comes from
// token-text.ts (never half a UTF-8 character; stop sequences held back), eos ids stop.
//
// Memory: a KV stream is admitted only if its cache at full length (prompt + maxTokens, within the
// model's context) fits, with the others', in the KV budget the agent gives (the model's memory
// bound less what the load took); otherwise it fails at once as `busy` (the router may place it
// elsewhere) rather than growing the child past its bound, which would end every stream in it.
//
// Prefix reuse (conversation affinity): the engine hands back each finished KV stream's cache
// (an end by a stop sequence included),
// which is kept in a PrefixCache under the calling account; a later prompt of the same account
// that starts with those ids (the conversation's next turn) prefills only the rest. Kept caches
// count against the same KV budget and are evicted (least recently used) before a stream is
// refused for memory. A chat turn's entry is also named by its conversation key (the chat plus
// the answer sent), a plain prompt's by the prefix keys of its text (the prompt plus the
// completion sent; protocol/conversation-key.ts), which the node reports so routers can send
// the next turn, or a prompt that continues the text, here.
//
// Credit: a token frame goes out only against the router's credit. The engine is granted
// credit so that it computes no more than the router allowed, plus the tokens held back (their
// frames are not sent yet), so a stream whose reader stops reading stops computing.

import { readFile } from "node:fs/promises";
import { dirname } from "node:path";
import type * as ort from "onnxruntime-node";
import { conversationKey, heldTextKeys } from "../protocol/conversation-key.js";
import type { ChatMessage, FinishReason, GenerateParams } from "../protocol/messages.js";
import { DecodeEngine, DecodeLoop, DecoderError, isKvDecoder, PrefixCache, type EngineEvent } from "./decoder/index.js";
import { generate, GenerateError, type GenerateFinish } from "./full-context-generator.js";
import { loadBundleTextSide, makeTextSide, type TextSide } from "./text-side.js";
import { IncrementalDetokenizer, StopWindow, type TextPiece } from "./token-text.js";
import { TokenizerError } from "./tokenizer.js";

/** Agent -> child. */
export type GenRequest =
  | {
      t: "gen";
      id: string;
      prompt: string;
      chat?: ChatMessage[];
      params: GenerateParams;
      /** An uploaded tokenizer.json the agent fetched (sha-checked); absent: the bundle's own. */
      tokenizer?: { sha256: string; path: string };
      credit: number;
      /** The calling account and the version's key: a kept cache is reused only by the same account (absent: nothing is kept). */
      account?: string;
      key?: string;
      /** Local mode only: extra time per token, to simulate a bigger model (plain path). */
      simulatedTokenMs?: number;
    }
  | { t: "gen_credit"; id: string; n: number }
  | { t: "gen_cancel"; id: string };

/** Child -> agent. `known` failures say what is wrong with the model or request; the rest may name files. */
export type GenReply =
  | { t: "gen_token"; id: string; i: number; text: string; tokenId: number }
  /** cachedTokens: prompt tokens taken from a kept cache instead of prefilled (KV path). */
  | { t: "gen_done"; id: string; reason: FinishReason; tokens: number; promptTokens: number; genMs: number; cachedTokens?: number }
  | { t: "gen_failed"; id: string; message: string; known: boolean; busy?: boolean }
  /**
   * Tokens computed since the child started, and KV cache bytes held now (kept caches included).
   * conversations: the affinity keys of kept caches, most recently used first, with the
   * prefill time each saves a follow-up (its tokens at the measured prefill ms/token).
   */
  | { t: "gen_stats"; tokens: number; kvBytes: number; conversations?: { key: string; savedMs: number }[] };

const STATS_EVERY_MS = 50;
const MAX_UPLOADED_TOKENIZERS = 16;
/** Affinity keys a child reports at most (the heartbeat carries them to the router); a kept text has up to HELD_TEXT_KEYS. */
export const MAX_REPORTED_CONVERSATIONS = 64;
/** Kept caches' bytes at most when the child has no KV budget (local runs, tests). */
const UNBOUNDED_KEEP_BYTES = 256 * 2 ** 20;

interface Stream {
  id: string;
  started: number;
  promptTokens: number;
  /** Router credit not yet used by a sent frame. */
  credit: number;
  sent: number;
  /** Frames waiting for credit. */
  queue: TextPiece[];
  /** How it ends once the queue is out; null while running. */
  ending: FinishReason | null;
  /** KV path: the text pipeline and the credit the engine has left (as far as this side knows). */
  detok?: IncrementalDetokenizer;
  window?: StopWindow;
  engineCredit: number;
  /** KV path: the bytes its cache may reach, reserved at admission. */
  reservedKv: number;
  /** KV path: who may reuse its cache, the chat it answers or the prompt it continues, and the text sent, for its affinity keys. */
  account?: string;
  key?: string;
  chat?: ChatMessage[];
  prompt?: string;
  text: string;
  cachedTokens: number;
  /** Plain path. */
  abort?: AbortController;
  wake?: (() => void) | null;
}

export class ChildGenerations {
  private readonly streams = new Map<string, Stream>();
  private bundleText: Promise<TextSide | null> | null = null;
  private readonly uploaded = new Map<string, Promise<TextSide>>();
  private engine: Promise<{ engine: DecodeEngine; loop: DecodeLoop }> | null = null;
  private computed = 0;
  private statsTimer: ReturnType<typeof setTimeout> | null = null;
  private lastStats = { tokens: -1, kvBytes: -1, conversations: "" };
  private kvEngine: DecodeEngine | null = null;
  private reservedKv = 0;
  /** Finished streams' caches, for prefix reuse; made with the engine. */
  private prefixes: PrefixCache | null = null;

  constructor(
    private readonly session: ort.InferenceSession,
    /** The graph's file: a bundle's files (tokenizer.json, config.json ...) are beside it. */
    private readonly modelPath: string,
    private readonly reply: (m: GenReply) => void,
    /** Bytes the KV caches of all streams together may take (Infinity: unbounded). */
    private readonly kvBudgetBytes = Infinity,
  ) {}

  handle(m: GenRequest): void {
    if (m.t === "gen") void this.start(m);
    else if (m.t === "gen_credit") this.credit(m.id, m.n);
    else this.cancel(m.id);
  }

  // ------------------------------------------------------------------ text side and engine

  private textSide(m: Extract<GenRequest, { t: "gen" }>): Promise<TextSide> {
    const ref = m.tokenizer;
    if (ref) {
      let p = this.uploaded.get(ref.sha256);
      if (!p) {
        p = readFile(ref.path, "utf8").then((text) => makeTextSide({ tokenizer: text }));
        p.catch(() => this.uploaded.delete(ref.sha256));
        if (this.uploaded.size >= MAX_UPLOADED_TOKENIZERS) this.uploaded.delete(this.uploaded.keys().next().value!);
        this.uploaded.set(ref.sha256, p);
      }
      return p;
    }
    this.bundleText ??= loadBundleTextSide(dirname(this.modelPath));
    return this.bundleText.then((side) => {
      if (!side) throw new TokenizerError("the model has no tokenizer: its bundle has no tokenizer.json and none was uploaded");
      return side;
    });
  }

  private kv(): Promise<{ engine: DecodeEngine; loop: DecodeLoop }> {
    this.engine ??= (async () => {
      const dir = dirname(this.modelPath);
      const json = async (name: string, required: boolean): Promise<unknown> => {
        try {
          return JSON.parse(await readFile(`${dir}/${name}`, "utf8")) as unknown;
        } catch (err) {
          if (!required && (err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
          throw new DecoderError(`${name}: ${(err as Error).message}`);
        }
      };
      const engine = DecodeEngine.create(this.session, await json("config.json", true), await json("generation_config.json", false), { keepDone: true });
      this.kvEngine = engine;
      const c = engine.config;
      this.prefixes = new PrefixCache({ layers: c.numLayers, heads: c.numKvHeads, headDim: c.headDim, type: engine.layout.kvType });
      const loop = new DecodeLoop(
        engine,
        (e) => this.onEngineEvent(e),
        (err) => {
          // A bug in a step: every stream of the engine ends with it; the child lives on.
          for (const s of [...this.streams.values()]) if (s.detok) this.fail(s, `the decoder failed: ${String(err)}`, false);
        },
      );
      return { engine, loop };
    })();
    this.engine.catch(() => (this.engine = null));
    return this.engine;
  }

  // ------------------------------------------------------------------ streams

  private async start(m: Extract<GenRequest, { t: "gen" }>): Promise<void> {
    if (this.streams.has(m.id)) {
      this.reply({ t: "gen_failed", id: m.id, message: `generation ${m.id} is already running`, known: true });
      return;
    }
    const s: Stream = {
      id: m.id,
      started: performance.now(),
      promptTokens: 0,
      credit: m.credit,
      sent: 0,
      queue: [],
      ending: null,
      engineCredit: 0,
      reservedKv: 0,
      text: "",
      cachedTokens: 0,
      ...(m.account ? { account: m.account } : {}),
      ...(m.key ? { key: m.key } : {}),
      ...(m.chat ? { chat: m.chat } : { prompt: m.prompt }),
    };
    this.streams.set(m.id, s);
    try {
      const side = await this.textSide(m);
      if (this.streams.get(m.id) !== s) return; // cancelled meanwhile (answered there)
      const ids = side.encodePrompt(m.prompt, m.chat);
      s.promptTokens = ids.length;
      const p = m.params;
      if (isKvDecoder(this.session)) {
        const { engine, loop } = await this.kv();
        if (this.streams.get(m.id) !== s) return;
        const need = Math.min(ids.length + p.maxTokens, engine.config.maxPositions + 1) * engine.kvBytesPerToken;
        // Looked up before making room: the match holds its own copy (or share) of the entry.
        const prefix = s.account ? this.prefixes?.match(s.account, ids) : null;
        // Kept caches give way to live streams.
        this.prefixes?.shrinkTo(this.kvBudgetBytes - this.reservedKv - need);
        if (this.reservedKv + need > this.kvBudgetBytes) {
          const mib = (b: number) => Math.round((b / 2 ** 20) * 10) / 10;
          this.fail(s, `no memory left on this node for this generation's KV cache (${mib(need)} MiB; ${mib(this.kvBudgetBytes - this.reservedKv)} MiB free)`, true, true);
          return;
        }
        s.reservedKv = need;
        this.reservedKv += need;
        s.detok = new IncrementalDetokenizer((x) => side.tokenizer.decode(x, { skipSpecialTokens: true }));
        s.window = new StopWindow(p.stop);
        s.engineCredit = s.credit;
        engine.add(
          m.id,
          ids,
          {
            maxTokens: p.maxTokens,
            temperature: p.temperature,
            topK: p.topK,
            topP: p.topP,
            repetitionPenalty: p.repetitionPenalty,
            ...(p.seed !== undefined ? { seed: p.seed } : {}),
            stopTokenIds: [...new Set([...engine.config.eosTokenIds, ...side.stopTokenIds])],
          },
          s.credit,
          prefix ?? undefined,
        );
        s.cachedTokens = prefix?.length ?? 0;
        loop.kick();
        this.stats();
      } else {
        await this.runPlain(s, side, ids, m);
      }
    } catch (err) {
      const known = err instanceof TokenizerError || err instanceof DecoderError || err instanceof GenerateError || err instanceof RangeError;
      this.fail(s, String((err as Error).message ?? err), known);
    }
  }

  private onEngineEvent(e: EngineEvent): void {
    const s = this.streams.get(e.id);
    if (!s || !s.detok || !s.window) return;
    if (e.type === "token") {
      this.computed++;
      s.engineCredit--;
      const pieces = s.window.push(e.token, s.detok.push(e.token));
      s.queue.push(...pieces);
      if (s.window.stopped) {
        // A stop sequence: the engine does not know text; the stream leaves it here, and its
        // cache is kept as for an end the engine saw (the answer is the text before the stop).
        const kept = this.kvEngine?.stopAndKeep(s.id);
        s.ending = "stop";
        for (const p of s.queue) s.text += p.text;
        if (kept) this.keep(s, kept);
      }
      this.flush(s);
    } else if (e.type === "done") {
      s.queue.push(...s.window.finish());
      s.ending = e.reason;
      // Everything the engine made is in the queue now: the answer's full text is known.
      for (const p of s.queue) s.text += p.text;
      if (e.kept) this.keep(s, e.kept);
      this.flush(s);
    } else {
      this.fail(s, e.message, true);
    }
    this.stats();
  }

  /** Sends what credit allows; ends the stream once it is ending and everything is out; tops up the engine's credit. */
  private flush(s: Stream): void {
    while (s.queue.length > 0 && s.credit > 0) {
      const p = s.queue.shift()!;
      s.credit--;
      if (!s.ending) s.text += p.text;
      this.reply({ t: "gen_token", id: s.id, i: s.sent++, text: p.text, tokenId: p.id });
    }
    if (s.ending && s.queue.length === 0) {
      this.end(s, s.ending);
      return;
    }
    if (s.detok && !s.ending) {
      // The engine may compute what the router allows and nothing is waiting for: held tokens do not count.
      const want = s.queue.length === 0 ? s.credit : 0;
      if (want > s.engineCredit) {
        this.kvEngine?.grant(s.id, want - s.engineCredit);
        s.engineCredit = want;
        void this.engine?.then(({ loop }) => loop.kick());
      }
    }
  }

  private credit(id: string, n: number): void {
    const s = this.streams.get(id);
    if (!s || !(n > 0)) return;
    s.credit += n;
    if (s.abort) s.wake?.();
    else this.flush(s);
  }

  private cancel(id: string): void {
    const s = this.streams.get(id);
    if (!s) return;
    if (s.abort) {
      // The plain loop answers itself once it sees the abort.
      s.abort.abort(new DOMException("cancelled", "AbortError"));
      s.wake?.();
      return;
    }
    this.kvEngine?.cancel(id);
    this.end(s, "cancelled");
  }

  /** Forgets a stream and gives back its KV reservation. */
  private drop(s: Stream): boolean {
    if (this.streams.get(s.id) !== s) return false;
    this.streams.delete(s.id);
    this.reservedKv -= s.reservedKv;
    s.reservedKv = 0;
    return true;
  }

  private end(s: Stream, reason: FinishReason): void {
    if (!this.drop(s)) return;
    this.reply({
      t: "gen_done",
      id: s.id,
      reason,
      tokens: s.sent,
      promptTokens: s.promptTokens,
      genMs: performance.now() - s.started,
      ...(s.cachedTokens > 0 ? { cachedTokens: s.cachedTokens } : {}),
    });
    this.stats();
  }

  private fail(s: Stream, message: string, known: boolean, busy = false): void {
    if (!this.drop(s)) return;
    this.kvEngine?.cancel(s.id);
    this.reply({ t: "gen_failed", id: s.id, message: message.slice(0, 2_000), known, ...(busy ? { busy } : {}) });
    this.stats();
  }

  /**
   * Keeps a finished stream's cache for its account's later prompts, if the KV budget has room
   * beside the live streams' reservations (its own included until it ends: a little early is
   * fine). A chat turn's entry gets its conversation key once hashed, a plain prompt's the
   * prefix keys of its text (prompt + completion).
   */
  private keep(s: Stream, kept: NonNullable<Extract<EngineEvent, { type: "done" }>["kept"]>): void {
    const cache = this.prefixes;
    if (!cache || !s.account) return;
    const room = Math.min(Number.isFinite(this.kvBudgetBytes) ? this.kvBudgetBytes : UNBOUNDED_KEEP_BYTES, this.kvBudgetBytes - this.reservedKv);
    if (kept.kv.bytes > room) return;
    const entry = cache.put(s.account, kept);
    cache.shrinkTo(room);
    if (!s.key) return;
    const tokens = kept.ids.length;
    const keys = s.chat
      ? conversationKey(s.account, s.key, [...s.chat, { role: "assistant", content: s.text }]).then((key) => [{ key, tokens }])
      : heldTextKeys(s.account, s.key, (s.prompt ?? "") + s.text).then((held) => {
          const chars = held[0]?.chars ?? 0;
          return held.map((h) => ({ key: h.key, tokens: Math.round((tokens * h.chars) / chars) }));
        });
    void keys.then((k) => {
      entry.keys = k;
      this.stats();
    });
  }

  /** Tokens, KV bytes and kept conversations to the agent, at most every STATS_EVERY_MS, and only when they changed. */
  private stats(): void {
    if (this.statsTimer) return;
    const send = () => {
      this.statsTimer = null;
      const perToken = this.kvEngine?.prefillMsPerToken ?? 0;
      const conversations = (this.prefixes?.conversations(MAX_REPORTED_CONVERSATIONS) ?? []).map((c) => ({ key: c.key, savedMs: Math.round(c.tokens * perToken * 100) / 100 }));
      const convSig = conversations.map((c) => c.key).join();
      const now = { tokens: this.computed, kvBytes: (this.kvEngine?.kvBytes ?? 0) + (this.prefixes?.bytes ?? 0) };
      if (now.tokens === this.lastStats.tokens && now.kvBytes === this.lastStats.kvBytes && convSig === this.lastStats.conversations) return;
      this.lastStats = { ...now, conversations: convSig };
      this.reply({ t: "gen_stats", ...now, ...(this.prefixes ? { conversations } : {}) });
    };
    this.statsTimer = setTimeout(send, STATS_EVERY_MS);
  }

  // ------------------------------------------------------------------ plain language models

  private async runPlain(s: Stream, side: TextSide, ids: number[], m: Extract<GenRequest, { t: "gen" }>): Promise<void> {
    const abort = (s.abort = new AbortController());
    const signal = abort.signal;
    const p = m.params;
    let it: AsyncGenerator<{ token: string; id: number }, GenerateFinish, undefined> | null = null;
    try {
      it = generate(this.session, side.tokenizer, m.prompt, {
        maxTokens: p.maxTokens,
        temperature: p.temperature,
        topK: p.topK,
        ...(p.seed !== undefined ? { seed: p.seed } : {}),
        stop: p.stop,
        stopTokenIds: side.stopTokenIds,
        signal,
        promptIds: ids,
      });
      let reason: FinishReason;
      for (;;) {
        if (m.simulatedTokenMs) await abortable(m.simulatedTokenMs, signal);
        const r = await it.next();
        if (r.done) {
          reason = r.value;
          break;
        }
        this.computed++;
        this.stats();
        while (s.credit <= 0) await this.waitForCredit(s, signal);
        s.credit--;
        this.reply({ t: "gen_token", id: s.id, i: s.sent++, text: r.value.token, tokenId: r.value.id });
      }
      this.end(s, reason);
    } catch (err) {
      if (signal.aborted) this.end(s, "cancelled");
      else throw err;
    } finally {
      await it?.return(undefined as never).catch(() => undefined);
    }
  }

  private waitForCredit(s: Stream, signal: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      s.wake = () => {
        s.wake = null;
        if (signal.aborted) reject(signal.reason);
        else resolve();
      };
    });
  }
}

function abortable(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
