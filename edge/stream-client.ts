// The edge's stream sockets to regions: one WebSocket per (caller connection, region), opened
// with a signed upgrade (`GET /v1/streams`), carrying msgpack frames of many generations, each
// under an id of the edge's choosing. Why a socket and not a streamed HTTP body: the edge has
// to tell the region how much its reader has taken (credit), and cancel, while the tokens flow
// the other way; over one socket both directions are frames, so a stalled reader stops the
// node after its window instead of after megabytes of TCP buffers, and a long generation is
// one subrequest, not one per credit grant.
//
// Authority: the upgrade is signed with the region's secret, and so is every generate request
// on the socket (its own grant over the request's bytes: account, model, sha256, URLs, deadline,
// nonce), so an open socket by itself lets nobody run anything.
//
// Local mode: the configured distance to the region becomes real delay on this hop (the
// upgrade costs a round trip, each frame half of one each way), as on the /v1/infer hop.
//
// Liveness: a socket whose region went silent (a half-open TCP connection, a stopped router)
// would leave its streams waiting for tokens forever, since nothing on this side times out once
// a stream has heard from the region. A Worker cannot send or see WebSocket pings, so the edge
// sends a `ping` frame every PING_INTERVAL_MS and the region answers `pong`; any frame counts as
// an answer. Once PING_MISSES pings in a row go unanswered (10 to 15 s of silence; measured
// 14.5 s from a router frozen mid-generation to the caller's error) the socket is shut, and its
// streams fail with a region_error that says why (or move to the next region if they heard
// nothing yet), instead of waiting for tokens that never come.
//
// Wire versions (protocol/wire-version.ts): the upgrade and every streamed request carry the
// edge's announcement (`x-mesh-wire`), and the 101 the region's. The edge batches its frames
// only to a region that announced `batch` (a router from before versions announces nothing and
// reads none), and leaves a region it shares no version with (close 4426, then the next region).

import { createCodec, type Codec } from "../protocol/codec.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import { FRAME_STREAM_CONTENT_TYPE, FrameSplitter } from "../protocol/frame-stream.js";
import { ERROR_STATUS, MeshError, type ErrorCode } from "../protocol/errors.js";
import { CLOSE, GENERATE_GRANT_METHOD, parseRegionToEdge, unbatch, type EdgeToRegion, type RegionGenerateRequest, type RegionToEdge } from "../protocol/messages.js";
import { signRequest } from "../protocol/signing.js";
import { signingSecret, type EdgeConfig, type RegionConfig } from "./env.js";
import { formatWireHeader, LEGACY_WIRE, localWire, negotiate, parseWireHeader, WIRE_HEADER, type Negotiation, type WireAgreement } from "../protocol/wire-version.js";

/** Per config (one per isolate): the header, written once rather than on every call. */
const wireHeaders = new WeakMap<EdgeConfig, string>();

/** The edge's announcement, as the header writes it. */
export function edgeWireHeader(config: EdgeConfig): string {
  let header = wireHeaders.get(config);
  if (header === undefined) wireHeaders.set(config, (header = formatWireHeader(localWire(config.wireFeatures))));
  return header;
}

export const REGION_STREAM_PATH = "/v1/streams";
const OPEN_TIMEOUT_MS = 5_000;
/** How often the edge asks a region's stream socket whether it is still there. */
export const PING_INTERVAL_MS = 5_000;
/** Ping intervals in a row with no frame from the region before the socket counts as dead. */
export const PING_MISSES = 2;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type FrameHandler = (frame: RegionToEdge) => void;

/** What a Generation needs of its way to a region: a stream socket, or one streamed HTTP request. */
export interface StreamChannel {
  readonly region: string;
  readonly open: boolean;
  register(sid: string, handler: FrameHandler): void;
  unregister(sid: string): void;
  sign(req: RegionGenerateRequest): Promise<{ req: Uint8Array; grant: Record<string, string> }>;
  send(frame: EdgeToRegion): void;
  onClose(listener: (reason: string) => void): void;
  close(): void;
}

/** Where a Generation gets its channel to a region from. */
export interface ChannelSource {
  get(region: RegionConfig, deadline: number): Promise<StreamChannel>;
  closeAll(): void;
}

/** A generate request as bytes with its own grant, signed now (fresh, single-use). */
async function signGenerate(codec: Codec, secret: string, req: RegionGenerateRequest): Promise<{ req: Uint8Array; grant: Record<string, string> }> {
  const bytes = codec.encode(req);
  return { req: bytes, grant: await signRequest(secret, GENERATE_GRANT_METHOD, REGION_STREAM_PATH, bytes) };
}

