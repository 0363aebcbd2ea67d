// The router's stream relay: the edge's stream sockets (`GET /v1/streams`, signed at the
// upgrade) carry many generations each, named by the edge (`sid`). A generation waits in the
// scheduler like a call (with progress events while it waits), then runs on a node, and every
// token is passed on as its own frame the moment it arrives: nothing is held past the turn of
// the event loop it came in, whose frames for one socket leave as one message (a batch,
// protocol/frame-batch.ts: a node's step brings a token for each of its streams at once), when
// the edge announced `batch` at the upgrade (protocol/wire-version.ts); to an edge that did not,
// every frame goes alone, as it did before batches.
//
// Flow control is end to end and the router holds no tokens: the edge grants credit as its
// reader takes tokens, the router passes each grant on to the node, and the node sends a token
// only against credit. So what a stream can have in flight anywhere between the node and the
// reader is its window, and a reader that stops stops the node's loop. A stream whose reader
// takes nothing for `stallTimeoutMs` is cancelled, so a stuck reader cannot hold a slot forever.
// Cancel frames and the edge's socket closing cancel the generation on the node.
// While other accounts' streams wait for a slot, a stalled stream of an account at or over its
// fair share is ended sooner, after `stallWhenContendedMs` (the scheduler says when).
//
// The signed upgrade only opens the socket: each generate frame carries its own grant, checked
// (checkGrant) before its request is even decoded; a frame that fails gets an `error` frame
// and the socket stays open. A stream's frames are handled in arrival order (a credit or cancel
// waits for its generate's grant check); different streams' grant checks run side by side.
//
// Liveness both ways: the router pings each edge socket (WebSocket pings, which workerd answers
// by itself) every `pingIntervalMs` and terminates one that answered neither of its last two
// pings with a pong or any frame, so a half-open socket's streams are cancelled on their nodes
// instead of holding slots until their stall bound. The edge cannot see WebSocket pings, so it
// sends `ping` frames, answered here at once with `pong` (ahead of frames waiting for grant checks).
//
// Streamed HTTP (`POST /v1/streams`, acceptHttp): one generation per request, its body the same
// signed generate frame, its response body the same frames, length-prefixed
// (protocol/frame-stream.ts). The edge uses it for HTTP callers (SSE, the OpenAI surface): a
// Worker cannot share a socket across requests, so each of those paid a WebSocket upgrade (a
// round trip, a signature, a socket) before its request went out. With no frames the other way,
// credit comes from the response itself: the router tops the node's credit up to the window
// while the response's buffer is empty, and stops when it backs up (TCP backpressure from the
// edge, which stops reading when its caller does), so a stalled reader still stops the node
// and the stall bound still ends the stream. Cancel is the edge closing the request. A `pong`
// frame goes out every ping interval so the edge can tell a silent region from a slow model.

import type { ServerResponse } from "node:http";
import type { WebSocket } from "ws";
import { createCodec } from "../protocol/codec.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import { FRAME_STREAM_CONTENT_TYPE, frameBytes } from "../protocol/frame-stream.js";
import { MeshError, type ErrorCode } from "../protocol/errors.js";
import type { Logger } from "../protocol/log.js";
import {
  CLOSE,
  GENERATE_LIMITS,
  parseEdgeToRegion,
  unbatch,
  type EdgeToRegion,
  type RegionGenerateRequest,
  type RegionToEdge,
} from "../protocol/messages.js";
import type { NodeCallError, NodeLink, NodeStream } from "./node-link.js";
import type { Scheduler, StreamProgress } from "./scheduler.js";
import type { RouterMetrics } from "./metrics.js";
import { formatTraceparent, spanFrom } from "../protocol/trace-context.js";
import { LEGACY_AGREEMENT, WIRE_FEATURES, type WireAgreement, type WireFeature } from "../protocol/wire-version.js";

