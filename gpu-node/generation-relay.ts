// Generations on the node, as the agent sees them: it only moves frames. A router's `generate`
// goes to the session child that holds the model (the same child for every generation of a
// version, so its decode engine batches them: child-generations.ts); the child's tokens come
// back as token frames, the router's `credit` and `cancel` go to it. The child sends a token
// only against credit the router granted (end to end, from the caller), so a reader that stops
// reading stops the generation there. A child that dies mid-generation ends its streams with
// an error frame; a cancel (or the router's socket going away) ends the stream with `done`
// reason cancelled as soon as the child confirms, or at once when the child is gone.
//
// Tokenizers uploaded with a version come with the request (a signed URL and a sha256): the
// agent downloads them into the model cache (sha-checked there) and hands the child the file;
// without one, the child uses the tokenizer.json in the version's bundle, beside the graph.

import { makeLogger } from "../protocol/log.js";
import type { NodeToRouter, RouterToNode, TokenizerRef } from "../protocol/messages.js";
import { publicMessage } from "../protocol/public-message.js";
import type { ModelCache } from "./model-cache.js";
import type { GenEvent, SessionProcess } from "./session-process.js";

type GenerateFrame = Extract<RouterToNode, { t: "generate" }>;
type Send = (msg: NodeToRouter) => void;

/** Uploaded tokenizer files by sha256, downloaded through the model cache (sha-checked there). */
export class TokenizerFiles {
  constructor(private readonly cache: ModelCache) {}

  /** The file's local path (downloaded when not cached). */
  async get(ref: TokenizerRef): Promise<string> {
    return (await this.cache.get(ref.url, ref.sha256, ref.size, () => undefined, "json")).path;
  }
}

interface Running {
  proc: SessionProcess | null;
  send: Send;
  cancelled: boolean;
  /** Credit that arrived before the child was asked to start. */
  pendingCredit: number;
  started: number;
}

export interface GenerationDeps {
  /**
   * The session child that runs a model's generations (once one is up, when they are all being
   * replaced), or undefined when the model is not loaded here, or loaded with other bytes than
   * `sha256` (the router's word for what the key names).
   */
  generator(key: string, sha256: string): Promise<SessionProcess | undefined> | SessionProcess | undefined;
  tokenizers: TokenizerFiles;
  /** Local mode only: extra time per token, to simulate a bigger model (plain models). */
  simulatedTokenMs: number;
  /** A generation started (+1) or ended (-1): the node counts the time with any running as busy. */
  onActive?: (delta: 1 | -1) => void;
}

export class Generations {
  private readonly running = new Map<string, Running>();
  private readonly log = makeLogger("node");
  /** Tokens computed since the node started (held ones included), as the children report them: what a stalled reader stops. */
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
    const g: Running = { proc: null, send, cancelled: false, pendingCredit: 0, started: performance.now() };
    this.running.set(msg.id, g);
    this.deps.onActive?.(1);
    void this.begin(msg, g).catch((err: Error) => {
      this.log("warn", "generation failed to start", { id: msg.id, key: msg.key, error: err.message });
      this.finish(msg.id, g, { t: "error", id: msg.id, code: "inference_failed", message: publicMessage(err.message) });
    });
  }

  private async begin(msg: GenerateFrame, g: Running): Promise<void> {
    let tokenizer: { sha256: string; path: string } | undefined;
    if (msg.tokenizer) {
      try {
        tokenizer = { sha256: msg.tokenizer.sha256, path: await this.deps.tokenizers.get(msg.tokenizer) };
      } catch (err) {
        this.finish(msg.id, g, { t: "error", id: msg.id, code: "node_error", message: `the tokenizer could not be fetched: ${(err as Error).message.slice(0, 300)}` });
        return;
      }
    }
    const proc = await this.deps.generator(msg.key, msg.sha256);
    if (g.cancelled) return this.finish(msg.id, g, { t: "done", id: msg.id, reason: "cancelled", tokens: 0, promptTokens: 0, genMs: performance.now() - g.started });
    if (!proc) {
      // Nothing ran: the router may place the stream on another node.
      this.finish(msg.id, g, { t: "error", id: msg.id, code: "node_error", message: `model ${msg.key} is not loaded on this node` });
      return;
    }
    g.proc = proc;
    proc.generate(
      {
        t: "gen",
        id: msg.id,
        prompt: msg.prompt,
        ...(msg.chat ? { chat: msg.chat } : {}),
        params: msg.params,
        ...(tokenizer ? { tokenizer } : {}),
        credit: msg.credit + g.pendingCredit,
        ...(msg.account ? { account: msg.account, key: msg.key } : {}),
        ...(this.deps.simulatedTokenMs > 0 ? { simulatedTokenMs: this.deps.simulatedTokenMs } : {}),
      },
      (e) => this.onChild(msg, g, e),
    );
  }

  private onChild(msg: GenerateFrame, g: Running, e: GenEvent): void {
    const id = msg.id;
    switch (e.t) {
      case "gen_token":
        g.send({ t: "token", id, i: e.i, text: e.text, tokenId: e.tokenId });
        return;
      case "gen_done":
        return this.finish(id, g, { t: "done", id, reason: e.reason, tokens: e.tokens, promptTokens: e.promptTokens, genMs: e.genMs, ...(e.cachedTokens ? { cachedTokens: e.cachedTokens } : {}) });
      case "gen_failed":
        // No room for its KV cache here now: node_error lets the router place it elsewhere.
        if (e.busy) return this.finish(id, g, { t: "error", id, code: "node_error", message: e.message.slice(0, 500) });
        if (!e.known) this.log("warn", "generation failed", { id, key: msg.key, error: e.message });
        // Known failures say what is wrong with the model or request; the rest (onnxruntime's)
        // may name node files and sources: those go to the log, not the caller.
        return this.finish(id, g, { t: "error", id, code: "inference_failed", message: e.known ? e.message.slice(0, 500) : publicMessage(e.message) });
      case "gen_lost":
        if (g.cancelled) return this.finish(id, g, { t: "done", id, reason: "cancelled", tokens: 0, promptTokens: 0, genMs: performance.now() - g.started });
        this.log("warn", "generation failed: session process died", { id, key: msg.key, error: e.why.message });
        return this.finish(id, g, {
          t: "error",
          id,
          code: "inference_failed",
          message: e.why.kind === "too_big" ? e.why.message : "the model's session stopped during the generation",
        });
    }
  }

  private finish(id: string, g: Running, frame: NodeToRouter): void {
    if (this.running.get(id) !== g) return;
    this.running.delete(id);
    this.deps.onActive?.(-1);
    g.send(frame);
  }

  credit(id: string, n: number): void {
    const g = this.running.get(id);
    if (!g) return;
    if (g.proc) g.proc.genCredit(id, n);
    else g.pendingCredit += n;
  }

  /** Stops a generation; false when none runs under that id. */
  cancel(id: string): boolean {
    const g = this.running.get(id);
    if (!g) return false;
    g.cancelled = true;
    // The child answers with done (cancelled); before it was asked, begin() answers.
    g.proc?.genCancel(id);
    return true;
  }

  cancelAll(why: string): void {
    for (const id of [...this.running.keys()]) this.cancel(id);
    if (this.running.size > 0) this.log("debug", "generations cancelled", { why, n: this.running.size });
  }

  /** Adds what the children report computing (runtime.onGenTokens). */
  counted(n: number): void {
    this.tokens += n;
  }
}
