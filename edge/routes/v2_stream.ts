// Generation routes (key scope `infer`) for models that ship a tokenizer:
//
//   GET  /v2/models/{m}[/versions/{v}]/stream           WebSocket, many requests per socket
//   POST /v2/models/{m}[/versions/{v}]/generate_stream  Server-Sent Events, one request
//   POST /v2/models/{m}[/versions/{v}]/generate         the whole text at once (KServe generate)
//
// Every token is passed on as it arrives. Back-pressure, per transport:
//  - WebSocket: workerd's server socket has no bufferedAmount, so the edge cannot see a slow
//    reader from the socket. Instead each request has a window (default 256 tokens): the edge
//    lets the node produce at most that many tokens beyond what the caller has acknowledged
//    (`{"type":"ack","id":..,"tokens":n}`, cumulative). A caller that never acks gets its
//    first `window` tokens and then the stream waits (and is cancelled after the region's stall
//    timeout); a caller with max_tokens <= window never needs to ack.
//  - SSE: the response body is a ReadableStream the runtime pulls as the socket drains; each
//    pull grants the region one more token, so the node runs at the reader's pace (plus what
//    the TCP buffers between the edge and the reader hold).
//  - generate: the edge gathers the text; the node runs at full speed.
// Auth: `Authorization: Bearer <key>`, or for browsers (which cannot set headers on a
// WebSocket) the subprotocol `mesh.key.<key>` offered next to `mesh.v1` (JSON text frames) or
// `mesh.v1.msgpack` (msgpack binary frames; also `?format=msgpack`). The server answers with
// the framing protocol, never the key.
//
// Every socket is bounded (stream-limits.ts): sockets per key and per account, requests running
// per account (SSE and generate calls included), and every client message counts. A message's size is checked before it is
// parsed (a generate at most MAX_GENERATE_BODY, an ack or cancel at most 1 KiB); each message
// counts against the key's rate limit, except an ack that grants credit for tokens delivered
// and a cancel of a running request (both bounded by what a charged generate produced, and
// refusing them would only stall a stream the caller paid for). Refusals are strikes, and a
// socket that keeps sending bad messages after being told is closed with 1008.

import type { Hono } from "hono";
import { z } from "zod";
import { createCodec } from "../../protocol/codec.js";
import { MeshError } from "../../protocol/errors.js";
import { GENERATE_LIMITS } from "../../protocol/messages.js";
import type { KeyRecord } from "../api-keys.js";
import { services, type AppContext, type AppEnv } from "../context.js";
import { Generation, type GenerationPlan } from "../generation-runner.js";
import { callerLocation } from "../geo.js";
import { log } from "../log.js";
import { authorize, chargeQuota, limitBody, readJson, requireKey } from "../middleware.js";
import { requireModel, routeVersion, type ModelInfo, type VersionInfo } from "../model-registry.js";
import { describeRoute } from "../openapi.js";
import { ChannelPool, HttpChannelSource, type ChannelSource } from "../stream-client.js";
import { DEFAULT_WS_WINDOW, GenerateRequestSchema, ID_RE, parseGenerateInput, sseEvent, type GenerateInput, type StreamEvent } from "../stream-protocol.js";
import { sharedStoreFor } from "../redis.js";
import { messageSize, SOCKET_LEASE_MS, SocketLease, SocketRegistry, STREAM_LIMITS, Strikes } from "../stream-limits.js";
import { generativeSignature, versionTokenizer, type TokenizerInfo } from "../tokenizers.js";
import { bundleTokenizer } from "../generative-bundle.js";
import { formatTraceparent } from "../../protocol/trace-context.js";

export const MAX_GENERATE_BODY = 256 * 1024;
/** Tokens an SSE stream lets the region run ahead of the reader (beyond the socket's buffers). */
export const SSE_WINDOW = 32;
/** Requests one WebSocket may have running at once. */
export const MAX_STREAMS_PER_SOCKET = 64;
export const KEY_PROTOCOL_PREFIX = "mesh.key.";
export const JSON_PROTOCOL = "mesh.v1";
export const MSGPACK_PROTOCOL = "mesh.v1.msgpack";
/** This isolate's open generation sockets: the per-key and per-account caps count them. */
const sockets = new SocketRegistry();