export const STREAM_SOCKET_PATH = "/v1/streams";
/** The edge's stream frames (a generate carries a prompt at most), on a socket or as a POST body. */
export const STREAM_FRAME_BYTES = 1024 * 1024;

/** The request a generate frame's grant authorizes; throws MeshError when it does not check. */
export type GrantChecker = (frame: Extract<EdgeToRegion, { t: "generate" }>) => Promise<RegionGenerateRequest>;
/** A generate frame whose grant checked. */
type AuthorizedFrame = Exclude<EdgeToRegion, { t: "generate" }> | { t: "generate"; sid: string; req: RegionGenerateRequest; window: number };

export interface StreamHubConfig {
  /** A stream whose reader takes no token for this long is cancelled. */
  stallTimeoutMs: number;
  /** ... or for this long, while other accounts' streams wait and its account is at its share. */
  stallWhenContendedMs?: number;
  /** Streams one edge socket may hold open at once. */
  maxStreamsPerSocket: number;
  /** An edge socket with more than this waiting to be written is cut (it cannot be ours). */
  maxBufferedBytes: number;
  /** How often each edge socket is pinged; one silent for PING_MISSES intervals is terminated. */
  pingIntervalMs?: number;
  /** The wire features this router announces and takes (MESH_WIRE_FEATURES); default all. */
  wireFeatures?: readonly WireFeature[];
}

const DEFAULT_PING_INTERVAL_MS = 5_000;
/** Silent ping intervals in a row before an edge socket is terminated (one late pong is not death). */
const PING_MISSES = 2;

export interface StreamHubStats {
  sockets: number;
  queued: number;
  running: number;
  /** Bytes waiting in the edge sockets' send buffers. */
  bufferedBytes: number;
  tokensRelayed: number;
}

/** Where an EdgeSocket's frames go: a stream socket, or one streamed HTTP response. */
interface EdgeLink {
  readonly open: boolean;
  /** Bytes written and not yet handed to the kernel. */
  readonly bufferedAmount: number;
  /** Past its buffer's high-water mark: what waits is not being taken (a drain follows). */
  readonly congested: boolean;
  write(bytes: Uint8Array): void;
  close(code: number, reason: string): void;
  terminate(): void;
}

