// The client side of the streaming benches (streaming.ts, stream-capacity.ts, openai-surface.ts):
// one stream's token timeline, the clients that read tokens off the edge (WebSocket, SSE) and off
// a router's stream socket (signed, as the edge talks to it), and the load shapes (streams one
// after another, N at once, a sweep of levels up to where p99 inter-token latency doubles) with
// their summaries. Every stream's text is checked against the text it must be.

import WebSocket from "ws";
import { createCodec } from "../protocol/codec.js";
import { GENERATE_GRANT_METHOD, type EdgeToRegion, type FrameBatch, type GenerateParams, type ModelRef, type RegionGenerateRequest, type RegionToEdge } from "../protocol/messages.js";
import { artifactUrl, signRequest, tokenizerUrl } from "../protocol/signing.js";
import { formatWireHeader, localWire, WIRE_HEADER } from "../protocol/wire-version.js";
import { err } from "./harness.js";
import { fmt, ratio, summarize, type Summary } from "./stats.js";

// ---------------------------------------------------------------------------------------------
// One stream's timeline at the client

export interface StreamSample {
  /** Request sent -> first token. */
  ttftMs: number;
  /** Request sent -> last token. */
  lastMs: number;
  /** SSE over fetch only: request sent -> the response's headers (the stream is open). */
  headersMs?: number;
  /** Gaps between consecutive tokens, ms. */
  gaps: number[];
  text: string;
}

/** Collects one stream's token times (each token stamped with performance.now() as it comes). */
export class Timeline {
  private last = 0;
  private first = 0;
  private readonly gaps: number[] = [];
  private text = "";
  constructor(
    readonly sentAt = performance.now(),
    /** OpenAI chunks: one without content (the role, the finish reason) is not a token. */
    private readonly skipEmpty = false,
  ) {}

  token(text: string): void {
    if (this.skipEmpty && text === "") return;
    const now = performance.now();
    if (this.first === 0) this.first = now;
    else this.gaps.push(now - this.last);
    this.last = now;
    this.text += text;
  }

  sample(): StreamSample {
    if (this.first === 0) throw new Error("the stream produced no token");
    return { ttftMs: this.first - this.sentAt, lastMs: this.last - this.sentAt, gaps: this.gaps, text: this.text };
  }
}

// ---------------------------------------------------------------------------------------------
// WebSocket clients: many streams per socket, each by its id

/** Every socket these clients opened, so the bench's cleanup can end those still open. */
const sockets = new Set<WebSocket>();

/** Ends every stream socket still open (a bench's cleanup: `b.defer(terminateStreamSockets)`). */
export function terminateStreamSockets(): void {
  for (const ws of sockets) ws.terminate();
  sockets.clear();
}

function openSocket(url: string, headers: Record<string, string>): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, perMessageDeflate: false });
    sockets.add(ws);
    ws.once("close", () => sockets.delete(ws));
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
    ws.once("unexpected-response", (_q, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
  });
}

/** The streams open on one socket, by id. */
class Lines {
  private readonly open = new Map<string, { tl: Timeline; resolve: (s: StreamSample) => void; reject: (e: Error) => void }>();

  constructor(ws: WebSocket) {
    ws.on("close", () => {
      for (const l of this.open.values()) l.reject(new Error("socket closed"));
      this.open.clear();
    });
  }

  start(id: string, send: () => void | Promise<void>): Promise<StreamSample> {
    return new Promise((resolve, reject) => {
      this.open.set(id, { tl: new Timeline(), resolve, reject });
      void (async () => send())().catch(reject);
    });
  }

  token(id: string, text: string): void {
    this.open.get(id)?.tl.token(text);
  }

  end(id: string, error?: string): void {
    const l = this.open.get(id);
    if (!l) return;
    this.open.delete(id);
    if (error !== undefined) return l.reject(new Error(error));
    try {
      l.resolve(l.tl.sample());
    } catch (e) {
      l.reject(e as Error);
    }
  }
}

/** What the edge's generate routes take (OIP generate extension). */
export interface GenerateMessage {
  text_input: string;
  parameters: Record<string, unknown>;
  /** WebSocket only: tokens the edge may send before an ack. */
  window?: number;
}

type EdgeEvent = { type: string; id: string; text_output?: string; error?: string; code?: string };

/**
 * Many streams on one WebSocket to the edge's /v2/models/<model>/stream (JSON text frames): one
 * event per message, or with `batch` (`?batch=true`) an array of events per message.
 */
