// A test client for the generation routes: a WebSocket that keeps every event per request id
// with its arrival time, optional automatic acks, and an SSE reader. Plus the region's signed
// stream stats, a process's resident memory from /proc, and the in-process reference
// generation (the same model file and tokenizer, onnxruntime in this process).

import { readFile } from "node:fs/promises";
import * as ort from "onnxruntime-node";
import WebSocket from "ws";
import { createCodec } from "../../protocol/codec.js";
import { signRequest } from "../../protocol/signing.js";
import { parseRegionToEdge, unbatch } from "../../protocol/messages.js";
import { loadTokenizer, type Tokenizer } from "../../formats/tokenizer.js";
import { generateText, type GenerateOptions } from "../../gpu-node/full-context-generator.js";
import { waitUntil } from "./region-harness.js";

export interface Received {
  ev: any;
  at: number;
}

export interface Ended {
  tokens: Received[];
  progress: Received[];
  end: Received;
  text: string;
}

export interface GenerateMessage {
  text_input: string;
  parameters?: Record<string, unknown>;
  window?: number;
}

export class StreamClient {
  readonly events = new Map<string, Received[]>();
  /** Every event in arrival order (ids interleaved). */
  readonly all: Received[] = [];
  private readonly waiters = new Map<string, (e: Ended) => void>();
  private readonly codec = createCodec();
  /** Ids whose tokens are acknowledged as they come. */
  private readonly autoAck = new Set<string>();
  /** Every message's shape in arrival order: 0 for a lone event, n for an array of n events (`?batch=true`). */
  readonly shapes: number[] = [];
  closed: { code: number; reason: string } | null = null;

  private constructor(
    readonly ws: WebSocket,
    readonly msgpack: boolean,
  ) {
    ws.on("message", (data, isBinary) => {
      const m = isBinary ? (this.codec.decode(data as Buffer) as any) : JSON.parse(String(data));
      this.shapes.push(Array.isArray(m) ? m.length : 0);
      const at = performance.now();
      for (const ev of Array.isArray(m) ? m : [m]) this.received({ ev, at });
    });
    ws.on("close", (code, reason) => (this.closed = { code, reason: String(reason) }));
  }

  private received(r: Received): void {
    const ev = r.ev;
    this.all.push(r);
    const id = ev.id ?? "";
    const list = this.events.get(id) ?? [];
    list.push(r);
    this.events.set(id, list);
    if (ev.type === "token" && this.autoAck.has(id)) this.send({ type: "ack", id, tokens: ev.index + 1 });
    if (ev.type === "done" || ev.type === "error") {
      const w = this.waiters.get(id);
      this.waiters.delete(id);
      w?.(this.summary(id));
    }
  }