/**
 * The lifecycle both channels share, one implementation: open until shut, once, for one reason
 * that every close listener hears; shut when PING_MISSES ping intervals in a row pass with no
 * frame from the region. In local mode everything the region says (frames, and the close)
 * arrives the simulated one-way delay late, so frames sent before a close land before it.
 */
abstract class ChannelLifecycle {
  private closeListeners: ((reason: string) => void)[] = [];
  open = true;
  /** Ping intervals since the region last sent anything. */
  protected missed = 0;
  private pinger: ReturnType<typeof setInterval> | null = null;

  constructor(
    readonly region: string,
    /** This region's secret: signs each request's grant. */
    private readonly secret: string,
    /** Simulated one-way delay, ms (local mode). */
    protected readonly delayMs: number,
    protected readonly codec: Codec = createCodec(),
  ) {}

  /** A generate request as bytes with its own grant, signed now (fresh, single-use), for a generate frame. */
  sign(req: RegionGenerateRequest): Promise<{ req: Uint8Array; grant: Record<string, string> }> {
    return signGenerate(this.codec, this.secret, req);
  }

  onClose(listener: (reason: string) => void): void {
    if (!this.open) listener("closed");
    else this.closeListeners.push(listener);
  }

  /** Closes the channel; the region cancels every generation still on it. */
  close(): void {
    this.shutdown("closed by the edge");
  }

  /** Runs `f` after the simulated one-way delay (local mode), at once otherwise. */
  protected later(f: () => void): void {
    if (this.delayMs > 0) setTimeout(f, this.delayMs);
    else f();
  }

  /**
   * Counts ping intervals from now on (a frame from the region resets the count) and shuts the
   * channel once PING_MISSES pass silent; `ping` asks the region each interval (a socket: a
   * streamed response's pongs come unasked).
   */
  protected watchLiveness(on: string, ping?: () => void): void {
    if (!this.open) return;
    this.pinger = setInterval(() => {
      if (this.missed >= PING_MISSES) {
        this.shutdown(`region ${this.region} stopped answering on the ${on} (${this.missed} ping intervals silent)`);
        return;
      }
      this.missed++;
      ping?.();
    }, PING_INTERVAL_MS);
  }

  protected shutdown(reason: string): void {
    if (!this.open) return;
    this.open = false;
    if (this.pinger) clearInterval(this.pinger);
    this.release();
    this.later(() => {
      const listeners = this.closeListeners;
      this.closeListeners = [];
      for (const l of listeners) l(reason);
    });
  }

  /** Lets go of what carries the channel (the socket, the request); called once, from shutdown. */
  protected abstract release(): void;
}

export class RegionChannel extends ChannelLifecycle implements StreamChannel {
  private readonly handlers = new Map<string, FrameHandler>();

  private constructor(
    region: string,
    secret: string,
    private readonly ws: WebSocket,
    delayMs: number,
    /** What the upgrade agreed on: batches go to the region only if it announced them. */
    wire: WireAgreement,
    /** The edge announced `batch`: a batch from the region is read, not refused. */
    takesBatch: boolean,
  ) {
    super(region, secret, delayMs);
    this.out.batching = wire.features.has("batch");
    ws.addEventListener("message", (e: MessageEvent) => {
      let frames: RegionToEdge[];
      try {
        const data = e.data;
        if (typeof data === "string") throw new Error("text frame");
        // One message may be a batch (every stream's token of a node step), checked whole first.
        frames = unbatch(this.codec.decode(new Uint8Array(data as ArrayBuffer)), parseRegionToEdge, takesBatch);
      } catch (err) {
        this.shutdown(`bad frame from region ${region}: ${(err as Error).message}`);
        return;
      }
      this.missed = 0;
      // One delay (local mode) for the message, not a timer per frame.
      this.later(() => {
        for (const f of frames) if (f.t !== "pong") this.handlers.get(f.sid)?.(f);
      });
    });
    ws.addEventListener("close", (e: CloseEvent) => this.shutdown(`region ${region} closed the stream socket (${e.code})`));
    ws.addEventListener("error", () => this.shutdown(`stream socket to region ${region} failed`));
    this.watchLiveness("stream socket", () => this.send({ t: "ping" }));
  }