export class EdgeSocket {
  private readonly lines: Lines;
  private constructor(private readonly ws: WebSocket) {
    this.lines = new Lines(ws);
    ws.on("message", (data) => {
      const m = JSON.parse(String(data)) as EdgeEvent | EdgeEvent[];
      for (const ev of Array.isArray(m) ? m : [m]) {
        if (ev.type === "token") this.lines.token(ev.id, ev.text_output!);
        else if (ev.type === "done") this.lines.end(ev.id);
        else if (ev.type === "error") this.lines.end(ev.id, `${ev.code}: ${ev.error}`);
      }
    });
  }

  static async open(edge: string, model: string, key: string, batch = false): Promise<EdgeSocket> {
    return new EdgeSocket(await openSocket(`${edge.replace(/^http/, "ws")}/v2/models/${model}/stream${batch ? "?batch=true" : ""}`, { authorization: `Bearer ${key}` }));
  }

  generate(id: string, message: GenerateMessage): Promise<StreamSample> {
    return this.lines.start(id, () => this.ws.send(JSON.stringify({ type: "generate", id, ...message })));
  }

  close(): void {
    this.ws.close();
  }
}

/** The sampling settings a bench varies; the rest as the edge sends them by default. */
export type RouterParams = Pick<GenerateParams, "maxTokens" | "temperature" | "topK" | "seed">;

/** Straight to a router's stream socket, as the edge talks to it (each generate signed). */
export class RouterSocket {
  private readonly codec = createCodec();
  private readonly lines: Lines;
  private constructor(
    private readonly ws: WebSocket,
    /** The region's secret: each generate carries its own grant, as the edge sends it. */
    private readonly secret: string,
  ) {
    this.lines = new Lines(ws);
    ws.on("message", (data) => {
      // Unchecked, as before batches: this client measures the router, it does not guard against it.
      const m = this.codec.decode(data as Buffer) as RegionToEdge | FrameBatch;
      for (const f of (m.t === "batch" ? m.frames : [m]) as RegionToEdge[]) {
        if (f.t === "pong") continue; // the answer to an edge's liveness ping: these clients send none
        if (f.t === "token") this.lines.token(f.sid, f.text);
        else if (f.t === "done") this.lines.end(f.sid);
        else if (f.t === "error") this.lines.end(f.sid, `${f.code}: ${f.message}`);
      }
    });
  }

  static async open(routerUrl: string, secret: string): Promise<RouterSocket> {
    // Announced as the edge does, so the router batches to this client as it does to the edge.
    const headers = { ...(await signRequest(secret, "GET", "/v1/streams")), [WIRE_HEADER]: formatWireHeader(localWire()) };
    return new RouterSocket(await openSocket(routerUrl.replace(/^http/, "ws") + "/v1/streams", headers), secret);
  }

  generate(sid: string, model: ModelRef, prompt: string, params: RouterParams, ttlMs: number): Promise<StreamSample> {
    return this.lines.start(sid, async () => {
      const req: RegionGenerateRequest = {
        requestId: `bench-${sid}`,
        model,
        prompt,
        params: { ...params, topP: 1, repetitionPenalty: 1, stop: [] },
        deadline: Date.now() + ttlMs,
      };
      const bytes = this.codec.encode(req);
      const grant = await signRequest(this.secret, GENERATE_GRANT_METHOD, "/v1/streams", bytes);
      const frame: EdgeToRegion = { t: "generate", sid, window: 256, req: bytes, grant };
      this.ws.send(this.codec.encode(frame), { binary: true });
    });
  }

  close(): void {
    this.ws.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events over fetch

/** The data payloads of a Server-Sent Events body, one per event (events without data skipped). */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let at: number;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const data = buf
        .slice(0, at)
        .split("\n")
        .find((l) => l.startsWith("data: "));
      buf = buf.slice(at + 2);
      if (data) yield data.slice(6);
    }
  }
}

/** POSTs a streaming request; throws unless the answer is a 200 with a body. */
export async function postStream(url: string, key: string, body: unknown): Promise<Response & { body: ReadableStream<Uint8Array> }> {
  const res = await fetch(url, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok || !res.body) throw new Error(`${new URL(url).pathname} ${res.status}: ${await res.text()}`);
  return res as Response & { body: ReadableStream<Uint8Array> };
}

