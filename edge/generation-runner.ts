// One generation as the edge runs it, whatever the caller's transport (WebSocket, SSE, plain
// HTTP): pick the region (the same ranking as calls), send the request on that region's stream
// socket, and turn the region's frames into caller events as they arrive, one token at a time.
// A region that cannot be reached, or that says it has no capacity before anything happened,
// is skipped for the next best once; after the first event nothing is retried (the caller has
// seen it). The caller's transport decides the credit: how many tokens it lets be in flight.
// Usage (prompt and generated tokens) is recorded when the generation ends (a shadow copy's by
// its runner, shadow-calls.ts, once it has compared the texts). The request is
// signed for the region that gets it: its download URLs (on PUBLIC_ORIGIN) and its grant.

import { followUpKey, promptPrefixKeys } from "../protocol/conversation-key.js";
import { MeshError, ERROR_STATUS } from "../protocol/errors.js";
import type { ChatMessage, GenerateParams, ModelRef, RegionGenerateRequest, RegionToEdge } from "../protocol/messages.js";
import type { KeyRecord } from "./api-keys.js";
import type { Services } from "./context.js";
import { bundleFileRefs, downloadUrl } from "./download-urls.js";
import type { RegionConfig } from "./env.js";
import type { CallerLocation } from "./geo.js";
import { log } from "./log.js";
import { modelKey, type ModelInfo, type VersionInfo } from "./model-registry.js";
import { regionMessage } from "./node-errors.js";
import { rankRegions, watchCall, type CallWatch, type RankedRegion } from "./region-client.js";
import { rankOnFreshView } from "./region-state.js";
import type { ChannelSource, StreamChannel } from "./stream-client.js";
import type { StreamEvent } from "./stream-protocol.js";
import type { TokenizerInfo } from "./tokenizers.js";
import { recordUsage, type UsageEvent } from "./usage.js";

/** A region that says nothing at all for this long past the deadline is given up on. */
const SILENCE_GRACE_MS = 5_000;

export interface GenerationPlan {
  services: Services;
  key: KeyRecord;
  model: ModelInfo;
  version: VersionInfo;
  /** An uploaded tokenizer; null: the node uses the tokenizer.json in the version's bundle. */
  tokenizer: TokenizerInfo | null;
  /** Unique per generation (the region and node name it in their logs). */
  requestId: string;
  /** The caller's id of the request, echoed in every event. */
  id: string;
  prompt: string;
  /** Sent instead of the prompt: the node renders it with the bundle's chat template. */
  chat?: ChatMessage[];
  params: GenerateParams;
  /** Tokens the region may send before the first credit. */
  window: number;
  caller: CallerLocation;
  /** When the request reached the edge (ms since epoch), and its first-token deadline. */
  startedAt: number;
  deadline: number;
  /** Where the channel to a region comes from: the caller's socket pool, or one HTTP request per generation. */
  pool: ChannelSource;
  /** The edge's span (W3C traceparent), sent inside the signed request. */
  traceparent?: string;
  /**
   * Set for a shadow copy (shadow-calls.ts): the version whose generation it copies. Its usage
   * row is then left in `usage` for the shadow's runner to record once it has compared texts.
   */
  shadowOf?: number;
}

/** How a generation ended, for its usage row. */
export interface GenerationEnd {
  region: string | null;
  node: string | null;
  status: number;
  edgeMs: number;
  queueMs: number;
  inferMs: number;
  tokensIn: number;
  tokensOut: number;
}

/** The usage row of a generation (one that ran, or a shadow refused before it started). */
export function generationUsageRow(
  p: Pick<GenerationPlan, "requestId" | "key" | "model" | "startedAt" | "shadowOf"> & { version: Pick<VersionInfo, "version"> },
  end: GenerationEnd,
): UsageEvent {
  return {
    requestId: p.requestId,
    accountId: p.key.accountId,
    keyId: p.key.id,
    modelId: p.model.id,
    version: p.version.version,
    ...end,
    shadowOf: p.shadowOf ?? null,
    createdAt: p.startedAt,
  };
}