  /** Opens a signed stream socket to `region`; throws MeshError when it cannot be had. */
  static async open(config: EdgeConfig, region: RegionConfig, colo: string, deadline: number): Promise<RegionChannel> {
    const delayMs = config.localMode ? (config.simulatedRtt[colo]?.[region.name] ?? 0) / 2 : 0;
    const secret = signingSecret(config, region.name);
    const headers = await signRequest(secret, "GET", REGION_STREAM_PATH);
    if (delayMs > 0) await sleep(delayMs);
    let res: Response;
    // The bound covers the handshake only: a signal that fired later would abort the socket
    // itself (AbortSignal.timeout would cut every stream socket after OPEN_TIMEOUT_MS).
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), Math.max(1, Math.min(OPEN_TIMEOUT_MS, deadline - Date.now())));
    try {
      res = await fetch(region.url + REGION_STREAM_PATH, { headers: { ...headers, upgrade: "websocket", [WIRE_HEADER]: edgeWireHeader(config) }, signal: abort.signal });
    } catch (err) {
      throw new MeshError("region_error", `region ${region.name} unreachable (${(err as Error).name})`);
    } finally {
      clearTimeout(timer);
    }
    if (delayMs > 0) await sleep(delayMs);
    const ws = res.webSocket;
    if (!ws) {
      // 503: draining; 426: no wire version in common; anything else: the region refused
      // (misconfigured secret, no such route).
      const code = res.status === 503 ? "no_capacity" : res.status === 426 ? "wire_version_unsupported" : "region_error";
      throw new MeshError(code, `region ${region.name} refused the stream socket (${res.status}${code === "wire_version_unsupported" ? `: ${(await refusalEnvelope(res))?.message ?? `status ${res.status}`}` : ""})`);
    }
    ws.accept();
    // The region's announcement (none: a router from before versions, which takes no batch).
    let agreed: Negotiation;
    try {
      agreed = negotiate(localWire(config.wireFeatures), parseWireHeader(res.headers.get(WIRE_HEADER)), { local: "edge", peer: "region" });
    } catch (err) {
      agreed = { ok: false, peer: LEGACY_WIRE, message: `region ${region.name} sent a malformed ${WIRE_HEADER}: ${(err as Error).message}` };
    }
    if (!agreed.ok) {
      ws.close(CLOSE.wireVersionUnsupported, agreed.message.slice(0, 123));
      throw new MeshError("wire_version_unsupported", `region ${region.name}: ${agreed.message}`);
    }
    // Newer compatibility dates deliver binary messages as Blobs by default (the standard).
    ws.binaryType = "arraybuffer";
    return new RegionChannel(region.name, secret, ws, delayMs, agreed, config.wireFeatures.includes("batch"));
  }

  register(sid: string, handler: FrameHandler): void {
    this.handlers.set(sid, handler);
  }

  unregister(sid: string): void {
    this.handlers.delete(sid);
  }

  get streams(): number {
    return this.handlers.size;
  }

  /**
   * Frames to the region, coalesced per turn (protocol/frame-batch.ts): the credit grants of a
   * batch of tokens taken in one turn leave as one message.
   */
  private readonly out = new FrameBatcher<EdgeToRegion>(this.codec.encode, (bytes) =>
    this.later(() => {
      try {
        if (this.open) this.ws.send(bytes);
      } catch (err) {
        this.shutdown(`write to region ${this.region} failed: ${(err as Error).message}`);
      }
    }),
  );

  send(frame: EdgeToRegion): void {
    if (this.open) this.out.push(frame);
  }

  protected override release(): void {
    try {
      this.ws.close(1000, "done");
    } catch {
      /* already closed */
    }
  }
}

/** A caller connection's sockets to regions: opened on first use, shared by its generations. */
export class ChannelPool implements ChannelSource {
  private readonly channels = new Map<string, Promise<RegionChannel>>();
  private closed = false;

  constructor(
    private readonly config: EdgeConfig,
    private readonly colo: string,
  ) {}

  get(region: RegionConfig, deadline: number): Promise<RegionChannel> {
    if (this.closed) return Promise.reject(new MeshError("cancelled", "the caller went away"));
    const existing = this.channels.get(region.name);
    if (existing) {
      return existing.then((ch) => (ch.open ? ch : this.reopen(region, deadline)));
    }
    return this.reopen(region, deadline);
  }