export interface Target {
  model: ModelInfo;
  version: VersionInfo;
  /** An uploaded tokenizer; null when the version's bundle carries its own tokenizer.json. */
  tokenizer: TokenizerInfo | null;
}

/**
 * The model, version and tokenizer a generation runs on (no `ref`: the traffic split picks the
 * version); 4xx when it cannot be one. A bundle's own tokenizer.json comes before an uploaded one.
 */
export async function generationTarget(c: AppContext, key: KeyRecord, name: string, ref: string | undefined): Promise<Target> {
  const model = await requireModel(services(c), key.accountId, name);
  const { version } = routeVersion(model, ref, null);
  const { problem } = generativeSignature(version.signature);
  if (problem) throw new MeshError("bad_request", `model '${model.name}' version ${version.version} cannot generate text: ${problem}`);
  if (bundleTokenizer(version)) return { model, version, tokenizer: null };
  const tokenizer = await versionTokenizer(c.get("db"), model.id, version.version);
  if (!tokenizer) {
    throw new MeshError(
      "bad_request",
      `model '${model.name}' version ${version.version} has no tokenizer: upload its tokenizer.json with PUT /v1/models/${model.name}/versions/${version.version}/tokenizer, or put one in the version's bundle`,
    );
  }
  return { model, version, tokenizer };
}

function deadlineFrom(c: AppContext, startedAt: number): number {
  const max = c.get("config").inferTimeoutMs;
  const asked = Number(c.req.header("x-mesh-timeout-ms"));
  return startedAt + (Number.isFinite(asked) && asked > 0 ? Math.min(asked, max) : max);
}

function plan(c: AppContext, t: Target, input: GenerateInput, opts: { requestId: string; id: string; window: number; pool: ChannelSource }): GenerationPlan {
  const startedAt = Date.now();
  return {
    services: services(c),
    key: c.get("key"),
    model: t.model,
    version: t.version,
    tokenizer: t.tokenizer,
    requestId: opts.requestId,
    id: opts.id,
    prompt: input.prompt,
    ...(input.chat ? { chat: input.chat } : {}),
    params: input.params,
    window: opts.window,
    caller: callerLocation(c.req.raw, c.get("config").localMode),
    startedAt,
    deadline: deadlineFrom(c, startedAt),
    pool: opts.pool,
    traceparent: formatTraceparent(c.get("trace")),
  };
}

// ---------------------------------------------------------------------------------------------
// POST .../generate_stream (SSE) and POST .../generate

/** A generation opened over HTTP, before its first frame (see openHttpGeneration). */
export interface OpenedGeneration {
  input: GenerateInput;
  t: Target;
  release: () => void;
  requestId: string;
  pool: ChannelSource;
}

/**
 * What the HTTP generation routes (SSE, plain generate, the OpenAI surface) share before their
 * first frame: the model resolved, the request (`inputFor` may depend on the version: a chat
 * template), a place among the account's running streams (released by the caller when the
 * generation ends) and the quota charged.
 */
export async function openHttpGeneration(
  c: AppContext,
  name: string,
  ref: string | undefined,
  inputFor: (t: Target) => GenerateInput | Promise<GenerateInput>,
): Promise<OpenedGeneration> {
  const t = await generationTarget(c, c.get("key"), name, ref);
  const input = await inputFor(t);
  // Counted with the account's socket requests (its running cap) until it ends.
  const release = sockets.holdStream(c.get("key").accountId);
  try {
    await chargeQuota(c);
  } catch (err) {
    release();
    throw err;
  }
  const requestId = c.get("requestId");
  // One streamed HTTP request to the region per generation: no socket upgrade before it (see HttpRegionChannel).
  const pool = new HttpChannelSource(c.get("config"), callerLocation(c.req.raw, c.get("config").localMode).colo);
  return { input, t, release, requestId, pool };
}

/** The KServe routes' request: read before the model is looked up (a bad body is a 400 first). */
async function openKserve(c: AppContext): Promise<OpenedGeneration> {
  const input = parseGenerateInput(await readJson(c.req.raw));
  return openHttpGeneration(c, c.req.param("m")!, c.req.param("v"), () => input);
}

async function generateStream(c: AppContext) {
  return sseGeneration(c, await openKserve(c), sseEvent);
}