function socketLink(ws: WebSocket): EdgeLink {
  return {
    get open() {
      return ws.readyState === ws.OPEN;
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
    get congested() {
      return ws.bufferedAmount > 0;
    },
    write: (bytes) => ws.send(bytes, { binary: true }),
    close: (code, reason) => ws.close(code, reason),
    terminate: () => ws.terminate(),
  };
}

function responseLink(res: ServerResponse): EdgeLink {
  return {
    get open() {
      return !res.destroyed && !res.writableEnded;
    },
    get bufferedAmount() {
      return res.writableLength;
    },
    get congested() {
      return res.writableNeedDrain;
    },
    write: (bytes) => void res.write(frameBytes(bytes)),
    close: () => res.end(),
    terminate: () => res.destroy(),
  };
}

class RelayStream {
  state: "queued" | "running" | "finished" = "queued";
  /** Credit the edge granted before a node took the stream. */
  pendingCredit: number;
  /** Credit the node has left, as the router counts it (0: the node is waiting for the reader). */
  nodeCredit = 0;
  /** No more frames to the edge: it cancelled, the socket closed, or an error was sent. */
  silent = false;
  tokens = 0;
  attempts = 0;
  readonly excluded = new Set<string>();
  ticket: { cancel(): void } | null = null;
  node: NodeLink | null = null;
  nodeStream: NodeStream | null = null;
  queueMs = 0;
  loadMs = 0;
  firstTokenAt = 0;
  timer: ReturnType<typeof setTimeout> | null = null;
  /** When the node ran out of credit (the reader stopped taking tokens). */
  stalledSince = 0;
  /** The scheduler asked it to give its slot to another account (counted until it ends). */
  yielded = false;
  /** The router's span for this stream (W3C traceparent), under the edge's when it sent one. */
  readonly traceparent: string;

  constructor(
    readonly sid: string,
    readonly req: RegionGenerateRequest,
    /** The credit window the edge asked for (what self-credit keeps the node's credit at). */
    readonly window: number,
    readonly arrivedAt: number,
  ) {
    this.pendingCredit = window;
    this.traceparent = formatTraceparent(spanFrom(req.traceparent));
  }
}

export class StreamHub {
  private readonly sockets = new Set<EdgeSocket>();
  tokensRelayed = 0;
  /** Where stream starts, outcomes and timings are counted (set by the server). */
  metrics: RouterMetrics | null = null;
  /** The router announced `batch` (MESH_WIRE_FEATURES): a batch from the edge is read, not refused. */
  readonly takesBatch: boolean;

  constructor(
    readonly scheduler: Scheduler,
    readonly config: StreamHubConfig,
    readonly log: Logger,
    readonly checkGrant: GrantChecker,
  ) {
    this.takesBatch = (config.wireFeatures ?? WIRE_FEATURES).includes("batch");
  }

  /** An edge stream socket, with what its upgrade agreed on (upgrades.ts). */
  accept(ws: WebSocket, wire: WireAgreement = LEGACY_AGREEMENT): void {
    const s = new EdgeSocket(this, socketLink(ws), false);
    this.sockets.add(s);
    if (s.out) s.out.batching = wire.features.has("batch");
    s.listen(ws);
    ws.on("close", () => {
      this.sockets.delete(s);
      s.closed();
    });
  }

  /**
   * A streamed HTTP generation (POST /v1/streams): `frame`'s grant already checked, answered on
   * `res` as length-prefixed frames until it ends; the request closing early cancels it.
   */
  acceptHttp(frame: { sid: string; req: RegionGenerateRequest; window: number }, res: ServerResponse): void {
    const s = new EdgeSocket(this, responseLink(res), true);
    this.sockets.add(s);
    // Each token is its own small write: sent now, not held for the next (Nagle).
    res.socket?.setNoDelay(true);
    res.writeHead(200, { "content-type": FRAME_STREAM_CONTENT_TYPE, "cache-control": "no-store" });
    res.flushHeaders();
    // One pong per interval tells the edge the region is alive while a model is slow.
    const pinger = setInterval(() => s.pong(), this.config.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS);
    res.on("drain", () => s.drained());
    res.on("close", () => {
      clearInterval(pinger);
      this.sockets.delete(s);
      s.closed();
    });
    s.generateNow(frame);
  }

  stats(): StreamHubStats {
    let queued = 0;
    let running = 0;
    let bufferedBytes = 0;
    for (const s of this.sockets) {
      bufferedBytes += s.link.bufferedAmount;
      for (const st of s.streams.values()) {
        if (st.state === "queued") queued++;
        else if (st.state === "running") running++;
      }
    }
    return { sockets: this.sockets.size, queued, running, bufferedBytes, tokensRelayed: this.tokensRelayed };
  }

  closeAll(code: number, reason: string): void {
    for (const s of this.sockets) s.close(code, reason);
  }
}

class EdgeSocket {
  readonly streams = new Map<string, RelayStream>();
  private readonly codec = createCodec();
  /**
   * Streams whose generate frame's grant is being checked: their later frames (credit, cancel)
   * wait for it, so a stream's frames are handled in arrival order. Other streams' frames do
   * not wait: one socket's grant checks run side by side, because in one queue a burst of N
   * stream starts cost N checks end to end (the 512th start waited seconds, and the running
   * streams' tokens queued behind the checks' turns of the event loop).
   */
  private readonly checking = new Map<string, Promise<void>>();
  /**
   * A stream socket's frames, coalesced per turn of the event loop (protocol/frame-batch.ts):
   * the tokens of every stream a node step served leave as one message. None for a streamed
   * HTTP response: it carries one stream, one token per step. Batches only once the edge's
   * announcement says it takes them (StreamHub.accept).
   */
  readonly out: FrameBatcher<RegionToEdge> | null;

  constructor(
    private readonly hub: StreamHub,
    readonly link: EdgeLink,
    /**
     * A streamed HTTP generation: no credit frames come, so the router grants the node credit
     * itself while the response drains; the response ends with its one stream.
     */
    private readonly selfCredit: boolean,
  ) {
    this.out = selfCredit ? null : new FrameBatcher<RegionToEdge>(this.codec.encode, (bytes) => this.write(bytes));
  }

  /** Writes one message, unless the socket is gone or so far behind it cannot be honouring credit. */
  private write(bytes: Uint8Array): void {
    if (!this.link.open) return;
    if (this.link.bufferedAmount > this.hub.config.maxBufferedBytes) {
      this.hub.log("warn", "edge stream socket too far behind; closing", { buffered: this.link.bufferedAmount });
      this.link.terminate();
      return;
    }
    this.link.write(bytes);
  }

  /** Sends what is queued, then closes (frames sent before a close arrive before it). */
  close(code: number, reason: string): void {
    this.out?.flush();
    this.link.close(code, reason);
  }

  /** Takes frames from a stream socket, and pings it. */
  listen(ws: WebSocket): void {
    const hub = this.hub;
    // Ping intervals in a row with neither a pong nor a frame from the edge.
    let missed = 0;
    ws.on("pong", () => (missed = 0));
    const pinger = setInterval(() => {
      if (missed >= PING_MISSES) {
        hub.log("warn", "edge stream socket stopped answering pings; terminating it", { streams: this.streams.size });
        ws.terminate();
        return;
      }
      missed++;
      ws.ping();
    }, hub.config.pingIntervalMs ?? DEFAULT_PING_INTERVAL_MS);
    ws.on("close", () => clearInterval(pinger));
    ws.on("message", (data, isBinary) => {
      missed = 0;
      let frames: EdgeToRegion[];
      try {
        if (!isBinary) throw new Error("stream frames are binary msgpack");
        // A batch is checked whole (each frame by its own schema) before any frame is acted on.
        frames = unbatch(this.codec.decode(data as Buffer), parseEdgeToRegion, this.hub.takesBatch);
      } catch (err) {
        hub.log("warn", "closing edge stream socket after a bad frame", { error: (err as Error).message });
        ws.close(CLOSE.protocolError, "bad frame");
        return;
      }
      for (const frame of frames) this.take(frame);
    });
    ws.on("error", (err) => hub.log("warn", "edge stream socket error", { error: err.message }));
  }

  /** One checked frame from the stream socket, in arrival order per stream (see `checking`). */
  private take(frame: EdgeToRegion): void {
    const hub = this.hub;
    if (frame.t === "ping") return this.send({ t: "pong" });
    const failed = (err: unknown) => hub.log("error", "edge stream frame failed", { error: String(err) });
    const before = this.checking.get(frame.sid);
    if (frame.t === "generate") {
      const done: Promise<void> = (before ?? Promise.resolve())
        .then(() => this.authorize(frame))
        .then((f) => {
          if (f) this.handle(f);
        })
        .catch(failed)
        .finally(() => {
          if (this.checking.get(frame.sid) === done) this.checking.delete(frame.sid);
        });
      this.checking.set(frame.sid, done);
    } else if (before) {
      void before.then(() => this.handle(frame)).catch(failed);
    } else {
      this.handle(frame);
    }
  }

  /** A streamed HTTP generation's one request, its grant checked. */
  generateNow(frame: { sid: string; req: RegionGenerateRequest; window: number }): void {
    this.generate(frame.sid, frame.req, frame.window);
    if (this.streams.size === 0) this.link.close(CLOSE.normal, "done"); // refused: the error frame is the answer
  }

  pong(): void {
    this.send({ t: "pong" });
  }

  /** The HTTP response took what was buffered: the streams it held back may run on. */
  drained(): void {
    for (const st of this.streams.values()) {
      this.topUp(st);
      this.armStall(st);
    }
  }

  /**
   * Self-credit (streamed HTTP): while the response's buffer is under its high-water mark, the node's
   * credit is raised back to the window once half of it is used (one credit frame per half
   * window, not one per token). A response that backs up (a write over the mark) gets nothing until it drains.
   */
  private topUp(st: RelayStream): void {
    if (!this.selfCredit || st.state !== "running" || this.link.congested) return;
    const n = st.window - st.nodeCredit;
    if (n < Math.max(1, st.window >> 1)) return;
    st.nodeCredit += n;
    st.nodeStream!.credit(n);
  }

  private send(frame: RegionToEdge): void {
    if (!this.link.open) return;
    if (this.out) this.out.push(frame);
    else this.write(this.codec.encode(frame));
  }

  private sendFor(st: RelayStream, frame: RegionToEdge): void {
    if (!st.silent) this.send(frame);
  }

  private fail(st: RelayStream, code: ErrorCode, message: string): void {
    if (!st.silent) this.hub.metrics?.failed("stream", code);
    this.sendFor(st, { t: "error", sid: st.sid, code, message });
    st.silent = true;
  }

  /** The frame with its request once its grant checks; null (and an error frame sent) otherwise. */
  private async authorize(frame: EdgeToRegion): Promise<AuthorizedFrame | null> {
    if (frame.t !== "generate") return frame;
    try {
      return { t: "generate", sid: frame.sid, req: await this.hub.checkGrant(frame), window: frame.window };
    } catch (err) {
      const e = err instanceof MeshError ? err : new MeshError("unauthorized", "the request's grant could not be checked");
      this.hub.log("warn", "refused a stream request", { sid: frame.sid, code: e.code, reason: e.message });
      this.send({ t: "error", sid: frame.sid, code: e.code, message: e.message });
      return null;
    }
  }

  private handle(frame: AuthorizedFrame): void {
    switch (frame.t) {
      case "generate":
        return this.generate(frame.sid, frame.req, frame.window);
      case "credit": {
        const st = this.streams.get(frame.sid);
        if (!st || st.state === "finished") return;
        if (st.state === "queued") {
          st.pendingCredit = Math.min(GENERATE_LIMITS.maxWindow, st.pendingCredit + frame.n);
          return;
        }
        const n = Math.min(frame.n, GENERATE_LIMITS.maxWindow - st.nodeCredit);
        if (n <= 0) return;
        st.nodeCredit += n;
        st.nodeStream!.credit(n);
        this.armStall(st);
        return;
      }
      case "cancel": {
        const st = this.streams.get(frame.sid);
        if (st) this.cancel(st, true);
        return;
      }
    }
  }

  private generate(sid: string, req: RegionGenerateRequest, window: number): void {
    const arrivedAt = performance.now();
    if (this.streams.has(sid)) {
      this.send({ t: "error", sid, code: "bad_request", message: `stream ${sid} is already open on this socket` });
      return;
    }
    // A tokenizer uploaded with the version, or one in its bundle (tokenizer.json beside the graph).
    if (!req.model.tokenizer && !req.model.files?.some((f) => f.name === "tokenizer.json")) {
      this.send({ t: "error", sid, code: "bad_request", message: `model version ${req.model.key} has no tokenizer` });
      return;
    }
    if (this.streams.size >= this.hub.config.maxStreamsPerSocket) {
      this.send({ t: "error", sid, code: "no_capacity", message: `too many streams on one socket (${this.streams.size})` });
      return;
    }
    const st = new RelayStream(sid, req, window, arrivedAt);
    this.streams.set(sid, st);
    this.hub.metrics?.streamStarted();
    this.submit(st);
  }

  private submit(st: RelayStream): void {
    try {
      const ticket = this.hub.scheduler.submitStream(
        st.req.model,
        st.req.deadline,
        st.arrivedAt,
        {
          progress: (p: StreamProgress) => this.sendFor(st, { t: "progress", sid: st.sid, ...p }),
          start: (node, timing) => this.start(st, node, timing),
          fail: (err: MeshError) => {
            st.state = "finished";
            this.fail(st, err.code, err.message);
            this.forget(st);
          },
        },
        st.excluded,
        // A follow-up chat turn's conversation key, or a plain prompt's prefix keys: the kept cache it may continue.
        st.req.affinity ? [st.req.affinity, ...(st.req.prefixKeys ?? [])] : st.req.prefixKeys,
      );
      // start() may have run already, inside submitStream.
      if (st.state === "queued") st.ticket = ticket;
    } catch (err) {
      const e = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
      if (e.code === "internal_error") this.hub.log("error", "stream submit failed", { requestId: st.req.requestId, traceparent: st.traceparent, error: String(err) });
      st.state = "finished";
      this.fail(st, e.code, e.message);
      this.forget(st);
    }
  }

  private start(st: RelayStream, node: NodeLink, timing: { queueMs: number; loadMs: number }): void {
    st.ticket = null;
    st.state = "running";
    st.node = node;
    st.queueMs += timing.queueMs;
    st.loadMs = Math.max(st.loadMs, timing.loadMs);
    st.nodeCredit = st.pendingCredit;
    st.pendingCredit = 0;
    const key = st.req.model.key;
    st.nodeStream = node.generate(key, { prompt: st.req.prompt, chat: st.req.chat, account: st.req.model.account }, st.req.params, st.req.model.tokenizer, st.nodeCredit, {
      token: (f) => {
        if (st.state !== "running") return;
        st.tokens++;
        st.nodeCredit = Math.max(0, st.nodeCredit - 1);
        this.hub.tokensRelayed++;
        if (st.tokens === 1) st.firstTokenAt = performance.now();
        this.sendFor(st, { t: "token", sid: st.sid, i: f.i, text: f.text, id: f.tokenId });
        this.topUp(st);
        this.armStall(st);
      },
      done: (f) => {
        if (st.state !== "running") return;
        const now = performance.now();
        this.hub.scheduler.streamEnded(st.req.model, node.id, f.reason === "cancelled" ? "cancelled" : "served", st.queueMs, f.genMs, st.yielded);
        if (f.reason !== "cancelled") this.hub.metrics?.served("stream", key, { queueMs: st.queueMs, loadMs: st.loadMs, inferMs: f.genMs, totalMs: now - st.arrivedAt });
        this.sendFor(st, {
          t: "done",
          sid: st.sid,
          reason: f.reason,
          tokens: f.tokens,
          promptTokens: f.promptTokens,
          ...(f.cachedTokens ? { cachedTokens: f.cachedTokens } : {}),
          node: node.id,
          timing: {
            queueMs: st.queueMs,
            loadMs: st.loadMs,
            ttftMs: st.firstTokenAt ? st.firstTokenAt - st.arrivedAt : now - st.arrivedAt,
            genMs: f.genMs,
            regionMs: now - st.arrivedAt,
          },
        });
        st.state = "finished";
        this.forget(st);
      },
      fail: (err: NodeCallError) => {
        if (st.state !== "running") return;
        // Nothing reached the reader yet and the node did not run it: place it once more.
        const retry = err.retryable && st.tokens === 0 && st.attempts === 0 && !st.silent && Date.now() < st.req.deadline;
        this.hub.scheduler.streamEnded(st.req.model, node.id, retry ? "retried" : "failed", st.queueMs, 0, st.yielded);
        st.yielded = false;
        if (retry) {
          st.attempts++;
          st.excluded.add(node.id);
          st.state = "queued";
          st.pendingCredit = st.nodeCredit;
          st.nodeStream = null;
          st.node = null;
          this.clearTimer(st);
          this.submit(st);
          return;
        }
        st.state = "finished";
        this.fail(st, err.retryable ? "node_error" : err.code, err.message);
        this.forget(st);
      },
    }, st.req.model.sha256, { requestId: st.req.requestId, traceparent: st.traceparent });
    // The first token is due by the call's deadline; after it, the stall bound applies.
    this.clearTimer(st);
    st.timer = setTimeout(() => {
      if (st.state === "running" && st.tokens === 0) {
        this.fail(st, "deadline_exceeded", "no token came before the call's deadline");
        st.nodeStream?.cancel();
      }
    }, Math.max(1, st.req.deadline - Date.now()));
  }

  /**
   * While the node has no credit left, the reader has stallTimeoutMs to take a token, or only
   * stallWhenContendedMs while other accounts wait for a stream slot and this stream's account
   * holds its share (checked again every second until the long bound).
   */
  private armStall(st: RelayStream): void {
    if (st.tokens === 0) return; // the first-token deadline is in charge
    this.clearTimer(st);
    if (st.nodeCredit > 0 || st.state !== "running") return;
    st.stalledSince = Date.now();
    this.stallCheckIn(st, Math.min(this.contendedMs, this.hub.config.stallTimeoutMs));
  }

  private get contendedMs(): number {
    return this.hub.config.stallWhenContendedMs ?? this.hub.config.stallTimeoutMs;
  }

  private stallCheckIn(st: RelayStream, ms: number): void {
    st.timer = setTimeout(() => {
      st.timer = null;
      if (st.state !== "running" || st.nodeCredit > 0 || st.silent) return;
      const stalled = Date.now() - st.stalledSince;
      const { stallTimeoutMs } = this.hub.config;
      let why: string | null = null;
      if (stalled >= stallTimeoutMs) {
        why = `the reader took no token for ${Math.round(stallTimeoutMs / 1000)} s`;
      } else if (stalled >= this.contendedMs && st.node && this.hub.scheduler.shouldYieldStream(st.req.model.account, st.node.id)) {
        st.yielded = true;
        why = `the reader took no token for ${Math.round(stalled / 1000)} s while other accounts waited for a slot`;
      }
      if (!why) {
        this.stallCheckIn(st, Math.min(1_000, stallTimeoutMs - stalled));
        return;
      }
      this.hub.log("info", "cancelling a stream whose reader stalled", { requestId: st.req.requestId, traceparent: st.traceparent, tokens: st.tokens, yielded: st.yielded });
      this.fail(st, "deadline_exceeded", why);
      st.nodeStream?.cancel();
    }, Math.max(1, ms));
  }

  private clearTimer(st: RelayStream): void {
    if (st.timer) clearTimeout(st.timer);
    st.timer = null;
  }

  /** Cancels a stream; `answer` sends the edge its final `done` at once when it had not started. */
  private cancel(st: RelayStream, answer: boolean): void {
    if (st.state === "queued") {
      st.ticket?.cancel();
      st.state = "finished";
      if (answer) {
        const ms = performance.now() - st.arrivedAt;
        this.sendFor(st, {
          t: "done",
          sid: st.sid,
          reason: "cancelled",
          tokens: 0,
          promptTokens: 0,
          node: "",
          timing: { queueMs: ms, loadMs: 0, ttftMs: ms, genMs: 0, regionMs: ms },
        });
      }
      this.forget(st);
    } else if (st.state === "running") {
      // The node answers with done (cancelled), which is passed on and frees its slot.
      if (!answer) st.silent = true;
      st.nodeStream?.cancel();
    }
  }

  private forget(st: RelayStream): void {
    this.clearTimer(st);
    if (this.streams.get(st.sid) === st) this.streams.delete(st.sid);
    // A streamed HTTP generation's response ends with its stream.
    if (this.selfCredit && this.streams.size === 0) this.link.close(CLOSE.normal, "done");
  }

  /** The edge went away: every stream of this socket is cancelled (nobody reads them now). */
  closed(): void {
    for (const st of [...this.streams.values()]) {
      st.silent = true;
      this.cancel(st, false);
    }
  }
}