  /** Opens a socket; `protocols` (e.g. the browser-style key protocol) instead of the header; `batch`: `?batch=true` (arrays of events). */
  static open(url: string, opts: { key?: string; protocols?: string[]; msgpack?: boolean; batch?: boolean; headers?: Record<string, string> } = {}): Promise<StreamClient> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.key) headers.authorization = `Bearer ${opts.key}`;
      const query = [opts.msgpack ? "format=msgpack" : "", opts.batch ? "batch=true" : ""].filter(Boolean).join("&");
      const ws = new WebSocket(url + (query ? `?${query}` : ""), opts.protocols ?? [], { headers, perMessageDeflate: false });
      const client = new StreamClient(ws, !!opts.msgpack);
      ws.once("open", () => resolve(client));
      ws.once("unexpected-response", (_req, res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c));
        res.on("end", () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), { status: res.statusCode, body })));
      });
      ws.once("error", (err) => reject(err));
    });
  }

  send(msg: Record<string, unknown>): void {
    if (this.msgpack) this.ws.send(this.codec.encode(msg), { binary: true });
    else this.ws.send(JSON.stringify(msg));
  }

  generate(id: string, msg: GenerateMessage, opts: { autoAck?: boolean } = {}): Promise<Ended> {
    if (opts.autoAck) this.autoAck.add(id);
    const ended = new Promise<Ended>((resolve) => this.waiters.set(id, resolve));
    this.send({ type: "generate", id, ...msg });
    return ended;
  }

  cancel(id: string): void {
    this.send({ type: "cancel", id });
  }

  tokensOf(id: string): Received[] {
    return (this.events.get(id) ?? []).filter((r) => r.ev.type === "token");
  }

  /** Resolves once `id` has received n tokens. */
  async waitTokens(id: string, n: number, timeoutMs = 15_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.tokensOf(id).length < n) {
      if (Date.now() > until) throw new Error(`${id}: ${this.tokensOf(id).length} tokens after ${timeoutMs} ms, wanted ${n}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  summary(id: string): Ended {
    const list = this.events.get(id) ?? [];
    const tokens = list.filter((r) => r.ev.type === "token");
    return {
      tokens,
      progress: list.filter((r) => r.ev.type === "progress"),
      end: list.find((r) => r.ev.type === "done" || r.ev.type === "error")!,
      text: tokens.map((r) => r.ev.text_output).join(""),
    };
  }

  close(): void {
    this.ws.close();
  }
}

/** Reads a Server-Sent Events response as it arrives; `stopAfter` tokens aborts the request. */
export async function readSse(
  res: Response,
  opts: { onEvent?: (ev: any) => void; stopAfter?: number; abort?: AbortController } = {},
): Promise<Received[]> {
  const out: Received[] = [];
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let tokens = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block
        .split("\n")
        .filter((l) => l.startsWith("data: "))
        .map((l) => l.slice(6))
        .join("\n");
      if (!data) continue;
      const ev = JSON.parse(data);
      out.push({ ev, at: performance.now() });
      opts.onEvent?.(ev);
      if (ev.type === "token" && opts.stopAfter !== undefined && ++tokens >= opts.stopAfter) {
        opts.abort?.abort();
        await reader.cancel().catch(() => undefined);
        return out;
      }
    }
  }
  return out;
}

export interface StreamStats {
  region: string;
  router: { rssMb: number; heapUsedMb: number; streaming: number; sockets: number; queued: number; running: number; bufferedBytes: number; tokensRelayed: number };
  nodes: { id: string; streams: number; streamSlots: number; active: number; tokens: number; rssMb: number | null; heapUsedMb: number | null }[];
}

/** The router's signed GET /v1/streams/stats. */
export async function streamStats(routerUrl: string, secret: string): Promise<StreamStats> {
  const headers = await signRequest(secret, "GET", "/v1/streams/stats");
  const res = await fetch(routerUrl + "/v1/streams/stats", { headers, signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`stream stats: ${res.status} ${await res.text()}`);
  return (await res.json()) as StreamStats;
}

/**
 * Waits until a one-node region runs no generation and the node's token counter has stopped
 * moving (two reads alike); gives that count. What a test compares before and after a cancel.
 */
export async function nodeIdle(stats: () => Promise<StreamStats>, timeoutMs = 30_000): Promise<number> {
  let last = -1;
  return waitUntil(
    "node idle",
    timeoutMs,
    async () => {
      const s = await stats();
      const n = s.nodes[0]!;
      const settled = n.active === 0 && s.router.running === 0 && n.tokens === last;
      last = n.tokens;
      return settled ? n.tokens : undefined;
    },
    250,
  );
}

/** Resident memory of a process, MiB, from /proc (Linux). */
export async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+)\s+kB/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

/** The pids of a process's descendants whose command name is `name` (e.g. workerd). */
export async function descendantsNamed(root: number, name: string): Promise<number[]> {
  const { readdir } = await import("node:fs/promises");
  const parent = new Map<number, number>();
  const comm = new Map<number, string>();
  for (const e of await readdir("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = await readFile(`/proc/${e}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      comm.set(Number(e), stat.slice(stat.indexOf("(") + 1, close));
      parent.set(Number(e), Number(stat.slice(close + 2).split(" ")[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  for (const [pid, c] of comm) {
    if (c !== name) continue;
    for (let p = parent.get(pid); p !== undefined && p > 1; p = parent.get(p)) {
      if (p === root) {
        out.push(pid);
        break;
      }
    }
  }
  return out;
}

/** The generation in this process: the truth the mesh's answers are checked against. */
export class ReferenceModel {
  private constructor(
    readonly session: ort.InferenceSession,
    readonly tokenizer: Tokenizer,
  ) {}

  static async load(modelPath: string, tokenizerPath: string): Promise<ReferenceModel> {
    const session = await ort.InferenceSession.create(modelPath, { executionProviders: ["cpu"] });
    return new ReferenceModel(session, loadTokenizer(await readFile(tokenizerPath, "utf8")));
  }

  /** What the node must produce for the same prompt and (KServe-style) parameters. */
  text(prompt: string, p: { max_tokens?: number; temperature?: number; top_k?: number; seed?: number; stop?: string[] }): Promise<string> {
    const opts: GenerateOptions = {
      maxTokens: p.max_tokens ?? 64,
      temperature: p.temperature ?? 1,
      topK: p.top_k ?? 0,
      ...(p.seed !== undefined ? { seed: p.seed } : {}),
      stop: p.stop ?? [],
    };
    return generateText(this.session, this.tokenizer, prompt, opts);
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

/**
 * A raw edge->region stream socket (`GET /v1/streams`), as the edge opens it or as an attacker
 * who captured an opening would: frames go out as given (a generate carries whatever request
 * bytes and grant the test chose), and every frame back is kept per stream id.
 */
export class RegionStream {
  readonly frames: any[] = [];
  private readonly codec = createCodec();
  closed: { code: number } | null = null;
  /** Socket messages that were batches (`{t:"batch"}`), and all messages. */
  batches = 0;
  messages = 0;
  /** The router's wire announcement on the 101 (`x-mesh-wire`), if it sent one. */
  wire: string | undefined;

  private constructor(
    readonly ws: WebSocket,
    /**
     * False: this client stands in for an edge from before batches: a batch is refused as such
     * an edge refused it (the socket closed with 1002), so its streams cannot end well.
     */
    takesBatch: boolean,
  ) {
    ws.on("message", (data) => {
      const decoded = this.codec.decode(data as Buffer) as { t?: unknown };
      this.messages++;
      if (decoded?.t === "batch") {
        this.batches++;
        if (!takesBatch) return void ws.close(1002, "bad frame");
      }
      // A message may be a batch of frames (protocol/frame-batch.ts): each is checked and kept.
      this.frames.push(...unbatch(decoded, parseRegionToEdge));
    });
    ws.on("close", (code) => (this.closed = { code }));
  }

  /**
   * Opens with these upgrade headers (signRequest(secret, "GET", "/v1/streams") for a valid
   * one; add `x-mesh-wire` to announce versions and features, protocol/wire-version.ts).
   * `takesBatch` false: refuse batches, as an edge from before them did.
   */
  static open(routerUrl: string, headers: Record<string, string>, opts: { takesBatch?: boolean } = {}): Promise<RegionStream> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(routerUrl.replace(/^http/, "ws") + "/v1/streams", { headers, perMessageDeflate: false });
      let wire: string | undefined;
      ws.once("upgrade", (res) => (wire = res.headers["x-mesh-wire"] as string | undefined));
      ws.once("open", () => {
        const s = new RegionStream(ws, opts.takesBatch ?? true);
        s.wire = wire;
        resolve(s);
      });
      ws.once("unexpected-response", (_q, res) => {
        let body = "";
        res.on("data", (c: Buffer) => (body += c));
        res.on("end", () => reject(Object.assign(new Error(`upgrade refused: ${res.statusCode} ${body}`), { status: res.statusCode, body })));
      });
      ws.once("error", reject);
    });
  }

  /** A generate frame: the request as msgpack bytes (encode a RegionGenerateRequest) and its grant. */
  generate(sid: string, req: Uint8Array, grant: Record<string, string>, window = 64): void {
    this.ws.send(this.codec.encode({ t: "generate", sid, req, grant, window }), { binary: true });
  }

  /** Any value, msgpack-encoded, as one message (a hostile batch, say). */
  sendRaw(value: unknown): void {
    this.ws.send(this.codec.encode(value), { binary: true });
  }

  /** Resolves with the frame that ends stream `sid` (done or error). */
  async end(sid: string, timeoutMs = 30_000): Promise<any> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      const f = this.frames.find((x) => x.sid === sid && (x.t === "done" || x.t === "error"));
      if (f) return f;
      if (this.closed) throw new Error(`stream socket closed (${this.closed.code}) before ${sid} ended`);
      if (Date.now() > until) throw new Error(`${sid}: no end within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  of(sid: string): any[] {
    return this.frames.filter((x) => x.sid === sid);
  }

  close(): void {
    this.ws.close();
  }
}