/**
 * Streams an opened generation as Server-Sent Events, each event written by `write` (which may
 * return "" to skip one). Credit follows the reader: the node runs at the pace the body is pulled.
 */
export async function sseGeneration(c: AppContext, opened: OpenedGeneration, write: (ev: StreamEvent) => string): Promise<Response> {
  const { input, t, release, requestId, pool } = opened;
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  // Credit granted to the region and not yet arrived: with the queue, never above the window.
  let outstanding = SSE_WINDOW;
  let closed = false;
  const refill = () => {
    const room = (controller.desiredSize ?? 0) - outstanding;
    if (room > 0 && !closed) {
      outstanding += room;
      gen.credit(room);
    }
  };
  const gen: Generation = new Generation(plan(c, t, input, { requestId, id: input.id ?? requestId, window: SSE_WINDOW, pool }), (ev) => {
    if (closed) return;
    if (ev.type === "token") outstanding = Math.max(0, outstanding - 1);
    const text = write(ev);
    if (text) controller.enqueue(encoder.encode(text));
    if (ev.type === "done" || ev.type === "error") {
      closed = true;
      controller.close();
      pool.closeAll();
      release();
    } else {
      refill();
    }
  });
  const body = new ReadableStream<Uint8Array>(
    {
      start: (ctrl) => {
        controller = ctrl;
      },
      pull: () => refill(),
      // The caller went away: stop the generation (closing the region socket cancels it too).
      cancel: () => {
        closed = true;
        gen.cancel();
        pool.closeAll();
        release();
      },
    },
    new CountQueuingStrategy({ highWaterMark: SSE_WINDOW }),
  );
  try {
    await gen.start();
  } catch (err) {
    pool.closeAll();
    release();
    throw err;
  }
  return new Response(body, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache, no-transform",
      "x-accel-buffering": "no",
      "x-mesh-version": String(t.version.version),
      ...(gen.region ? { "x-mesh-region": gen.region } : {}),
    },
  });
}

async function generateWhole(c: AppContext) {
  const opened = await openKserve(c);
  const { text, end } = await gatherGeneration(c, opened);
  return c.json({
    model_name: end.model_name,
    model_version: end.model_version,
    ...(opened.input.id !== undefined ? { id: opened.input.id } : {}),
    text_output: text,
    finish_reason: end.finish_reason,
    usage: { prompt_tokens: end.prompt_tokens, completion_tokens: end.tokens },
  });
}

/**
 * Runs an opened generation to its end at full speed and gives its whole text with its `done`
 * event (an error ends as a thrown MeshError); sets the x-mesh-* and Server-Timing headers.
 */
export async function gatherGeneration(c: AppContext, opened: OpenedGeneration): Promise<{ text: string; end: Extract<StreamEvent, { type: "done" }> }> {
  const { input, t, release, requestId, pool } = opened;
  const parts: string[] = [];
  let last: StreamEvent | null = null;
  const gen: Generation = new Generation(plan(c, t, input, { requestId, id: input.id ?? requestId, window: GENERATE_LIMITS.maxWindow, pool }), (ev) => {
    if (ev.type === "token") {
      parts.push(ev.text_output);
      gen.credit(1);
    } else if (ev.type === "done" || ev.type === "error") {
      last = ev;
    }
  });
  try {
    await gen.start();
    await gen.finished;
  } finally {
    pool.closeAll();
    release();
  }
  const end = last as StreamEvent | null;
  c.header("x-mesh-version", String(t.version.version));
  if (gen.region) c.header("x-mesh-region", gen.region);
  if (!end || end.type === "error") throw end ? new MeshError(end.code, end.error) : new MeshError("internal_error", "internal error");
  if (end.type !== "done") throw new MeshError("internal_error", "internal error");
  if (end.node) c.header("x-mesh-node", end.node);
  const tm = end.timing;
  c.header(
    "Server-Timing",
    [`queue;dur=${tm.queue_ms}`, `load;dur=${tm.load_ms}`, `ttft;dur=${tm.ttft_ms}`, `infer;dur=${tm.gen_ms}`, `total;dur=${tm.total_ms}`].join(", "),
  );
  return { text: parts.join(""), end };
}