let sidCounter = 0;

/**
 * Runs `plan` to its end at full speed (a token's credit goes back as it arrives), gathering its
 * text into `parts`: for whoever wants the whole answer rather than a stream (a non-streamed
 * generate, a shadow copy). `observe` sees every event first. The caller closes the plan's pool.
 * `signal` (the caller's request.signal) cancels the generation, on the node too, when the caller
 * goes away: it then ends as `done` with finish_reason cancelled, its usage row (499) the tokens
 * that reached the edge (over an HTTP region stream the cancel is the request's abort, so the
 * node's own count does not come back).
 */
export async function runToEnd(
  plan: GenerationPlan,
  parts: string[],
  observe?: (ev: StreamEvent) => void,
  signal?: AbortSignal,
): Promise<{ gen: Generation; end: Extract<StreamEvent, { type: "done" | "error" }> | null }> {
  let end: Extract<StreamEvent, { type: "done" | "error" }> | null = null;
  const gen: Generation = new Generation(plan, (ev) => {
    observe?.(ev);
    if (ev.type === "token") {
      parts.push(ev.text_output);
      gen.credit(1);
    } else if (ev.type === "done" || ev.type === "error") {
      end = ev;
    }
  });
  const stop = signal ? cancelOnAbort(signal, gen, plan.services.waitUntil) : null;
  try {
    await gen.start(observe);
    await gen.finished;
  } finally {
    stop?.();
  }
  return { gen, end };
}

/**
 * Cancels `gen` when `signal` aborts (the caller disconnected: Workers' request.signal, compat flag
 * enable_request_signal). Once the caller is gone the runtime tears the request down as soon as
 * nothing holds it (its subrequests with it), so the rest of the generation (its end, the usage
 * row, the route's cleanup: the region stream closed, the running-stream place given back) is
 * held by waitUntil until it has ended.
 * Returns the listener's removal.
 */
export function cancelOnAbort(signal: AbortSignal, gen: Pick<Generation, "cancel" | "finished">, waitUntil: (p: Promise<unknown>) => void): () => void {
  const onAbort = () => {
    gen.cancel();
    waitUntil(gen.finished);
  };
  if (signal.aborted) {
    onAbort();
    return () => undefined;
  }
  signal.addEventListener("abort", onAbort, { once: true });
  return () => signal.removeEventListener("abort", onAbort);
}

export class Generation {
  private channel: StreamChannel | null = null;
  private readonly sid = `g${(++sidCounter).toString(36)}`;
  private heard = false;
  /** When the request left for a region (ms since epoch): the edge's own share of the time. */
  private sentAt = 0;
  private ended = false;
  private cancelled = false;
  /** Credit granted by the caller before the request reached a region. */
  private pendingCredit = 0;
  private silenceTimer: ReturnType<typeof setTimeout> | null = null;
  /** Regions still to try, best first (the first two of the ranking). */
  private candidates: RankedRegion[] = [];
  /** The request out to a region until its first frame: overdue, it turns new calls away from that region. */
  private watch: CallWatch | null = null;
  region: string | null = null;
  /**
   * The kept KV cache it may continue (protocol/conversation-key.ts): a follow-up chat turn's
   * conversation key, or a plain prompt's prefix keys, longest first. Regions and nodes that
   * keep one are preferred.
   */
  private affinity: string | undefined;
  private prefixKeys: string[] | undefined;
  tokens = 0;
  firstTokenAt = 0;
  /** Its usage row once ended (a shadow's is recorded by its runner, see GenerationPlan.shadowOf). */
  usage: UsageEvent | null = null;
  /** Resolves when the generation has ended (done or error sent to the sink). */
  readonly finished: Promise<void>;
  private resolveFinished!: () => void;