/** One stream from the edge's /v2/models/<model>/generate_stream (SSE). */
export async function edgeSse(edge: string, key: string, model: string, message: GenerateMessage): Promise<StreamSample> {
  const tl = new Timeline();
  const res = await postStream(`${edge}/v2/models/${model}/generate_stream`, key, message);
  for await (const data of sseData(res.body)) {
    const ev = JSON.parse(data) as { type: string; text_output?: string; error?: string };
    if (ev.type === "token") tl.token(ev.text_output!);
    else if (ev.type === "error") throw new Error(ev.error);
  }
  return tl.sample();
}

// ---------------------------------------------------------------------------------------------
// Setting up: the edge's JSON API, and a model as a router sees it

/** Calls the edge's JSON API with `key`; throws on a non-2xx answer. */
export function edgeApi(edge: string) {
  return async (key: string, method: string, path: string, body?: BodyInit, type = "application/json"): Promise<Record<string, any>> => {
    const res = await fetch(edge + path, { method, body, headers: { authorization: `Bearer ${key}`, "content-type": type } });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as Record<string, any>;
  };
}

/**
 * The ModelRef a region's router gets for version 1 of an uploaded model, with signed URLs to its
 * artifact and tokenizer at the edge: `up` and `tok` are the edge's answers to the upload and to
 * the tokenizer PUT, `id` the model's id.
 */
export async function routerModelRef(o: { edge: string; region: string; secret: string; id: string; name: string; up: Record<string, any>; tok: Record<string, any> }): Promise<ModelRef> {
  const until = Date.now() + 3_600_000;
  return {
    key: `${o.id}@1`,
    account: "bench",
    name: o.name,
    version: 1,
    sha256: o.up.sha256,
    size: o.up.size,
    artifactUrl: await artifactUrl(o.secret, o.edge, o.region, o.up.sha256, until),
    signature: { inputs: o.up.inputs, outputs: o.up.outputs },
    tokenizer: { sha256: o.tok.sha256, size: o.tok.size, url: await tokenizerUrl(o.secret, o.edge, o.region, o.tok.sha256, until) },
  };
}

// ---------------------------------------------------------------------------------------------
// Load shapes

/** Starts stream number i and resolves with its timeline. */
export type StreamRun = (i: number) => Promise<StreamSample>;
/** The text stream number i must come back with; null: not checked (the floor itself). */
export type ExpectedText = ((i: number) => string | Promise<string>) | null;

/** Streams gathered over one or more runs of a load shape. */
export interface Samples {
  streams: StreamSample[];
  errors: string[];
  elapsedMs: number;
}

export const noSamples = (): Samples => ({ streams: [], errors: [], elapsedMs: 0 });

async function checkedStream(run: StreamRun, i: number, expected: ExpectedText, into: Samples): Promise<void> {
  try {
    const s = await run(i);
    if (expected && s.text !== (await expected(i))) throw new Error(`stream ${i}: text differs from the expected text`);
    into.streams.push(s);
  } catch (e) {
    into.errors.push((e as Error).message);
  }
}

/** Streams 0..runs-1, one after another. */
export async function sequential(run: StreamRun, runs: number, expected: ExpectedText, into = noSamples()): Promise<Samples> {
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) await checkedStream(run, i, expected, into);
  into.elapsedMs += performance.now() - t0;
  return into;
}

/** Streams 0..n-1 at once, each started at a random point within `spreadMs` (so they are not in lockstep). */
export async function concurrent(run: StreamRun, n: number, expected: ExpectedText, into = noSamples(), spreadMs = 0): Promise<Samples> {
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      if (spreadMs > 0) await new Promise((r) => setTimeout(r, Math.random() * spreadMs));
      await checkedStream(run, i, expected, into);
    }),
  );
  into.elapsedMs += performance.now() - t0;
  return into;
}

export interface StreamStats {
  streams: number;
  tokens: number;
  errors: number;
  /** The first few error messages, for the report. */
  errorSamples: string[];
  elapsedMs: number;
  tokensPerSec: number;
  ttft: Summary;
  itl: Summary;
  /** Request sent -> last token. */
  last: Summary;
  /** SSE over fetch only (empty otherwise). */
  headers: Summary;
  /** Share of gaps under `burstMs`: tokens that came in the same read as the one before. */
  burstShare: number;
}