// ---------------------------------------------------------------------------------------------
// GET .../stream (WebSocket)

function bearer(header: string | undefined): string | null {
  const m = header ? /^Bearer\s+(\S+)$/i.exec(header.trim()) : null;
  return m ? m[1]! : null;
}

async function streamSocket(c: AppContext) {
  if ((c.req.header("upgrade") ?? "").toLowerCase() !== "websocket") {
    throw new MeshError("bad_request", "this route is a WebSocket: connect with 'Upgrade: websocket' (or use POST .../generate_stream for Server-Sent Events)");
  }
  const offered = (c.req.header("sec-websocket-protocol") ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter(Boolean);
  const token = bearer(c.req.header("authorization")) ?? offered.find((p) => p.startsWith(KEY_PROTOCOL_PREFIX))?.slice(KEY_PROTOCOL_PREFIX.length) ?? null;
  if (!token) {
    throw new MeshError("unauthorized", `missing API key: send 'Authorization: Bearer <key>', or offer the subprotocol '${KEY_PROTOCOL_PREFIX}<key>' with '${JSON_PROTOCOL}'`);
  }
  const msgpack = c.req.query("format") === "msgpack" || offered.includes(MSGPACK_PROTOCOL);
  let chosen: string | null = null;
  if (offered.length > 0) {
    chosen = msgpack && offered.includes(MSGPACK_PROTOCOL) ? MSGPACK_PROTOCOL : offered.includes(JSON_PROTOCOL) ? JSON_PROTOCOL : offered.includes(MSGPACK_PROTOCOL) ? MSGPACK_PROTOCOL : null;
    if (!chosen) throw new MeshError("bad_request", `offer the subprotocol '${JSON_PROTOCOL}' (JSON frames) or '${MSGPACK_PROTOCOL}' (msgpack frames)`);
  }
  // Opening a socket counts against the key's rate limit like any call.
  const { key } = await authorize(c, token, "infer");
  // Refuse a socket for a model that cannot generate now, before upgrading (a clear 4xx).
  const name = c.req.param("m")!;
  const ref = c.req.param("v");
  await generationTarget(c, key, name, ref);
  // The socket caps: this isolate's count, then every isolate's (leases in Redis), then this
  // isolate's again (others may have opened while Redis answered); register at once after it.
  sockets.checkOpen(key.id, key.accountId);
  const lease = new SocketLease(sharedStoreFor(c.get("config")), key.id, key.accountId);
  await lease.acquire();
  try {
    sockets.checkOpen(key.id, key.accountId);
  } catch (err) {
    void lease.release();
    throw err;
  }
  const pair = new WebSocketPair();
  const client = pair[0];
  const server = pair[1];
  server.accept();
  // Binary (msgpack) messages as ArrayBuffers, not the standard's default Blobs.
  server.binaryType = "arraybuffer";
  new CallerSocket(c, server, msgpack ? "msgpack" : "json", token, name, ref, key, lease);
  return new Response(null, { status: 101, webSocket: client, headers: chosen ? { "sec-websocket-protocol": chosen } : {} });
}

interface Running {
  /** Null while the key, model and quota are being checked. */
  gen: Generation | null;
  /** A cancel came (one that came before the generation started is answered once it would start). */
  cancelled: boolean;
  /** Tokens sent to the caller, and acknowledged by it (cumulative). */
  sent: number;
  acked: number;
}

/** Requests that ended lately, kept so their late acks are recognised (and not charged). */
const RECENT_ENDED = 64;

/** One caller's socket: its requests by id, and its sockets to regions. */
class CallerSocket {
  private readonly running = new Map<string, Running>();
  private readonly recent = new Map<string, Running>();
  private readonly strikes = new Strikes();
  readonly keyId: string;
  readonly accountId: string;
  private readonly renewal: ReturnType<typeof setInterval>;
  private readonly pool: ChannelPool;
  private readonly codec = createCodec();
  private readonly decoder = new TextDecoder();
  private seq = 0;
  private open = true;

  constructor(
    private readonly c: AppContext,
    private readonly ws: WebSocket,
    private readonly framing: "json" | "msgpack",
    private readonly token: string,
    private readonly model: string,
    private readonly ref: string | undefined,
    key: KeyRecord,
    private readonly lease: SocketLease,
  ) {
    this.keyId = key.id;
    this.accountId = key.accountId;
    sockets.opened(this);
    this.renewal = setInterval(() => void lease.renew(), SOCKET_LEASE_MS / 2);
    this.pool = new ChannelPool(c.get("config"), callerLocation(c.req.raw, c.get("config").localMode).colo);
    ws.addEventListener("message", (e: MessageEvent) => this.onMessage(e.data));
    ws.addEventListener("close", () => this.onClose());
    ws.addEventListener("error", () => this.onClose());
  }

  private send(ev: StreamEvent): void {
    if (!this.open) return;
    try {
      if (this.framing === "msgpack") this.ws.send(this.codec.encode(ev));
      else this.ws.send(JSON.stringify(ev));
    } catch {
      this.onClose();
    }
  }

  /** Requests running (or being checked) here: the account's cap counts them. */
  get streams(): number {
    return this.running.size;
  }

  /** A refused message: answered, and a strike; past the strikes the socket is closed instead. */
  private refuse(id: string | null, err: unknown): void {
    if (!this.open) return;
    if (this.strikes.strike()) {
      log("warn", this.c.get("requestId"), "closing a stream socket that kept sending bad messages", { code: err instanceof MeshError ? err.code : "internal_error" });
      this.closeWith(1008, "too many bad messages");
      return;
    }
    this.error(id, err);
  }

  /**
   * Counts a message that acts on no paid request against the key's rate limit; `refusal` is
   * its answer when the limit allows it (a message past the limit is answered rate_limited).
   */
  private charge(id: string | null, refusal?: MeshError): void {
    authorize(this.c, this.token, "infer").then(
      () => {
        if (refusal) this.refuse(id, refusal);
      },
      (err: unknown) => {
        if (err instanceof MeshError && (err.code === "unauthorized" || err.code === "forbidden")) {
          this.error(id, err);
          this.closeWith(1008, "API key revoked");
        } else {
          this.refuse(id, err);
        }
      },
    );
  }

  private error(id: string | null, err: unknown): void {
    const e = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
    if (!(err instanceof MeshError)) log("error", this.c.get("requestId"), "stream request failed", { error: String(err) });
    this.send({ type: "error", id, error: e.message, code: e.code, requestId: this.c.get("requestId") });
  }

  private onMessage(data: unknown): void {
    if (!this.open) return;
    // Sized before parsing: nothing this big is parsed at all.
    const size = messageSize(data);
    if (size > MAX_GENERATE_BODY) {
      this.charge(null, new MeshError("payload_too_large", `a message is larger than ${MAX_GENERATE_BODY} bytes`));
      return;
    }
    let msg: unknown;
    try {
      msg = typeof data === "string" ? JSON.parse(data) : this.codec.decode(new Uint8Array(data as ArrayBuffer));
    } catch {
      this.charge(null, new MeshError("invalid_json", "a message is not valid JSON (text frames) or msgpack (binary frames)"));
      return;
    }
    const m = (typeof msg === "object" && msg !== null ? msg : {}) as Record<string, unknown>;
    const id = typeof m.id === "string" && ID_RE.test(m.id) ? m.id : null;
    if (m.type === "generate") {
      void this.generate(m, id).catch((err: unknown) => this.refuse(id, err));
      return;
    }
    if (size > STREAM_LIMITS.controlMessageBytes) {
      this.charge(id, new MeshError("payload_too_large", `a control message (ack, cancel) is larger than ${STREAM_LIMITS.controlMessageBytes} bytes`));
      return;
    }
    const r = id ? this.running.get(id) : undefined;
    if (m.type === "ack") {
      const n = m.tokens;
      const acked = id ? (r ?? this.recent.get(id)) : undefined;
      const upTo = acked && typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? Math.min(n, acked.sent) : -1;
      // Free: it acknowledges tokens delivered and not yet acknowledged (late ones included).
      if (acked && upTo > acked.acked) {
        if (acked.gen && r === acked) acked.gen.credit(upTo - acked.acked);
        acked.acked = upTo;
        return;
      }
      this.charge(id);
      return;
    }
    if (m.type === "cancel") {
      // Free once per running request; a repeat, or a cancel of nothing running, counts.
      if (!r || r.cancelled) return this.charge(id);
      r.cancelled = true;
      r.gen?.cancel();
      return;
    }
    this.charge(id, new MeshError("bad_request", "'type' must be generate, ack or cancel"));
  }

  /** A request left `running`: its late acks stay recognisable for a while. */
  private ended(id: string, r: Running): void {
    if (this.running.get(id) === r) this.running.delete(id);
    this.recent.delete(id);
    this.recent.set(id, r);
    if (this.recent.size > RECENT_ENDED) this.recent.delete(this.recent.keys().next().value!);
  }

  private async generate(m: Record<string, unknown>, id: string | null): Promise<void> {
    if (!id) throw new MeshError("bad_request", "a generate message needs an 'id' (1-128 characters of letters, digits, '.', '_', ':' or '-')");
    if (this.running.has(id)) {
      // Not deleted by the catch above (its placeholder check): the running one keeps its id.
      throw new MeshError("bad_request", `request '${id}' is still running on this socket`);
    }
    if (this.running.size >= MAX_STREAMS_PER_SOCKET) {
      throw new MeshError("rate_limited", `at most ${MAX_STREAMS_PER_SOCKET} requests may run on one socket`, { "retry-after": "1" });
    }
    sockets.checkStream(this.accountId);
    const window = m.window === undefined ? DEFAULT_WS_WINDOW : m.window;
    if (typeof window !== "number" || !Number.isSafeInteger(window) || window < 1 || window > GENERATE_LIMITS.maxWindow) {
      throw new MeshError("bad_request", `'window' must be an integer from 1 to ${GENERATE_LIMITS.maxWindow}`);
    }
    const input = parseGenerateInput({ text_input: m.text_input, parameters: m.parameters, id });
    // A placeholder holds the id while the key, model and quota are checked.
    const slot: Running = { gen: null, cancelled: false, sent: 0, acked: 0 };
    this.running.set(id, slot);
    // The key is checked again for every request, and each request counts against its rate
    // limit: a long-lived socket neither outlives a revocation nor escapes the limit.
    let key: KeyRecord;
    try {
      ({ key } = await authorize(this.c, this.token, "infer"));
    } catch (err) {
      this.running.delete(id);
      const e = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
      if (e.code === "unauthorized" || e.code === "forbidden") {
        this.error(id, e);
        this.closeWith(1008, "API key revoked");
        return;
      }
      throw e;
    }
    try {
      await this.run(id, slot, key, input, window);
    } catch (err) {
      // Its placeholder goes (a running request of the same id is another slot and stays).
      if (this.running.get(id) === slot) this.running.delete(id);
      throw err;
    }
  }

  /** The rest of a generate once its key checked: model, quota, then the region. */
  private async run(id: string, slot: Running, key: KeyRecord, input: GenerateInput, window: number): Promise<void> {
    const t = await generationTarget(this.c, key, this.model, this.ref);
    if (!this.open) return;
    if (slot.cancelled) {
      this.running.delete(id);
      this.send({
        type: "done",
        id,
        model_name: t.model.name,
        model_version: String(t.version.version),
        finish_reason: "cancelled",
        prompt_tokens: 0,
        tokens: 0,
        region: null,
        node: null,
        timing: { queue_ms: 0, load_ms: 0, ttft_ms: 0, gen_ms: 0, total_ms: 0 },
      });
      return;
    }
    await chargeQuota(this.c);
    const requestId = `${this.c.get("requestId")}.${++this.seq}`.slice(0, 64);
    const gen = new Generation(plan(this.c, t, input, { requestId, id, window, pool: this.pool }), (ev) => {
      if (ev.type === "token") slot.sent++;
      if (ev.type === "done" || ev.type === "error") this.ended(id, slot);
      this.send(ev);
    });
    slot.gen = gen;
    await gen.start();
  }

  private onClose(): void {
    this.closeWith(1000, "closed");
  }

  private closeWith(code: number, reason: string): void {
    if (!this.open) return;
    this.open = false;
    sockets.closed(this);
    clearInterval(this.renewal);
    void this.lease.release();
    for (const r of this.running.values()) r.gen?.cancel();
    this.running.clear();
    this.recent.clear();
    // Closing the region sockets cancels whatever is still running there.
    this.pool.closeAll();
    try {
      this.ws.close(code, reason);
    } catch {
      /* already closed */
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Schemas and registration

const GenerateResponseSchema = z.object({
  model_name: z.string(),
  model_version: z.string(),
  id: z.string().optional(),
  text_output: z.string(),
  finish_reason: z.enum(["length", "stop", "cancelled"]),
  usage: z.object({ prompt_tokens: z.number().int(), completion_tokens: z.number().int() }),
});

const GENERATE_ERRORS = [
  "bad_request",
  "model_not_found",
  "version_not_found",
  "quota_exceeded",
  "inference_failed",
  "region_error",
  "node_error",
  "no_region_available",
  "no_capacity",
  "deadline_exceeded",
] as const;

function describeStream(base: string, versioned: boolean): void {
  const params: Record<string, string> = { m: "Model name (a generative model with a tokenizer)." };
  if (versioned) params.v = "A version number, an alias or `latest`.";
  describeRoute({
    method: "get",
    path: `${base}/stream`,
    tag: "Generation",
    auth: "infer",
    summary: "Token stream over a WebSocket (many requests per socket)",
    description:
      "Send `{\"type\":\"generate\",\"id\",\"text_input\",\"parameters\",\"window\"}`; receive `progress`, `token` (one per token), then `done` or `error`, each naming its `id`. " +
      "Acknowledge tokens with `{\"type\":\"ack\",\"id\",\"tokens\":n}` (cumulative) to let more than `window` (default 256) be produced; `{\"type\":\"cancel\",\"id\"}` stops one. " +
      "Browsers authenticate with the subprotocol `mesh.key.<key>` next to `mesh.v1`; `mesh.v1.msgpack` (or `?format=msgpack`) switches to msgpack binary frames.",
    params,
    responses: { 101: { description: "Switching protocols: the socket is open." } },
    errors: [...GENERATE_ERRORS],
  });
  describeRoute({
    method: "post",
    path: `${base}/generate_stream`,
    tag: "Generation",
    auth: "infer",
    summary: "Token stream as Server-Sent Events",
    description: "The same events as the WebSocket, one request per call: `event: token` lines with JSON data, ending with `done` or `error`. The node runs at the reader's pace.",
    params,
    headers: { "x-mesh-timeout-ms": "Deadline for the first token (default and maximum INFER_TIMEOUT_MS)." },
    body: { schema: GenerateRequestSchema, maxBytes: MAX_GENERATE_BODY, example: { text_input: "The river", parameters: { max_tokens: 40, temperature: 0.8, seed: 1 } } },
    responses: { 200: { description: "An event stream.", contentType: "text/event-stream" } },
    errors: [...GENERATE_ERRORS],
  });
  describeRoute({
    method: "post",
    path: `${base}/generate`,
    tag: "Generation",
    auth: "infer",
    summary: "Generate text (KServe generate extension): the whole text at once",
    params,
    headers: { "x-mesh-timeout-ms": "Deadline for the first token (default and maximum INFER_TIMEOUT_MS)." },
    body: { schema: GenerateRequestSchema, maxBytes: MAX_GENERATE_BODY, example: { text_input: "The river", parameters: { max_tokens: 40, temperature: 0, seed: 1 } } },
    responses: {
      200: {
        description: "The generated text.",
        schema: GenerateResponseSchema,
        headers: { "x-mesh-region": "The region that ran it.", "x-mesh-node": "The node.", "x-mesh-version": "The version.", "server-timing": "queue, load, ttft, infer, total (ms)." },
      },
    },
    errors: [...GENERATE_ERRORS],
  });
}

export function registerV2Stream(app: Hono<AppEnv>): void {
  const auth = requireKey("infer");
  for (const base of ["/v2/models/:m", "/v2/models/:m/versions/:v"]) {
    app.get(`${base}/stream`, streamSocket);
    app.post(`${base}/generate_stream`, auth, limitBody(MAX_GENERATE_BODY), generateStream);
    app.post(`${base}/generate`, auth, limitBody(MAX_GENERATE_BODY), generateWhole);
  }
  describeStream("/v2/models/{m}", false);
  describeStream("/v2/models/{m}/versions/{v}", true);
}