  private reopen(region: RegionConfig, deadline: number): Promise<RegionChannel> {
    const p = RegionChannel.open(this.config, region, this.colo, deadline);
    this.channels.set(region.name, p);
    p.then(
      (ch) => {
        if (this.closed) ch.close();
        ch.onClose(() => {
          if (this.channels.get(region.name) === p) this.channels.delete(region.name);
        });
      },
      () => {
        if (this.channels.get(region.name) === p) this.channels.delete(region.name);
      },
    );
    return p;
  }

  closeAll(): void {
    this.closed = true;
    for (const p of this.channels.values()) p.then((ch) => ch.close(), () => undefined);
    this.channels.clear();
  }
}

/**
 * One generation over one streamed HTTP request (`POST /v1/streams`, for HTTP callers: SSE, the
 * OpenAI surface, plain generate). A WebSocket would be this request's alone anyway (a Worker
 * cannot share one across requests), and its upgrade is a round trip and a signature more
 * before the request can go out; here the signed generate frame is the request's body, and
 * the region's frames come back length-prefixed in the response body, read as they arrive.
 *
 * Credit: nothing goes up once the request is sent. The region keeps the node's credit topped
 * up while its response drains; this side reads the response only while the generation has
 * credit (the caller's window, as on a socket), so a caller that stops reading stops the reads
 * here, TCP backs up to the region, and the region stops granting the node credit. Cancel
 * aborts the request (the region cancels the generation when it sees the request close).
 * Liveness: the region sends `pong` frames every ping interval; PING_MISSES intervals with no
 * frame at all shut the channel, as for a socket.
 */
export class HttpRegionChannel extends ChannelLifecycle implements StreamChannel {
  private handler: FrameHandler | null = null;
  private sid: string | null = null;
  private readonly abort = new AbortController();
  /** Tokens the reader may still be sent; reads stop at 0 until credit comes. */
  private credit = 0;
  private wake: (() => void) | null = null;
  /** The region's last frame (done or error) came: all that is left of the response is its end. */
  private final = false;
  private drainTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    region: string,
    secret: string,
    private readonly url: string,
    delayMs: number,
    /** The edge's announcement (edgeWireHeader): a region that shares no version refuses the request (426). */
    private readonly wireHeader: string,
  ) {
    super(region, secret, delayMs, httpCodec());
  }

  register(sid: string, handler: FrameHandler): void {
    this.sid = sid;
    this.handler = handler;
  }

  unregister(sid: string): void {
    if (this.sid === sid) this.handler = null;
  }

  send(frame: EdgeToRegion): void {
    if (!this.open) return;
    if (frame.t === "generate") {
      this.credit = frame.window;
      void this.run(frame);
    } else if (frame.t === "credit") {
      this.credit += frame.n;
      this.wake?.();
    } else if (frame.t === "cancel") {
      this.shutdown("cancelled by the edge");
    }
  }

  private async run(frame: Extract<EdgeToRegion, { t: "generate" }>): Promise<void> {
    if (this.delayMs > 0) await sleep(this.delayMs);
    let res: Response;
    try {
      res = await fetch(this.url + REGION_STREAM_PATH, {
        method: "POST",
        headers: { "content-type": FRAME_STREAM_CONTENT_TYPE, [WIRE_HEADER]: this.wireHeader },
        body: this.codec.encode(frame),
        signal: this.abort.signal,
      });
    } catch (err) {
      this.shutdown(`region ${this.region} unreachable (${(err as Error).name})`);
      return;
    }
    if (!this.open) return void res.body?.cancel().catch(() => undefined);
    if (res.status !== 200 || !res.body) {
      // The router answers a refusal with the error envelope: its code is what the edge tells.
      const refusal = await refusalEnvelope(res);
      const code: ErrorCode = refusal?.code ?? (res.status === 503 ? "no_capacity" : "region_error");
      const message = refusal?.message ?? `region ${this.region} refused the streamed generation (${res.status})`;
      if (this.delayMs > 0) await sleep(this.delayMs);
      this.deliver({ t: "error", sid: frame.sid, code, message });
      this.shutdown(message);
      return;
    }
    this.watchLiveness("stream");
    const reader = res.body.getReader();
    const splitter = new FrameSplitter();
    try {
      for (;;) {
        // The caller's window: no credit, no reading (TCP tells the region to stop).
        while (this.credit <= 0 && this.open) await new Promise<void>((r) => (this.wake = r));
        this.wake = null;
        // Closed after the last frame: the response's end is still read (see release).
        if (!this.open && !this.final) return;
        const { value, done } = await reader.read();
        if (done) break;
        if (!this.open) continue;
        // With no simulated delay each frame goes straight to the generation: a chunk is
        // usually one token, and a closure and an array per chunk were a share of the isolate's
        // time per token (docs/benchmarks.md, SSE streams).
        const frames: RegionToEdge[] | null = this.delayMs > 0 ? [] : null;
        for (const bytes of splitter.push(value)) {
          const f = parseRegionToEdge(this.codec.decode(bytes));
          this.missed = 0;
          if (f.t === "pong") continue;
          if (f.t === "token") this.credit--;
          if (f.t === "done" || f.t === "error") this.final = true;
          if (frames) frames.push(f);
          else this.deliver(f);
        }
        // One delay (local mode) for what the chunk held, not a timer per frame.
        if (frames && frames.length > 0) this.later(() => frames.forEach((f) => this.deliver(f)));
      }
      if (splitter.pending > 0) throw new Error("the stream ended inside a frame");
      this.shutdown(`region ${this.region} ended the stream`);
    } catch (err) {
      this.shutdown(this.open ? `bad stream from region ${this.region}: ${(err as Error).message}` : "closed");
    } finally {
      if (this.drainTimer) clearTimeout(this.drainTimer);
    }
  }

  private deliver(f: RegionToEdge): void {
    if (f.t !== "pong" && f.sid === this.sid) this.handler?.(f);
  }

  protected override release(): void {
    // Closed after the region's last frame (the generation ended, so its Generation lets go at
    // once): only the response's end is left to come. Aborting threw the connection away, so
    // every HTTP generation paid a new TCP connection to the router (and the router a new
    // accept) before its request could go; reading the end lets the runtime keep the
    // connection for the next one. A region that does not end the response soon is cut.
    if (this.final) this.drainTimer = setTimeout(() => this.abort.abort(), FINAL_DRAIN_MS);
    else this.abort.abort();
    this.wake?.();
  }
}

