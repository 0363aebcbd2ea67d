// The region router: an HTTP endpoint for the edge's signed calls (msgpack bodies) and a
// WebSocket endpoint where nodes connect with their token. Unsigned, replayed and stale calls
// and unauthenticated sockets are refused from their headers, before any body is read
// (authority.ts); every body is capped while it streams; every frame is size-bounded and
// validated.

import { serve } from "@hono/node-server";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono } from "hono";
import { createHash } from "node:crypto";
import { createServer as createHttpsServer } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { carriedBytes } from "../protocol/binary-tensors.js";
import { createCodec, MSGPACK_CONTENT_TYPE } from "../protocol/codec.js";
import { ERROR_STATUS, MeshError, errorBody } from "../protocol/errors.js";
import { makeLogger } from "../protocol/log.js";
import {
  CLOSE,
  MAX_INFER_BODY_BYTES,
  parseEdgeToRegion,
  parseNodeMessage,
  parseRegionInferRequest,
  type RegionGenerateRequest,
  type RegionInferRequest,
  type RegionInferResponse,
} from "../protocol/messages.js";
import type { RegionReport } from "../protocol/region-report.js";
import { timingSafeEqual } from "hono/utils/buffer";
import { EdgeAuthority, readCapped } from "./authority.js";
import { IdempotentCalls, REPEAT_HEADER, type StoredAnswer } from "./idempotency.js";
import type { RouterConfig } from "./config.js";
import { NodeLink } from "./node-link.js";
import { startReportPublisher } from "./report-publisher.js";
import { startPolicyReader } from "./policy-reader.js";
import { computeMsOf, Scheduler, SCHEDULER_DEFAULTS } from "./scheduler.js";
import { regionConversations, usedMb } from "./placement.js";
import { STREAM_SOCKET_PATH, StreamHub } from "./streams.js";
import { RouterMetrics } from "./metrics.js";
import { refuseMetrics } from "../protocol/metrics-endpoint.js";
import { formatTraceparent, parseTraceparent, spanFrom } from "../protocol/trace-context.js";

export const NODE_SOCKET_PATH = "/v1/nodes";
const HELLO_TIMEOUT_MS = 5_000;
/** How long a draining router keeps answering "draining" before it closes its port. */
const DRAIN_NOTICE_MS = 2_500;

export interface RouterHandle {
  url: string;
  port: number;
  scheduler: Scheduler;
  report(): RegionReport;
  /** Stops taking calls, lets in-flight ones finish (bounded), closes nodes with 1012. */
  close(): Promise<void>;
}

/** The Node request behind a Hono context on @hono/node-server (its bindings carry it). */
/** The edge's stream frames (a generate carries a prompt at most), on a socket or as a POST body. */
const STREAM_FRAME_BYTES = 1024 * 1024;

function incomingOf(env: unknown): IncomingMessage | undefined {
  return (env as { incoming?: IncomingMessage } | undefined)?.incoming;
}

/**
 * Reads and drops what a refused caller is still sending, up to 64 MiB or 500 ms, then closes:
 * the caller reads the refusal instead of a reset, and nothing is held.
 */
function discardThenClose(incoming: IncomingMessage): void {
  let bytes = 0;
  const close = () => {
    clearTimeout(timer);
    incoming.off("data", onData);
    incoming.socket?.destroySoon?.();
  };
  const timer = setTimeout(close, 500);
  timer.unref();
  const onData = (chunk: Buffer) => {
    bytes += chunk.length;
    if (bytes > 64 * 2 ** 20) close();
  };
  incoming.on("data", onData);
  incoming.once("end", () => clearTimeout(timer));
  incoming.resume();
}

/**
 * What a call is, for telling a repeat of its request id from another call: the model's bytes,
 * each input's name, type, shape and data bytes, the outputs asked for. The tensors' bytes are
 * hashed where they lie (views of the body), not re-encoded.
 */
function callFingerprint(req: RegionInferRequest): string {
  const hash = createHash("sha256");
  hash.update(JSON.stringify([req.model.key, req.model.sha256, req.outputs ?? null, req.inputs.map((t) => [t.name, t.datatype, t.shape])]));
  for (const t of req.inputs) hash.update(carriedBytes(t));
  return hash.digest("base64");
}