  constructor(
    private readonly plan: GenerationPlan,
    private readonly emit: (ev: StreamEvent) => void,
  ) {
    this.finished = new Promise((r) => (this.resolveFinished = r));
  }

  /**
   * Sends the request to the best region that takes it. Resolves once it is on a region's
   * socket; throws MeshError (and emits nothing: the caller answers it as an HTTP error) when no
   * region took it. `unserved` (a served generation's shadow copies, shadowsOf) hears that end
   * first, as the error event the generation would have ended with: a call's copies run when the
   * served call fails (shadow-calls.ts runShadows), and a generation's the same.
   */
  async start(unserved?: (ev: StreamEvent) => void): Promise<void> {
    try {
      await this.reachRegion();
    } catch (err) {
      const ev = this.errorEvent(err);
      // The caller gets the error as the route's HTTP answer (thrown below), not as an event; the
      // generation still leaves its usage row, as a unary call no region took does (503).
      this.end(ERROR_STATUS[ev.code], 0, 0);
      unserved?.(ev);
      throw err;
    }
  }

  private async reachRegion(): Promise<void> {
    const p = this.plan;
    const s = p.services;
    const key = modelKey(p.model, p.version);
    if (p.chat) this.affinity = await followUpKey(p.key.accountId, key, p.chat);
    else this.prefixKeys = await promptPrefixKeys(p.key.accountId, key, p.prompt);
    const affinity = this.affinity ? [this.affinity] : this.prefixKeys;
    const ranked = await rankOnFreshView(s.config, s.waitUntil, (state) => rankRegions(s.config, state, p.caller, key, p.model.regions, undefined, undefined, affinity));
    if (ranked.length === 0) {
      throw new MeshError(
        "no_region_available",
        p.model.regions ? `model '${p.model.name}' may only run in ${p.model.regions.join(", ")}, and none of them is available now` : "no region is available",
        { "retry-after": "1" },
      );
    }
    this.candidates = ranked.slice(0, 2);
    await this.tryNext("no region is available for this model");
  }

  /** The request as `region` gets it: download URLs signed for that region alone. */
  private async requestFor(region: RegionConfig): Promise<RegionGenerateRequest> {
    const p = this.plan;
    const config = p.services.config;
    const [artifactUrl, tokenizerUrl, files] = await Promise.all([
      downloadUrl(config, region.name, "artifact", p.version.sha256),
      p.tokenizer ? downloadUrl(config, region.name, "tokenizer", p.tokenizer.sha256) : null,
      // The bundle's files (data, tokenizer, configs) go with the version, as for calls.
      p.version.files ? bundleFileRefs(config, region.name, p.version.files) : null,
    ]);
    const model: ModelRef = {
      key: modelKey(p.model, p.version),
      account: p.key.accountId,
      name: p.model.name,
      version: p.version.version,
      sha256: p.version.sha256,
      size: p.version.size,
      artifactUrl,
      signature: p.version.signature,
      ...(p.tokenizer && tokenizerUrl ? { tokenizer: { sha256: p.tokenizer.sha256, size: p.tokenizer.size, url: tokenizerUrl } } : {}),
      ...(files ? { files } : {}),
    };
    return {
      requestId: p.requestId,
      model,
      prompt: p.prompt,
      ...(p.chat ? { chat: p.chat } : {}),
      params: p.params,
      deadline: p.deadline,
      ...(p.traceparent ? { traceparent: p.traceparent } : {}),
      ...(this.affinity ? { affinity: this.affinity } : {}),
      ...(this.prefixKeys?.length ? { prefixKeys: this.prefixKeys } : {}),
    };
  }

