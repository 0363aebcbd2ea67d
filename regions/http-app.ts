// The router's HTTP routes (Hono, served by server.ts): the edge's signed calls
// (`POST /v1/infer`, msgpack bodies), its streamed HTTP generations (`POST /v1/streams`), the
// signed reads (`/v1/status`, `/v1/streams/stats`), the open liveness probe and /metrics.
// Unsigned, replayed and stale calls are refused from their headers, before any body is read
// (authority.ts); every body is capped while it streams. Every refusal is the one JSON envelope
// (a call's refusals once its signature checked: the msgpack answer the edge reads). A call's
// `x-mesh-wire` (protocol/wire-version.ts) that shares no version with the router is refused,
// not started, as wire_version_unsupported (426), so the edge takes it to another region.

import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { Hono } from "hono";
import { createHash } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { carriedBytes } from "../formats/binary-tensors.js";
import { createCodec, MSGPACK_CONTENT_TYPE } from "../protocol/codec.js";
import { ERROR_STATUS, MeshError, errorBody } from "../protocol/errors.js";
import type { Logger } from "../protocol/log.js";
import {
  MAX_INFER_BODY_BYTES,
  parseEdgeToRegion,
  parseRegionInferRequest,
  type RegionGenerateRequest,
  type RegionInferRequest,
  type RegionInferResponse,
} from "../protocol/messages.js";
import { refuseMetrics } from "../protocol/metrics-endpoint.js";
import type { RegionReport } from "../protocol/region-report.js";
import { formatTraceparent, parseTraceparent, spanFrom } from "../protocol/trace-context.js";
import { localWire, negotiate, parseWireHeader, WIRE_HEADER } from "../protocol/wire-version.js";
import { type EdgeAuthority, readCapped } from "./authority.js";
import type { RouterConfig } from "./config.js";
import { IdempotentCalls, REPEAT_HEADER, type StoredAnswer } from "./idempotency.js";
import type { RouterMetrics } from "./metrics.js";
import { streamStats } from "./reports.js";
import { computeMsOf, type Scheduler } from "./scheduler.js";
import { STREAM_FRAME_BYTES, STREAM_SOCKET_PATH, type StreamHub } from "./streams.js";

/** What the routes work with; server.ts builds these once and shares them with the sockets. */
export interface HttpAppParts {
  config: RouterConfig;
  log: Logger;
  scheduler: Scheduler;
  hub: StreamHub;
  metrics: RouterMetrics;
  authority: EdgeAuthority;
  report: () => RegionReport;
  /** True once the router was told to stop: new work is refused as not started. */
  draining: () => boolean;
}

/** The Node request behind a Hono context on @hono/node-server (its bindings carry it). */
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

/**
 * What the caller is told of a thrown error: a body that did not decode or validate is the
 * caller's fault (bad_request); anything else unexpected is ours (internal_error, details only
 * in the log).
 */
function meshErrorOf(err: unknown): MeshError {
  if (err instanceof MeshError) return err;
  if (err instanceof Error && (err.name === "CodecError" || err.name === "MessageError" || err.name === "WireHeaderError")) return new MeshError("bad_request", err.message);
  return new MeshError("internal_error", "internal error");
}

// A refused call is answered at once and its body is never buffered: the server discards at
// most 64 MiB or 500 ms of it, so the caller can read the answer, then closes
// (@hono/node-server does this for a POST; a GET with a body gets the same, below: closing
// at once would reset the connection under the answer while the caller is still sending).
function envelope(requestId: string, err: MeshError, close = false): Response {
  return new Response(JSON.stringify(errorBody(err.code, err.message, requestId)), {
    status: err.status,
    headers: { "content-type": "application/json", ...err.headers, ...(close ? { connection: "close" } : {}) },
  });
}

export function createHttpApp(parts: HttpAppParts): Hono {
  const { config, log, scheduler, hub, metrics, authority, report, draining } = parts;
  const codec = createCodec();
  const idempotent = new IdempotentCalls();
  const app = new Hono();
  const wire = localWire(config.wireFeatures);
  /** The last header that shared a version: an edge sends the same one on every call, so it is parsed and negotiated once, not per call. */
  let agreedHeader: string | null | undefined;
  /** Throws wire_version_unsupported when the edge's announcement shares no version with the router's (none: an edge from before versions). */
  const checkWire = (req: Request) => {
    const value = req.headers.get(WIRE_HEADER);
    if (value === agreedHeader) return;
    const agreed = negotiate(wire, parseWireHeader(value), { local: "region", peer: "edge" });
    if (!agreed.ok) throw new MeshError("wire_version_unsupported", agreed.message);
    agreedHeader = value;
  };

  // Open on purpose: a load balancer's liveness probe; it says nothing about the region.
  app.get("/healthz", (c) => c.json({ status: draining() ? "draining" : "ok" }));

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

  app.get("/v1/streams/stats", async (c) => {
    const refused = await refusedGet(c.req.raw, "/v1/streams/stats", incomingOf(c.env));
    if (refused) return refused;
    return c.json(streamStats(config.region, scheduler, hub));
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
    const raw = c.req.raw;
    let signed: Awaited<ReturnType<typeof authority.verify>>;
    try {
      signed = await authority.verify("POST", "/v1/infer", (name) => raw.headers.get(name));
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
      const e = meshErrorOf(err);
      if (e.code === "internal_error") log("error", "call failed", { requestId, traceparent, error: String(err) });
      metrics.failed("infer", e.code);
      // no_capacity is only ever a refusal before any node got the call (here, or the
      // scheduler's admission, or a queue emptied when the last node left), and
      // wire_version_unsupported one before its body was read: the edge may take it elsewhere.
      // Every other failure may follow a run, and must not be repeated.
      const notStarted = e.code === "no_capacity" || e.code === "wire_version_unsupported";
      // A call that ran before it failed (a deadline's stop included) says what it cost.
      const answer: RegionInferResponse = { ok: false, code: e.code, message: e.message, ...computeMsOf(err), ...(notStarted ? { notStarted: true as const } : {}) };
      return { status: ERROR_STATUS[e.code], body: codec.encode(answer), notStarted };
    };
    try {
      // Before the body: a call from an edge that shares no wire version is not read at all.
      checkWire(raw);
    } catch (err) {
      log("warn", "refused call", { requestId, traceparent, reason: (err as Error).message });
      return respond(failure(err));
    }
    try {
      body = await authority.readBody(raw, signed, MAX_INFER_BODY_BYTES);
    } catch (err) {
      if (!(err instanceof MeshError)) throw err;
      log("warn", "refused call", { requestId, traceparent, code: err.code, reason: err.message });
      metrics.failed("infer", err.code);
      return envelope(requestId, err);
    }
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
        if (draining()) throw new MeshError("no_capacity", "region is draining", { "retry-after": "1" });
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
      checkWire(c.req.raw);
      const body = await readCapped(c.req.raw, STREAM_FRAME_BYTES);
      const parsed = parseEdgeToRegion(codec.decode(body));
      if (parsed.t !== "generate") throw new MeshError("bad_request", "a streamed generation's body is one generate frame");
      const req = await authority.generate(parsed, STREAM_SOCKET_PATH);
      if (draining()) throw new MeshError("no_capacity", "region is draining", { "retry-after": "1" });
      frame = { sid: parsed.sid, req, window: parsed.window };
    } catch (err) {
      const e = meshErrorOf(err);
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
  return app;
}