export async function startRouter(config: RouterConfig): Promise<RouterHandle> {
  const log = makeLogger("router", { region: config.region });
  const scheduler = new Scheduler(
    {
      maxInflight: config.maxInflight,
      maxQueuePerModel: config.maxQueuePerModel,
      maxQueuedBytes: config.maxQueuedBytes,
      warm: { ...SCHEDULER_DEFAULTS.warm, idleTtlMs: config.idleTtlMs },
      fairShare: config.fairShare,
      accountWeights: config.accountWeights,
    },
    (level, msg, extra) => log(level, msg, extra),
  );
  scheduler.start(config.warmIntervalMs);
  const codec = createCodec();
  const idempotent = new IdempotentCalls();
  let draining = false;
  const authority = new EdgeAuthority(config.meshSecretPrevious ? [config.meshSecret, config.meshSecretPrevious] : [config.meshSecret]);
  const hub = new StreamHub(
    scheduler,
    {
      stallTimeoutMs: config.streamStallTimeoutMs,
      stallWhenContendedMs: config.streamStallWhenContendedMs,
      maxStreamsPerSocket: config.maxStreamsPerSocket,
      maxBufferedBytes: 16 * 2 ** 20,
      pingIntervalMs: config.pingIntervalMs,
    },
    (level, msg, extra) => log(level, msg, extra),
    (frame) => authority.generate(frame, STREAM_SOCKET_PATH),
  );
  const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
  const metrics = new RouterMetrics(config.region, scheduler, hub);
  hub.metrics = metrics;

  const report = (): RegionReport => {
    const nodes = [...scheduler.nodes.values()].filter((n) => n.open);
    const usable = nodes.filter((n) => n.available);
    const slots = usable.reduce((s, n) => s + n.slots, 0);
    return {
      region: config.region,
      updatedAt: Date.now(),
      healthy: !draining && usable.length > 0,
      nodes: nodes.map((n) => ({
        id: n.id,
        accelerator: n.accelerator.name,
        executionProvider: n.executionProvider,
        inflight: n.inflight,
        slots: n.slots,
        memoryBudgetMb: n.memoryBudgetMb,
        memoryUsedMb: usedMb(n),
        utilisation: Math.round(n.utilisation * 1000) / 1000,
        draining: n.draining,
        warm: [...n.warm.keys()],
        disk: n.disk,
      })),
      warm: [...new Set(usable.flatMap((n) => [...n.warm.keys()]))],
      inflight: scheduler.inflight,
      queued: scheduler.queued,
      capacity: {
        slots,
        freeSlots: Math.max(0, slots - usable.reduce((s, n) => s + n.inflight, 0)),
        memoryMb: usable.reduce((s, n) => s + n.memoryBudgetMb, 0),
        memoryUsedMb: usable.reduce((s, n) => s + usedMb(n), 0),
      },
      models: scheduler.knownModels().map((key) => {
        const st = scheduler.stats.get(key);
        const pct = st?.percentiles() ?? { queueMs: { p50: 0, p95: 0, p99: 0 }, inferMs: { p50: 0, p95: 0, p99: 0 } };
        return {
          key,
          replicas: usable.filter((n) => n.warm.has(key)).length,
          loading: usable.filter((n) => n.loading.has(key)).length,
          queued: scheduler.queueDepth(key),
          rate: Math.round((st?.rate ?? 0) * 100) / 100,
          trend: Math.round((st?.trend() ?? 0) * 100) / 100,
          ...pct,
        };
      }),
      served: scheduler.served,
      failed: scheduler.failed,
      loads: scheduler.loads,
      evictions: scheduler.evictions,
      coldStartMs: scheduler.coldStartMs === null ? null : Math.round(scheduler.coldStartMs),
      affinity: regionConversations(usable),
    };
  };

  const app = new Hono();
  // A refused call is answered at once and its body is never buffered: the server discards at
  // most 64 MiB or 500 ms of it, so the caller can read the answer, then closes
  // (@hono/node-server does this for a POST; a GET with a body gets the same, below: closing
  // at once would reset the connection under the answer while the caller is still sending).
  const envelope = (requestId: string, err: MeshError, close = false) =>
    new Response(JSON.stringify(errorBody(err.code, err.message, requestId)), {
      status: err.status,
      headers: { "content-type": "application/json", ...err.headers, ...(close ? { connection: "close" } : {}) },
    });

  // Open on purpose: a load balancer's liveness probe; it says nothing about the region.
  app.get("/healthz", (c) => c.json({ status: draining ? "draining" : "ok" }));

  /** A signed GET: no body, headers checked; null when it may go on, else the refusal. */
  const refusedGet = async (req: Request, path: string, incoming?: IncomingMessage): Promise<Response | null> => {
    try {
      authority.refuseBody(req);
      await authority.verify("GET", path, (name) => req.headers.get(name));
      return null;
    } catch (err) {
      if (!(err instanceof MeshError)) throw err;
      if (!incoming) return envelope("-", err, true);
      if (!incoming.readableEnded) discardThenClose(incoming);
      return envelope("-", err);
    }
  };

  app.get("/v1/status", async (c) => {
    const refused = await refusedGet(c.req.raw, "/v1/status", incomingOf(c.env));
    if (refused) return refused;
    return c.json(report());
  });

  // What streams cost where: the router's own memory and relay state, and each node's memory
  // and generation counters from its heartbeats (tests use it to see a stalled reader stop
  // the producer without memory growing anywhere).
  app.get("/v1/streams/stats", async (c) => {
    const refused = await refusedGet(c.req.raw, "/v1/streams/stats", incomingOf(c.env));
    if (refused) return refused;
    const m = process.memoryUsage();
    return c.json({
      region: config.region,
      router: { rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed), streaming: scheduler.streaming, ...hub.stats() },
      nodes: [...scheduler.nodes.values()]
        .filter((n) => n.open)
        .map((n) => ({
          id: n.id,
          streams: n.streams,
          streamSlots: n.streamSlots,
          active: n.gen?.active ?? 0,
          tokens: n.gen?.tokens ?? 0,
          rssMb: n.mem?.rssMb ?? null,
          heapUsedMb: n.mem?.heapUsedMb ?? null,
          runs: n.runs,
          heartbeats: n.heartbeats,
        })),
    });
  });

  // Prometheus scrapes (METRICS_TOKEN as a bearer token; off without one): docs/observability.md.
  app.get("/metrics", async (c) => {
    const refused = await refuseMetrics(c.req.header("authorization"), config.metricsToken);
    if (refused) return envelope("-", refused);
    return c.body(await metrics.expose(), 200, { "content-type": metrics.registry.contentType });
  });

  app.post("/v1/infer", async (c) => {
    const arrivedAt = performance.now();
    const requestId = c.req.header("x-request-id") ?? "-";
    // The router's span, under the edge's (a new trace when it sent none or a malformed one).
    const span = spanFrom(c.req.header("traceparent"));
    const traceparent = formatTraceparent(span);
    let body: Uint8Array;
    try {
      const req = c.req.raw;
      const signed = await authority.verify("POST", "/v1/infer", (name) => req.headers.get(name));
      body = await authority.readBody(req, signed, MAX_INFER_BODY_BYTES);
    } catch (err) {
      if (!(err instanceof MeshError)) throw err;
      log("warn", "refused call", { requestId, traceparent, code: err.code, reason: err.message });
      metrics.failed("infer", err.code);
      return envelope(requestId, err);
    }
    // From here on the caller is the edge: it reads msgpack, whatever happens.
    const respond = (a: StoredAnswer, repeat = false) =>
      new Response(a.body as Uint8Array<ArrayBuffer>, {
        status: a.status,
        // A repeat's answer is the first call's, byte for byte; the header tells the edge that
        // this one ran nothing (so it bills no compute for it).
        headers: { "content-type": MSGPACK_CONTENT_TYPE, ...(repeat ? { [REPEAT_HEADER]: "1" } : {}) },
      });
    const failure = (err: unknown): StoredAnswer => {
      const e =
        err instanceof MeshError
          ? err
          : err instanceof Error && (err.name === "CodecError" || err.name === "MessageError")
            ? new MeshError("bad_request", err.message)
            : new MeshError("internal_error", "internal error");
      if (e.code === "internal_error") log("error", "call failed", { requestId, traceparent, error: String(err) });
      metrics.failed("infer", e.code);
      // no_capacity is only ever a refusal before any node got the call (here, or the
      // scheduler's admission, or a queue emptied when the last node left): the edge may take
      // it elsewhere. Every other failure may follow a run, and must not be repeated.
      const notStarted = e.code === "no_capacity";
      // A call that ran before it failed (a deadline's stop included) says what it cost.
      const answer: RegionInferResponse = { ok: false, code: e.code, message: e.message, ...computeMsOf(err), ...(notStarted ? { notStarted: true as const } : {}) };
      return { status: ERROR_STATUS[e.code], body: codec.encode(answer), notStarted };
    };
    let req: RegionInferRequest;
    try {
      req = parseRegionInferRequest(codec.decode(body));
    } catch (err) {
      return respond(failure(err));
    }
    // The request id is the idempotency key (within the account): a repeat joins the call or
    // gets its stored answer, byte for byte, instead of running it again.
    const fingerprint = callFingerprint(req);
    const outcome = await idempotent.call(req.model.account, req.requestId, fingerprint, async () => {
      try {
        if (draining) throw new MeshError("no_capacity", "region is draining", { "retry-after": "1" });
        // No node to run it (all gone, e.g. right after a router restart, before nodes reconnect):
        // say so now, so the edge takes the call to the next region instead of it waiting here.
        if (![...scheduler.nodes.values()].some((n) => n.available)) {
          throw new MeshError("no_capacity", "region has no node available", { "retry-after": "1" });
        }
        const { nodeTraceparent, ...result } = await scheduler.submit(req, arrivedAt, traceparent);
        const t = result.timing;
        metrics.served("infer", req.model.key, { queueMs: t.queueMs, loadMs: t.loadMs, inferMs: t.inferMs, totalMs: t.regionMs });
        // The node's span counts only when it is in this trace (so the edge can name it).
        const node = parseTraceparent(nodeTraceparent);
        const trace = { router: span.spanId, ...(node?.traceId === span.traceId ? { node: node.spanId } : {}) };
        log("debug", "call served", { requestId, traceparent, node: result.node, nodeTraceparent });
        return { status: 200, body: codec.encode({ ok: true, ...result, timing: { ...t, trace } } satisfies RegionInferResponse), notStarted: false };
      } catch (err) {
        return failure(err);
      }
    });
    if (outcome.kind === "conflict") {
      return respond(failure(new MeshError("bad_request", "this request id was already used for a different call; use a new id")));
    }
    if (outcome.shared) log("info", "repeated request id answered without running it again", { requestId, traceparent });
    return respond(outcome.answer, outcome.shared);
  });

  // A streamed HTTP generation (regions/streams.ts): the body is one generate frame with its own
  // grant, read with the socket frames' bound and checked like them; the answer streams frames.
  app.post(STREAM_SOCKET_PATH, async (c) => {
    const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
    let frame: { sid: string; req: RegionGenerateRequest; window: number };
    try {
      if (!outgoing) throw new MeshError("internal_error", "no response to stream on");
      const body = await readCapped(c.req.raw, STREAM_FRAME_BYTES);
      const parsed = parseEdgeToRegion(codec.decode(body));
      if (parsed.t !== "generate") throw new MeshError("bad_request", "a streamed generation's body is one generate frame");
      const req = await authority.generate(parsed, STREAM_SOCKET_PATH);
      if (draining) throw new MeshError("no_capacity", "region is draining", { "retry-after": "1" });
      frame = { sid: parsed.sid, req, window: parsed.window };
    } catch (err) {
      const e =
        err instanceof MeshError
          ? err
          : err instanceof Error && (err.name === "CodecError" || err.name === "MessageError")
            ? new MeshError("bad_request", err.message)
            : new MeshError("internal_error", "internal error");
      if (e.code === "internal_error") log("error", "streamed generation refused", { error: String(err) });
      else log("warn", "refused a streamed generation", { code: e.code, reason: e.message });
      const incoming = incomingOf(c.env);
      if (incoming && !incoming.readableEnded) discardThenClose(incoming);
      return envelope("-", e);
    }
    hub.acceptHttp(frame, outgoing!);
    return RESPONSE_ALREADY_SENT;
  });

  app.notFound((c) => envelope("-", new MeshError("not_found", `no route for ${c.req.method} ${c.req.path}`)));

  // --- node sockets
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxFrameBytes });
  // The edge's stream sockets: frames are small (a prompt at most), so the bound is tight.
  const streamWss = new WebSocketServer({ noServer: true, maxPayload: STREAM_FRAME_BYTES, perMessageDeflate: false });

  const refuseUpgrade = (socket: Duplex, status: number, message: string) => {
    const code = status === 401 ? "unauthorized" : status === 503 ? "no_capacity" : "not_found";
    const text = status === 401 ? "Unauthorized" : status === 503 ? "Service Unavailable" : "Not Found";
    const body = JSON.stringify(errorBody(code, message, "-"));
    socket.end(
      `HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  };

  const onStreamUpgrade = async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const header = (name: string) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v[0] : v;
    };
    try {
      authority.refuseBody({ headers: { get: (name) => header(name) ?? null } });
      await authority.verify("GET", STREAM_SOCKET_PATH, header);
    } catch (err) {
      if (!(err instanceof MeshError)) throw err;
      log("warn", "refused unsigned stream socket", { reason: err.message, remote: req.socket.remoteAddress });
      return refuseUpgrade(socket, 401, err.message);
    }
    if (draining) return refuseUpgrade(socket, 503, "region is draining");
    streamWss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws));
  };

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = (req.url ?? "").split("?")[0];
    if (path === STREAM_SOCKET_PATH) {
      void onStreamUpgrade(req, socket, head).catch((err: unknown) => {
        log("error", "stream socket upgrade failed", { error: String(err) });
        socket.destroy();
      });
      return;
    }
    if (path !== NODE_SOCKET_PATH) return refuseUpgrade(socket, 404, "no such socket");
    void onNodeUpgrade(req, socket, head).catch((err: unknown) => {
      log("error", "node socket upgrade failed", { error: String(err) });
      socket.destroy();
    });
  };

  const onNodeUpgrade = async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const auth = req.headers.authorization ?? "";
    const token = /^Bearer\s+(\S+)$/i.exec(auth)?.[1] ?? "";
    if (!token || !(await timingSafeEqual(token, config.nodeToken))) {
      log("warn", "refused node without a valid token", { remote: req.socket.remoteAddress });
      return refuseUpgrade(socket, 401, "a valid node token is required");
    }
    if (draining) return refuseUpgrade(socket, 404, "router is draining");
    wss.handleUpgrade(req, socket, head, (ws) => acceptNode(ws));
  };

  const acceptNode = (ws: WebSocket) => {
    // The node's first frame sets the framing for the socket: binary = msgpack, text = JSON.
    let framing: "msgpack" | "json" | null = null;
    let nodeCodec = createCodec();
    let link: NodeLink | null = null;
    let alive = true;
    const helloTimer = setTimeout(() => ws.close(CLOSE.protocolError, "hello expected"), HELLO_TIMEOUT_MS);

    ws.on("pong", () => {
      alive = true;
      if (link) link.unresponsive = false;
    });
    const pinger = setInterval(() => {
      if (!alive) {
        // No pong since the last ping: out of rotation now, and gone if it stays silent.
        if (link?.unresponsive) return ws.terminate();
        if (link) link.unresponsive = true;
      }
      alive = false;
      ws.ping();
    }, config.pingIntervalMs);

    ws.on("message", (data, isBinary) => {
      let msg;
      try {
        if (framing === null) {
          framing = isBinary ? "msgpack" : "json";
          nodeCodec = createCodec(framing);
        }
        if (isBinary !== (framing === "msgpack")) throw new Error("frame of the wrong kind for this socket");
        msg = parseNodeMessage(nodeCodec.decode(data as Buffer));
      } catch (err) {
        log("warn", "closing node socket after a bad frame", { node: link?.id, error: (err as Error).message });
        ws.close(CLOSE.protocolError, "bad frame");
        return;
      }
      if (!link) {
        if (msg.t !== "hello") {
          ws.close(CLOSE.protocolError, "hello expected");
          return;
        }
        clearTimeout(helloTimer);
        const previous = scheduler.nodes.get(msg.nodeId);
        if (previous?.open) previous.ws.close(CLOSE.normal, "replaced by a new connection");
        link = new NodeLink(
          msg.nodeId,
          ws,
          msg.accelerator,
          msg.executionProvider,
          msg.memoryBudgetMb,
          Math.max(1, Math.min(1024, Math.floor(msg.slots))),
          Math.max(0, Math.floor(msg.maxModels)),
          msg.warm,
          framing ?? "msgpack",
          () => scheduler.pumpAll(),
        );
        link.streamSlots = Math.max(0, Math.min(100_000, Math.floor(msg.streams ?? 0)));
        const nodeLink = link;
        link.onLoadProgress = (key, bytes, total) => scheduler.noteLoadProgress(key, bytes, total, nodeLink.id);
        scheduler.nodes.set(msg.nodeId, link);
        ws.send(nodeCodec.encode({ t: "welcome", region: config.region }), { binary: framing === "msgpack" });
        scheduler.nodesChanged();
        log("info", "node connected", { node: msg.nodeId, accelerator: msg.accelerator, executionProvider: msg.executionProvider, warm: msg.warm.length });
        return;
      }
      link.handle(msg);
    });

    ws.on("close", (code, reason) => {
      clearTimeout(helloTimer);
      clearInterval(pinger);
      if (link) {
        const pending = link.closed(`closed ${code}`);
        if (scheduler.nodes.get(link.id) === link) scheduler.nodes.delete(link.id);
        scheduler.nodesChanged();
        // pending > 0: calls the node never answered (retried elsewhere or failed with 503).
        log(pending > 0 ? "warn" : "info", "node disconnected", { node: link.id, code, pending, reason: reason.toString().slice(0, 100) });
      }
    });
    ws.on("error", (err) => log("warn", "node socket error", { node: link?.id, error: err.message }));
  };

  // With a certificate the one port serves HTTPS and, through the same upgrade handler, WSS
  // (node sockets, the edge's stream sockets, /metrics alike): nothing is left in clear.
  const server = config.tls
    ? serve({ fetch: app.fetch, port: config.port, hostname: config.host, createServer: createHttpsServer, serverOptions: { cert: config.tls.cert, key: config.tls.key } })
    : serve({ fetch: app.fetch, port: config.port, hostname: config.host });
  server.on("upgrade", onUpgrade);
  // A client that does not trust this certificate aborts the handshake (alert: unknown CA, bad
  // certificate): counted and logged here, since that client never gets far enough to say so.
  server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: { remoteAddress?: string }) => {
    metrics.tlsHandshakeFailed();
    log("warn", "TLS handshake failed", { remote: socket.remoteAddress, code: err.code, error: err.message.slice(0, 200) });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${config.tls ? "https" : "http"}://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;

  const publisher = config.redis
    ? startReportPublisher(config.redis, config.region, config.reportIntervalMs, report, log)
    : null;
  // Keep-warm URLs are signed with the previous secret while a rotation runs: the edge learns
  // the new one only after the routers do (README, Security).
  const policies = config.redis ? startPolicyReader(config.region, config.redis, config.meshSecretPrevious ?? config.meshSecret, config.policyIntervalMs, scheduler, log, config.r2) : null;
  await publisher?.publishNow();
  log("info", "router listening", { url, nodeSocket: url.replace(/^http/, "ws") + NODE_SOCKET_PATH });

  return {
    url,
    port,
    scheduler,
    report,
    async close() {
      draining = true;
      await publisher?.publishNow(); // tell the edge at once
      // Keep answering "draining" (notStarted, so the edge takes the call elsewhere) until edges
      // have read that report (they refresh every second): a closed port is no proof that a
      // call did not run, so a call sent to it would fail instead of moving.
      const noticeUntil = Date.now() + Math.min(DRAIN_NOTICE_MS, config.drainTimeoutMs);
      const until = Date.now() + config.drainTimeoutMs;
      while ((scheduler.inflight > 0 || Date.now() < noticeUntil) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      scheduler.stop();
      policies?.stop();
      hub.closeAll(CLOSE.restart, "router restarting");
      for (const n of scheduler.nodes.values()) n.ws.close(CLOSE.restart, "router restarting");
      await publisher?.stop();
      await new Promise<void>((resolve) => {
        wss.close();
        streamWss.close();
        server.close(() => resolve());
        // Keep-alive connections would hold close() open.
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      log("info", "router stopped");
    },
  };
}