export function streamStats(s: Samples, burstMs = 0.1): StreamStats {
  const gaps = s.streams.reduce((n, x) => n + x.gaps.length, 0);
  const tokens = gaps + s.streams.length;
  return {
    streams: s.streams.length,
    tokens,
    errors: s.errors.length,
    errorSamples: s.errors.slice(0, 5),
    elapsedMs: s.elapsedMs,
    tokensPerSec: (tokens * 1000) / s.elapsedMs,
    ttft: summarize(s.streams.map((x) => x.ttftMs)),
    itl: summarize(s.streams.flatMap((x) => x.gaps)),
    last: summarize(s.streams.map((x) => x.lastMs)),
    headers: summarize(s.streams.flatMap((x) => (x.headersMs === undefined ? [] : [x.headersMs]))),
    burstShare: ratio(s.streams.reduce((n, x) => n + x.gaps.filter((g) => g < burstMs).length, 0), gaps),
  };
}

export interface SweepLevel {
  streams: number;
  stats: StreamStats;
  /** p99 ITL at this level over p99 ITL at one stream. */
  p99Ratio: number;
  /** CPU ms per stream at this level, by part (SweepOptions.cpu): the whole level's over its streams. */
  cpuMsPerStream?: Record<string, number>;
}

export interface Sweep {
  rows: SweepLevel[];
  /** The largest level with every level up to it free of errors and under twice the one-stream p99 ITL. */
  carried: number;
}

export interface SweepOptions {
  /** The one-stream level runs this many streams one after another (its p99 is the yardstick). */
  baseRuns: number;
  /** Each level's streams start spread over this long. */
  spreadMs: number;
  expected: ExpectedText;
  /** Go on past the first level that doubled or failed (the whole curve, not just the knee). */
  allLevels?: boolean;
  /** CPU ms used so far by each part of the mesh (read before and after each level's streams). */
  cpu?: () => Record<string, number>;
}

/**
 * Runs `levels` (the first one 1) in order: for each, `prepare(n)` opens what n streams need,
 * the streams run, `close` ends them. Stops after the first level whose p99 ITL reached twice
 * the one-stream p99 or that had an error, unless `allLevels`.
 */
export async function sweep(name: string, levels: readonly number[], prepare: (n: number) => Promise<{ run: StreamRun; close: () => void }>, opts: SweepOptions): Promise<Sweep> {
  const rows: SweepLevel[] = [];
  let base = NaN;
  let carried = 0;
  for (const n of levels) {
    const { run, close } = await prepare(n);
    const cpu0 = opts.cpu?.();
    const samples = n === 1 ? await sequential(run, opts.baseRuns, opts.expected) : await concurrent(run, n, opts.expected, noSamples(), opts.spreadMs);
    const cpu1 = opts.cpu?.();
    close();
    const m = streamStats(samples);
    if (n === 1) base = m.itl.p99;
    const r = ratio(m.itl.p99, base);
    const streams = n === 1 ? opts.baseRuns : n;
    const cpuMsPerStream = cpu0 && cpu1 ? Object.fromEntries(Object.keys(cpu1).map((k) => [k, (cpu1[k]! - (cpu0[k] ?? 0)) / streams])) : undefined;
    rows.push({ streams: n, stats: m, p99Ratio: r, ...(cpuMsPerStream ? { cpuMsPerStream } : {}) });
    err(`[bench] ${name} ${n} streams: itl p50 ${fmt(m.itl.p50)} p99 ${fmt(m.itl.p99)} ms (x${fmt(r)}), ttft p99 ${fmt(m.ttft.p99)} ms, errors ${m.errors}${m.errors ? ` (${m.errorSamples[0]})` : ""}`);
    const ok = m.errors === 0 && r < 2;
    if (ok && carried === (rows.at(-2)?.streams ?? 0)) carried = n;
    if (!ok && !opts.allLevels) break;
  }
  return { rows, carried };
}

/** "N (doubled or failed at M)", or "at least N (the largest level tried)". */
export function sweepVerdict(s: Sweep): string {
  if (s.rows.length === 0) return "not measured";
  const broke = s.rows.find((r) => r.p99Ratio >= 2 || r.stats.errors > 0);
  return broke ? `${s.carried} (doubled or failed at ${broke.streams})` : `at least ${s.carried} (the largest level tried)`;
}

/** Opens ceil(n / perSocket) sockets (at least one) and spreads streams over them, stream i on socket i mod count. */
export async function socketsFor<S extends { close(): void }>(n: number, perSocket: number, open: (k: number) => Promise<S>, start: (s: S, i: number) => Promise<StreamSample>): Promise<{ run: StreamRun; close: () => void }> {
  const ss: S[] = [];
  for (let k = 0; k < Math.max(1, Math.ceil(n / perSocket)); k++) ss.push(await open(k));
  return { run: (i) => start(ss[i % ss.length]!, i), close: () => ss.forEach((s) => s.close()) };
}