  private async tryNext(lastError: string): Promise<void> {
    while (this.candidates.length > 0 && !this.cancelled) {
      const { region, estimate: expected } = this.candidates.shift()!;
      if (Date.now() >= this.plan.deadline) throw new MeshError("deadline_exceeded", "the call's deadline passed before a region took it");
      let ch: StreamChannel;
      try {
        ch = await this.plan.pool.get(region, this.plan.deadline);
      } catch (err) {
        lastError = err instanceof MeshError ? err.message : String(err);
        log("warn", this.plan.requestId, "region stream socket unavailable; trying the next", { region: region.name, error: lastError });
        continue;
      }
      if (this.cancelled) return;
      // Signed before the channel is ours, so no credit frame can overtake the request.
      const signed = await ch.sign(await this.requestFor(region));
      if (this.cancelled) return;
      this.channel = ch;
      this.region = region.name;
      ch.register(this.sid, (f) => this.onFrame(f));
      // Only the channel this generation is on now: one it left (for the next region) may close later.
      ch.onClose((reason) => {
        if (this.channel === ch) this.onChannelClosed(reason);
      });
      ch.send({ t: "generate", sid: this.sid, ...signed, window: this.plan.window + this.pendingCredit });
      this.watch = watchCall(region.name, expected.totalMs);
      this.sentAt ||= Date.now();
      this.pendingCredit = 0;
      this.armSilence();
      return;
    }
    if (this.cancelled) return;
    throw new MeshError("no_region_available", `no region could take the call (${lastError})`, { "retry-after": "1" });
  }

  private armSilence(): void {
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    this.silenceTimer = setTimeout(
      () => {
        if (this.heard || this.ended) return;
        this.watch?.timedOut();
        this.fail(new MeshError("deadline_exceeded", `region ${this.region} did not answer within the deadline`));
      },
      Math.max(1, this.plan.deadline - Date.now()) + SILENCE_GRACE_MS,
    );
  }

  /** The caller took `n` more tokens: the region may send that many more. */
  credit(n: number): void {
    if (n <= 0 || this.ended) return;
    if (this.channel && this.channel.open) this.channel.send({ t: "credit", sid: this.sid, n });
    else this.pendingCredit += n;
  }

  /** Stops the generation (on the node too); the caller gets `done` with finish_reason cancelled. */
  cancel(): void {
    if (this.ended || this.cancelled) return;
    this.cancelled = true;
    if (this.channel && this.channel.open) {
      this.channel.send({ t: "cancel", sid: this.sid });
    } else {
      this.finish({ type: "done", ...this.doneBase(), finish_reason: "cancelled", prompt_tokens: 0, tokens: this.tokens, node: null, timing: this.timing(0, 0, 0) }, 499, 0, 0);
    }
  }

  private doneBase() {
    return { id: this.plan.id, model_name: this.plan.model.name, model_version: String(this.plan.version.version), region: this.region };
  }

  private timing(queueMs: number, loadMs: number, genMs: number) {
    const now = Date.now();
    return {
      queue_ms: Math.round(queueMs * 100) / 100,
      load_ms: Math.round(loadMs * 100) / 100,
      ttft_ms: (this.firstTokenAt || now) - this.plan.startedAt,
      gen_ms: Math.round(genMs * 100) / 100,
      total_ms: now - this.plan.startedAt,
    };
  }