/**
 * The isolate's one codec for HTTP generations: a Packr and an Unpackr made per generation were a
 * measurable part of each stream's start, and neither keeps anything between calls that one
 * generation could see of another's (no records; each encode and decode is synchronous).
 */
let sharedHttpCodec: Codec | null = null;
const httpCodec = (): Codec => (sharedHttpCodec ??= createCodec());

/** How long the end of a response may take after the region's last frame before it is cut. */
const FINAL_DRAIN_MS = 1_000;

/** A refusal's error envelope is small; more than this is not one, and is not read. */
const REFUSAL_MAX_BYTES = 16 * 1024;

/** A refusal's error envelope (the router's code and message), or null when the body is not one. */
async function refusalEnvelope(res: Response): Promise<{ code: ErrorCode; message: string } | null> {
  try {
    const body = JSON.parse(await boundedText(res, REFUSAL_MAX_BYTES)) as { code?: unknown; error?: unknown };
    if (body && typeof body.error === "string" && typeof body.code === "string" && body.code in ERROR_STATUS) return { code: body.code as ErrorCode, message: body.error.slice(0, 500) };
  } catch {
    /* not the envelope */
  }
  return null;
}

/** A response body as text, reading no more than `max` bytes (throws past it). */
async function boundedText(res: Response, max: number): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw new Error("refusal body too large");
    }
    chunks.push(value);
  }
  const decoder = new TextDecoder();
  return chunks.map((c, i) => decoder.decode(c, { stream: i < chunks.length - 1 })).join("");
}

/** HTTP generations' channels: a fresh streamed request per generation, nothing to open first. */
export class HttpChannelSource implements ChannelSource {
  private readonly channels = new Set<HttpRegionChannel>();
  private closed = false;

  constructor(
    private readonly config: EdgeConfig,
    private readonly colo: string,
  ) {}

  async get(region: RegionConfig): Promise<StreamChannel> {
    if (this.closed) throw new MeshError("cancelled", "the caller went away");
    const delayMs = this.config.localMode ? (this.config.simulatedRtt[this.colo]?.[region.name] ?? 0) / 2 : 0;
    const ch = new HttpRegionChannel(region.name, signingSecret(this.config, region.name), region.url, delayMs, edgeWireHeader(this.config));
    this.channels.add(ch);
    ch.onClose(() => this.channels.delete(ch));
    return ch;
  }

  closeAll(): void {
    this.closed = true;
    for (const ch of this.channels) ch.close();
    this.channels.clear();
  }
}
