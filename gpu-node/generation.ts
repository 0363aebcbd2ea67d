// Generations on the node: the token loop of gpu-node/generate.ts driven by the router's
// `generate` frames, one token frame per token, each sent only against credit. The router
// grants credit as its reader takes tokens (end to end, from the caller), so a reader that
// stops reading stops this loop after the tokens it has been granted: at most one token is
// computed and held beyond them. A `cancel` (or the router's socket going away) aborts the loop
// between tokens, also while it waits for credit, and frees the generation's slot at once.
//
// Tokenizers come with the request (a signed URL and a sha256): downloaded once into the model
// cache, checked against the hash, parsed, and kept by hash.

import { readFile } from "node:fs/promises";
import { makeLogger } from "../protocol/log.js";
import type { FinishReason, NodeToRouter, RouterToNode, TokenizerRef } from "../protocol/messages.js";
import { loadTokenizer, TokenizerError, type Tokenizer } from "../protocol/tokenizer.js";
import { generate, GenerateError, type GenerateFinish, type GenerateSession } from "./generate.js";
import type { ModelCache } from "./model-cache.js";
import { publicMessage } from "../protocol/public-message.js";

type GenerateFrame = Extract<RouterToNode, { t: "generate" }>;
type Send = (msg: NodeToRouter) => void;

const MAX_TOKENIZERS = 64;

/** Parsed tokenizers by sha256, downloaded through the model cache (sha-checked there). */
export class TokenizerCache {
  private readonly byHash = new Map<string, Promise<Tokenizer>>();

  constructor(private readonly cache: ModelCache) {}

  get(ref: TokenizerRef): Promise<Tokenizer> {
    let p = this.byHash.get(ref.sha256);
    if (!p) {
      p = (async () => {
        const file = await this.cache.get(ref.url, ref.sha256, ref.size, () => undefined, "json");
        return loadTokenizer(await readFile(file.path, "utf8"));
      })();
      // A failed download may succeed next time: do not keep the failure.
      p.catch(() => this.byHash.delete(ref.sha256));
      if (this.byHash.size >= MAX_TOKENIZERS) this.byHash.delete(this.byHash.keys().next().value!);
      this.byHash.set(ref.sha256, p);
    }
    return p;
  }
}

interface Running {
  controller: AbortController;
  credit: number;
  /** Set while the loop waits for credit. */
  wake: (() => void) | null;
}

export interface GenerationDeps {
  /**
   * The loaded session of a model, or undefined when it is not loaded here, or loaded with
   * other bytes than `sha256` (the router's word for what the key names).
   */
  session(key: string, sha256: string): GenerateSession | undefined;
  tokenizers: TokenizerCache;
  /** Local mode only: extra time per token, to simulate a bigger model. */
  simulatedTokenMs: number;
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

export class Generations {
  private readonly running = new Map<string, Running>();
  private readonly log = makeLogger("node");
  /** Tokens produced since the node started (held ones included): what a stalled reader stops. */
  tokens = 0;

  constructor(private readonly deps: GenerationDeps) {}

  get active(): number {
    return this.running.size;
  }

  /** Starts a generation; its frames go through `send` (the socket it arrived on). */
  start(msg: GenerateFrame, send: Send): void {
    if (this.running.has(msg.id)) {
      send({ t: "error", id: msg.id, code: "bad_request", message: `generation ${msg.id} is already running` });
      return;
    }
    const g: Running = { controller: new AbortController(), credit: msg.credit, wake: null };
    this.running.set(msg.id, g);
    void this.run(msg, g, send).finally(() => this.running.delete(msg.id));
  }

  credit(id: string, n: number): void {
    const g = this.running.get(id);
    if (!g) return;
    g.credit += n;
    g.wake?.();
  }

  /** Stops a generation between tokens; false when none runs under that id. */
  cancel(id: string, why = "cancelled"): boolean {
    const g = this.running.get(id);
    if (!g) return false;
    g.controller.abort(new DOMException(why, "AbortError"));
    g.wake?.();
    return true;
  }

  cancelAll(why: string): void {
    for (const id of [...this.running.keys()]) this.cancel(id, why);
  }

  private waitForCredit(g: Running): Promise<void> {
    const signal = g.controller.signal;
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason);
      g.wake = () => {
        g.wake = null;
        if (signal.aborted) reject(signal.reason);
        else resolve();
      };
    });
  }

  private async run(msg: GenerateFrame, g: Running, send: Send): Promise<void> {
    const started = performance.now();
    const signal = g.controller.signal;
    let sent = 0;
    let promptTokens = 0;
    let it: AsyncGenerator<{ token: string; id: number }, GenerateFinish, undefined> | null = null;
    try {
      const session = this.deps.session(msg.key, msg.sha256);
      if (!session) {
        // Nothing ran: the router may place the stream on another node.
        send({ t: "error", id: msg.id, code: "node_error", message: `model ${msg.key} is not loaded on this node` });
        return;
      }
      if (!msg.tokenizer) {
        // A bundle's own tokenizer (no separately uploaded one): not served by this loop yet.
        send({ t: "error", id: msg.id, code: "bad_request", message: `model ${msg.key} has no uploaded tokenizer` });
        return;
      }
      let tokenizer: Tokenizer;
      try {
        tokenizer = await this.deps.tokenizers.get(msg.tokenizer);
      } catch (err) {
        if (err instanceof TokenizerError) throw err;
        send({ t: "error", id: msg.id, code: "node_error", message: `the tokenizer could not be fetched: ${(err as Error).message.slice(0, 300)}` });
        return;
      }
      promptTokens = tokenizer.encode(msg.prompt).length;
      const p = msg.params;
      it = generate(session, tokenizer, msg.prompt, {
        maxTokens: p.maxTokens,
        temperature: p.temperature,
        topK: p.topK,
        ...(p.seed !== undefined ? { seed: p.seed } : {}),
        stop: p.stop,
        signal,
      });
      let reason: FinishReason;
      for (;;) {
        if (this.deps.simulatedTokenMs > 0) await abortable(this.deps.simulatedTokenMs, signal);
        const r = await it.next();
        if (r.done) {
          reason = r.value;
          break;
        }
        this.tokens++;
        while (g.credit <= 0) await this.waitForCredit(g);
        g.credit--;
        send({ t: "token", id: msg.id, i: sent++, text: r.value.token, tokenId: r.value.id });
      }
      send({ t: "done", id: msg.id, reason, tokens: sent, promptTokens, genMs: performance.now() - started });
    } catch (err) {
      if (signal.aborted) {
        send({ t: "done", id: msg.id, reason: "cancelled", tokens: sent, promptTokens, genMs: performance.now() - started });
        return;
      }
      const known = err instanceof GenerateError || err instanceof TokenizerError || err instanceof RangeError;
      if (!known) this.log("warn", "generation failed", { id: msg.id, key: msg.key, error: String(err) });
      // Messages of the known kinds say what is wrong with the model or request; the rest
      // (onnxruntime's) may name node files and sources: those go to the log, not the caller.
      const message = known ? (err as Error).message.slice(0, 500) : publicMessage((err as Error).message);
      send({ t: "error", id: msg.id, code: "inference_failed", message });
    } finally {
      await it?.return(undefined as never).catch(() => undefined);
    }
  }
}