  private onFrame(f: RegionToEdge): void {
    if (this.ended) return;
    // A region's message may carry node paths and runtime internals: scrubbed here, where it enters.
    if (f.t === "error") f = { ...f, message: regionMessage(this.plan.requestId, f.message, { region: this.region }) };
    const first = !this.heard;
    // Any frame, a refusal included, says the region is not silent.
    if (first) this.watch?.answered();
    // The region did not take it (no capacity, or no wire version in common with this edge):
    // the next best may. A wire refusal never reaches the caller: with no region left, the
    // caller hears no_region_available, the refusal in its message.
    if (f.t === "error" && first && !this.cancelled && ((f.code === "no_capacity" && this.candidates.length > 0) || f.code === "wire_version_unsupported")) {
      this.detach();
      void this.tryNext(`region ${this.region}: ${f.message}`).catch((err: unknown) => this.fail(err));
      return;
    }
    this.heard = true;
    if (first && this.silenceTimer) clearTimeout(this.silenceTimer);
    switch (f.t) {
      case "progress":
        this.emit({
          type: "progress",
          id: this.plan.id,
          stage: f.stage,
          ...(f.position !== undefined ? { position: f.position } : {}),
          ...(f.bytes !== undefined ? { bytes: f.bytes } : {}),
          ...(f.total !== undefined ? { total: f.total } : {}),
          ...(f.bytes !== undefined && f.total ? { percent: Math.min(100, Math.floor((f.bytes / f.total) * 100)) } : {}),
        });
        return;
      case "token":
        this.tokens++;
        if (this.tokens === 1) this.firstTokenAt = Date.now();
        this.emit({ type: "token", id: this.plan.id, index: f.i, text_output: f.text, token_id: f.id });
        return;
      case "done":
        this.finish(
          {
            type: "done",
            ...this.doneBase(),
            finish_reason: f.reason,
            prompt_tokens: f.promptTokens,
            ...(f.cachedTokens ? { cached_tokens: f.cachedTokens } : {}),
            tokens: f.tokens,
            node: f.node || null,
            timing: this.timing(f.timing.queueMs, f.timing.loadMs, f.timing.genMs),
          },
          f.reason === "cancelled" ? ERROR_STATUS.cancelled : 200,
          f.promptTokens,
          f.tokens,
          f,
        );
        return;
      case "error":
        this.fail(new MeshError(f.code, f.message));
        return;
    }
  }

  private onChannelClosed(reason: string): void {
    if (this.ended) return;
    if (this.cancelled) {
      this.finish({ type: "done", ...this.doneBase(), finish_reason: "cancelled", prompt_tokens: 0, tokens: this.tokens, node: null, timing: this.timing(0, 0, 0) }, 499, 0, this.tokens);
      return;
    }
    if (!this.heard && this.candidates.length > 0) {
      this.detach();
      void this.tryNext(reason).catch((err: unknown) => this.fail(err));
      return;
    }
    this.fail(new MeshError("region_error", `the region's stream ended early: ${reason}`));
  }

  private detach(): void {
    this.watch?.ended();
    this.watch = null;
    this.channel?.unregister(this.sid);
    this.channel = null;
  }

  private fail(err: unknown): void {
    if (this.ended) return;
    const ev = this.errorEvent(err);
    this.finish(ev, ERROR_STATUS[ev.code], 0, this.tokens);
  }

  /** The error event a generation ends with on `err` (anything not a MeshError is logged, and internal). */
  private errorEvent(err: unknown): Extract<StreamEvent, { type: "error" }> {
    const e = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
    if (!(err instanceof MeshError)) log("error", this.plan.requestId, "generation failed", { error: String(err) });
    return { type: "error", id: this.plan.id, error: e.message, code: e.code, requestId: this.plan.requestId };
  }

  private finish(ev: StreamEvent, status: number, tokensIn: number, tokensOut: number, done?: Extract<RegionToEdge, { t: "done" }>): void {
    if (this.end(status, tokensIn, tokensOut, done)) this.emit(ev);
  }

  /** Ends the generation once: its usage row recorded, `finished` resolved. False when it had already ended. */
  private end(status: number, tokensIn: number, tokensOut: number, done?: Extract<RegionToEdge, { t: "done" }>): boolean {
    if (this.ended) return false;
    this.ended = true;
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    this.detach();
    const p = this.plan;
    this.usage = generationUsageRow(p, {
      region: this.region,
      node: done?.node || null,
      status,
      edgeMs: Math.max(0, (this.sentAt || Date.now()) - p.startedAt),
      queueMs: Math.round(done?.timing.queueMs ?? 0),
      inferMs: Math.round(done?.timing.genMs ?? 0),
      tokensIn,
      tokensOut,
    });
    if (p.shadowOf === undefined) recordUsage(p.services, this.usage);
    this.resolveFinished();
    return true;
  }
}
