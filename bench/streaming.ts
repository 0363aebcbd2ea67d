// Streaming generation through the mesh against the same token loop run in-process (the floor):
// time to first token (TTFT) and inter-token latency (ITL), p50 and p99, and how many
// concurrent streams one router carries before its p99 inter-token latency doubles.
//
// One run, one machine, the demo-chat model (scripts/make-char-model.ts), two regions:
//
//   floor          gpu-node/full-context-generator.ts in this process, same model file and tokenizer
//   mesh ws        WebSocket to the edge (workerd) -> region router -> node, one stream at a time
//   mesh sse       Server-Sent Events, same path
//   sweep          N concurrent streams of a model whose node takes PACE_MS per token (what a
//                  real decoder's step costs; the demo model's step is ~0.1 ms, so without a
//                  pace the node's CPU, not the relay, would be all that is measured), through
//                  the edge and straight to the router's stream socket (signed, as the edge
//                  does): the router "carries" N when p99 ITL at N is under twice its p99 ITL
//                  at one stream.
//
// Every text is checked against the floor's for the same seed. Data residency pins each model
// to its region: demo-chat (no pace) to us-west, chat-paced to ap-seoul.
//
// Run: npm run bench:streaming            (about two minutes)
//      npx tsx bench/streaming.ts --quick  (smoke run)
//
// Prints tables and writes bench/results/streaming-<timestamp>.json and streaming-latest.json.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import WebSocket from "ws";
import { createCodec } from "../protocol/codec.js";
import { GENERATE_GRANT_METHOD, type EdgeToRegion, type ModelRef, type RegionGenerateRequest, type RegionToEdge } from "../protocol/messages.js";
import { signRequest, tokenizerUrl, artifactUrl } from "../protocol/signing.js";
import { loadTokenizer, type Tokenizer } from "../protocol/tokenizer.js";
import { generate, generateText } from "../gpu-node/full-context-generator.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { makeCharModel } from "../scripts/make-char-model.js";
import { fmt, formatTable, machineInfo, ratio, round, summarize, writeResults, type Summary } from "./stats.js";

const QUICK = process.argv.includes("--quick");
const TOKENS = 64;
const RUNS = QUICK ? 20 : 100;
const PACE_MS = 20;
const SWEEP_TOKENS = QUICK ? 25 : 50;
const LEVELS = QUICK ? [1, 8, 32, 64] : [1, 8, 32, 64, 128, 256, 512, 1024];
const PER_SOCKET = 32;
/** Streams run one after another for the one-stream level of a sweep. */
const BASE_RUNS = QUICK ? 4 : 10;
const PROMPT = "The river";
const params = (seed: number, max = TOKENS) => ({ max_tokens: max, temperature: 0.8, top_k: 0, seed });

const say = (line = "") => process.stdout.write(line + "\n");
const err = (line: string) => process.stderr.write(line + "\n");

// ---------------------------------------------------------------------------------------------
// Cleanup

let tmpDir: string | null = null;
let meshStarting: Promise<MeshHandle> | null = null;
let session: ort.InferenceSession | null = null;
const sockets = new Set<WebSocket>();
let cleanupPromise: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleanupPromise ??= (async () => {
    for (const ws of sockets) ws.terminate();
    const mesh = await meshStarting?.catch(() => null);
    if (mesh) await mesh.stop().catch((e: unknown) => err(`[bench] mesh stop failed: ${String(e)}`));
    await session?.release().catch(() => undefined);
    if (tmpDir) await rm(tmpDir, { recursive: true, force: true }).catch(() => undefined);
  })();
  return cleanupPromise;
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    err(`\n[bench] ${sig}: cleaning up...`);
    void cleanup().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------------
// Measurements

interface StreamSample {
  ttftMs: number;
  /** Gaps between consecutive tokens, ms. */
  gaps: number[];
  text: string;
}

interface Measured {
  ttft: Summary;
  itl: Summary;
  streams: number;
  tokens: number;
  errors: number;
  errorSamples: string[];
  elapsedMs: number;
  tokensPerSec: number;
}

function measured(samples: StreamSample[], errors: string[], elapsedMs: number): Measured {
  const tokens = samples.reduce((n, s) => n + s.gaps.length + 1, 0);
  return {
    ttft: summarize(samples.map((s) => s.ttftMs)),
    itl: summarize(samples.flatMap((s) => s.gaps)),
    streams: samples.length,
    tokens,
    errors: errors.length,
    errorSamples: errors.slice(0, 5),
    elapsedMs,
    tokensPerSec: (tokens * 1000) / elapsedMs,
  };
}

/** Collects one stream's token times (called with performance.now() of each token). */
class Timeline {
  private last = 0;
  first = 0;
  readonly gaps: number[] = [];
  text = "";
  constructor(readonly sentAt: number) {}
  token(text: string): void {
    const now = performance.now();
    if (this.first === 0) this.first = now;
    else this.gaps.push(now - this.last);
    this.last = now;
    this.text += text;
  }
  sample(): StreamSample {
    return { ttftMs: this.first - this.sentAt, gaps: this.gaps, text: this.text };
  }
}

// ---------------------------------------------------------------------------------------------
// The floor: the token loop in this process

async function floor(tokenizer: Tokenizer, paceMs: number, runs: number, max: number): Promise<Measured> {
  const samples: StreamSample[] = [];
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) {
    const p = params(i, max);
    const tl = new Timeline(performance.now());
    for await (const t of generate(session!, tokenizer, PROMPT, { maxTokens: p.max_tokens, temperature: p.temperature, topK: p.top_k, seed: p.seed })) {
      if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs));
      tl.token(t.token);
    }
    samples.push(tl.sample());
  }
  return measured(samples, [], performance.now() - t0);
}

// ---------------------------------------------------------------------------------------------
// Edge clients: WebSocket (many streams per socket) and SSE

class EdgeSocket {
  private readonly lines = new Map<string, { tl: Timeline; resolve: (s: StreamSample) => void; reject: (e: Error) => void }>();
  private constructor(readonly ws: WebSocket) {
    ws.on("message", (data) => {
      const ev = JSON.parse(String(data)) as { type: string; id: string; text_output?: string; error?: string; code?: string };
      const l = this.lines.get(ev.id);
      if (!l) return;
      if (ev.type === "token") l.tl.token(ev.text_output!);
      else if (ev.type === "done") {
        this.lines.delete(ev.id);
        l.resolve(l.tl.sample());
      } else if (ev.type === "error") {
        this.lines.delete(ev.id);
        l.reject(new Error(`${ev.code}: ${ev.error}`));
      }
    });
    ws.on("close", () => {
      for (const l of this.lines.values()) l.reject(new Error("socket closed"));
      this.lines.clear();
    });
  }

  static open(url: string, key: string): Promise<EdgeSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${key}` }, perMessageDeflate: false });
      sockets.add(ws);
      ws.once("open", () => resolve(new EdgeSocket(ws)));
      ws.once("error", reject);
      ws.once("unexpected-response", (_q, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
  }

  generate(id: string, p: ReturnType<typeof params>): Promise<StreamSample> {
    return new Promise((resolve, reject) => {
      this.lines.set(id, { tl: new Timeline(performance.now()), resolve, reject });
      this.ws.send(JSON.stringify({ type: "generate", id, text_input: PROMPT, parameters: p }));
    });
  }

  close(): void {
    this.ws.close();
    sockets.delete(this.ws);
  }
}

async function sse(edge: string, key: string, model: string, p: ReturnType<typeof params>): Promise<StreamSample> {
  const tl = new Timeline(performance.now());
  const res = await fetch(`${edge}/v2/models/${model}/generate_stream`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ text_input: PROMPT, parameters: p }),
  });
  if (!res.ok || !res.body) throw new Error(`SSE ${res.status}: ${await res.text()}`);
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const data = buf.slice(0, i).split("\n").find((l) => l.startsWith("data: "));
      buf = buf.slice(i + 2);
      if (!data) continue;
      const ev = JSON.parse(data.slice(6)) as { type: string; text_output?: string; error?: string };
      if (ev.type === "token") tl.token(ev.text_output!);
      else if (ev.type === "error") throw new Error(ev.error);
    }
  }
  return tl.sample();
}

// ---------------------------------------------------------------------------------------------
// Straight to a router's stream socket (what the edge does), for the router's own capacity

class RouterSocket {
  private readonly codec = createCodec();
  private readonly lines = new Map<string, { tl: Timeline; resolve: (s: StreamSample) => void; reject: (e: Error) => void }>();
  private constructor(
    readonly ws: WebSocket,
    /** The region's secret: each generate carries its own grant, as the edge sends it. */
    private readonly secret: string,
  ) {
    ws.on("message", (data) => {
      const f = this.codec.decode(data as Buffer) as RegionToEdge;
      if (f.t === "pong") return; // the answer to an edge's liveness ping: this bench sends none
      const l = this.lines.get(f.sid);
      if (!l) return;
      if (f.t === "token") l.tl.token(f.text);
      else if (f.t === "done") {
        this.lines.delete(f.sid);
        l.resolve(l.tl.sample());
      } else if (f.t === "error") {
        this.lines.delete(f.sid);
        l.reject(new Error(`${f.code}: ${f.message}`));
      }
    });
    ws.on("close", () => {
      for (const l of this.lines.values()) l.reject(new Error("socket closed"));
      this.lines.clear();
    });
  }

  static async open(routerUrl: string, secret: string): Promise<RouterSocket> {
    const headers = await signRequest(secret, "GET", "/v1/streams");
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(routerUrl.replace(/^http/, "ws") + "/v1/streams", { headers, perMessageDeflate: false });
      sockets.add(ws);
      ws.once("open", () => resolve(new RouterSocket(ws, secret)));
      ws.once("error", reject);
      ws.once("unexpected-response", (_q, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    });
  }

  generate(sid: string, model: ModelRef, p: ReturnType<typeof params>): Promise<StreamSample> {
    return new Promise((resolve, reject) => {
      this.lines.set(sid, { tl: new Timeline(performance.now()), resolve, reject });
      const req: RegionGenerateRequest = {
        requestId: `bench-${sid}`,
        model,
        prompt: PROMPT,
        params: { maxTokens: p.max_tokens, temperature: p.temperature, topK: p.top_k, topP: 1, repetitionPenalty: 1, seed: p.seed, stop: [] },
        deadline: Date.now() + 60_000,
      };
      const bytes = this.codec.encode(req);
      void signRequest(this.secret, GENERATE_GRANT_METHOD, "/v1/streams", bytes).then((grant) => {
        const frame: EdgeToRegion = { t: "generate", sid, window: 256, req: bytes, grant };
        this.ws.send(this.codec.encode(frame), { binary: true });
      }, reject);
    });
  }

  close(): void {
    this.ws.close();
    sockets.delete(this.ws);
  }
}

// ---------------------------------------------------------------------------------------------
// Phases

async function sequential(run: (i: number) => Promise<StreamSample>, runs: number, expected: (i: number) => Promise<string>): Promise<Measured> {
  const samples: StreamSample[] = [];
  const errors: string[] = [];
  const t0 = performance.now();
  for (let i = 0; i < runs; i++) {
    try {
      const s = await run(i);
      if (s.text !== (await expected(i))) throw new Error(`stream ${i}: text differs from the floor's`);
      samples.push(s);
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  return measured(samples, errors, performance.now() - t0);
}

async function concurrent(n: number, start: (i: number) => Promise<StreamSample>, expected: (i: number) => Promise<string>): Promise<Measured> {
  const errors: string[] = [];
  const t0 = performance.now();
  const results = await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      // Spread over one pace so the streams are not in lockstep.
      await new Promise((r) => setTimeout(r, Math.random() * PACE_MS));
      try {
        const s = await start(i);
        if (s.text !== (await expected(i))) throw new Error(`stream ${i}: text differs from the floor's`);
        return s;
      } catch (e) {
        errors.push((e as Error).message);
        return null;
      }
    }),
  );
  return measured(results.filter((s): s is StreamSample => s !== null), errors, performance.now() - t0);
}

interface SweepRow {
  streams: number;
  m: Measured;
  p99Ratio: number;
}

async function sweep(name: string, open: () => Promise<{ run: (i: number) => Promise<StreamSample>; close: () => void }[]>, socketsFor: (n: number) => number, expected: (i: number) => Promise<string>): Promise<{ rows: SweepRow[]; carried: number }> {
  const rows: SweepRow[] = [];
  let base = NaN;
  let carried = 0;
  for (const n of LEVELS) {
    const conns: { run: (i: number) => Promise<StreamSample>; close: () => void }[] = [];
    for (let k = 0; k < socketsFor(n); k++) conns.push(...(await open()));
    // One stream: several in a row, so its p99 (the yardstick) rests on enough gaps.
    const m =
      n === 1
        ? await sequential((i) => conns[0]!.run(i), BASE_RUNS, expected)
        : await concurrent(n, (i) => conns[i % conns.length]!.run(i), expected);
    for (const c of conns) c.close();
    if (n === 1) base = m.itl.p99;
    const r = ratio(m.itl.p99, base);
    rows.push({ streams: n, m, p99Ratio: r });
    err(`[bench] ${name} ${n} streams: itl p50 ${fmt(m.itl.p50)} p99 ${fmt(m.itl.p99)} ms (x${fmt(r)}), ttft p99 ${fmt(m.ttft.p99)} ms, errors ${m.errors}`);
    if (m.errors > 0 || !(r < 2)) break;
    carried = n;
  }
  return { rows, carried };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  tmpDir = await mkdtemp(join(os.tmpdir(), "bench-streaming-"));
  const files = await makeCharModel(join(tmpDir, "models"));
  session = await ort.InferenceSession.create(files.modelPath, { executionProviders: ["cpu"] });
  const tokenizerText = await readFile(files.tokenizerPath, "utf8");
  const tokenizer = loadTokenizer(tokenizerText);
  const texts = new Map<string, Promise<string>>();
  const expected = (seed: number, max = TOKENS) => {
    const k = `${seed}/${max}`;
    let t = texts.get(k);
    if (!t) {
      const p = params(seed, max);
      t = generateText(session!, tokenizer, PROMPT, { maxTokens: p.max_tokens, temperature: p.temperature, topK: p.top_k, seed: p.seed });
      texts.set(k, t);
    }
    return t;
  };

  err("[bench] floor: the token loop in this process");
  await floor(tokenizer, 0, 10, TOKENS);
  const floorRun = await floor(tokenizer, 0, RUNS, TOKENS);
  const floorPaced = await floor(tokenizer, PACE_MS, QUICK ? 3 : 10, SWEEP_TOKENS);

  err("[bench] starting the mesh (two regions, one node each)");
  meshStarting = startMesh({
    stateDir: join(tmpDir, "mesh"),
    regions: [
      { name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 },
      { name: "ap-seoul", lat: 37.57, lon: 126.98, nodes: 1 },
    ],
    nodeEnv: { NODE_STREAMS: "4096", MESH_EXECUTION_PROVIDER: "cpu" },
    regionNodeEnv: { "ap-seoul": { MESH_SIMULATED_TOKEN_MS: String(PACE_MS) } },
    routerEnv: { MAX_STREAMS_PER_SOCKET: "4096", MAX_INFLIGHT: "8192", MAX_QUEUE_PER_MODEL: "4096" },
    edgeVars: { EXPLORATION_SHARE: "0" },
    progress: (l) => err(l),
  });
  const mesh = await meshStarting;
  const key = mesh.apiKey;
  const api = async (method: string, path: string, body?: BodyInit, type = "application/json") => {
    const res = await fetch(mesh.edge + path, { method, body, headers: { authorization: `Bearer ${key}`, "content-type": type } });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as Record<string, any>;
  };
  await api("PUT", "/v1/models/demo-chat", JSON.stringify({ regions: ["us-west"] }));
  await api("POST", "/v1/models", JSON.stringify({ name: "chat-paced" }));
  const up = await api("POST", "/v1/models/chat-paced/versions", await readFile(files.modelPath), "application/octet-stream");
  const tok = await api("PUT", "/v1/models/chat-paced/versions/1/tokenizer", tokenizerText);
  const paced = await api("PUT", "/v1/models/chat-paced", JSON.stringify({ regions: ["ap-seoul"] }));
  const wsUrl = (model: string) => `${mesh.edge.replace(/^http/, "ws")}/v2/models/${model}/stream`;

  // --- one stream at a time through the edge
  err("[bench] mesh: one stream at a time (WebSocket, then SSE)");
  const edgeWs = await EdgeSocket.open(wsUrl("demo-chat"), key);
  for (let i = 0; i < 10; i++) await edgeWs.generate(`warm-${i}`, params(i));
  let seq = 0;
  const meshWs = await sequential((i) => edgeWs.generate(`s-${seq++}`, params(i)), RUNS, (i) => expected(i));
  edgeWs.close();
  for (let i = 0; i < 5; i++) await sse(mesh.edge, key, "demo-chat", params(i));
  const meshSse = await sequential((i) => sse(mesh.edge, key, "demo-chat", params(i)), Math.ceil(RUNS / 2), (i) => expected(i));

  // --- concurrency sweeps on the paced model (ap-seoul)
  const pacedWs = await EdgeSocket.open(wsUrl("chat-paced"), key);
  for (let i = 0; i < 3; i++) await pacedWs.generate(`warm-paced-${i}`, params(i, SWEEP_TOKENS));
  pacedWs.close();
  const sweepExpected = (i: number) => expected(i, SWEEP_TOKENS);
  err(`[bench] sweep through the edge (${PACE_MS} ms per token at the node)`);
  let sid = 0;
  const viaEdge = await sweep(
    "edge",
    async () => {
      const s = await EdgeSocket.open(wsUrl("chat-paced"), key);
      return [{ run: (i: number) => s.generate(`c-${sid++}`, params(i, SWEEP_TOKENS)), close: () => s.close() }];
    },
    (n) => Math.max(1, Math.ceil(n / PER_SOCKET)),
    sweepExpected,
  );
  const model: ModelRef = {
    key: `${paced.id}@1`,
    account: "bench",
    name: "chat-paced",
    version: 1,
    sha256: up.sha256,
    size: up.size,
    artifactUrl: await artifactUrl(mesh.regionSecrets["ap-seoul"]!, mesh.edge, "ap-seoul", up.sha256, Date.now() + 3_600_000),
    signature: { inputs: up.inputs, outputs: up.outputs },
    tokenizer: { sha256: tok.sha256, size: tok.size, url: await tokenizerUrl(mesh.regionSecrets["ap-seoul"]!, mesh.edge, "ap-seoul", tok.sha256, Date.now() + 3_600_000) },
  };
  err("[bench] sweep straight to the router's stream socket");
  const viaRouter = await sweep(
    "router",
    async () => {
      const s = await RouterSocket.open(mesh.regions["ap-seoul"]!, mesh.regionSecrets["ap-seoul"]!);
      return [{ run: (i: number) => s.generate(`r-${sid++}`, model, params(i, SWEEP_TOKENS)), close: () => s.close() }];
    },
    (n) => Math.max(1, Math.ceil(n / 256)),
    sweepExpected,
  );

  // --- report
  say();
  say(`Streaming: demo-chat, "${PROMPT}", ${TOKENS} tokens per stream, temperature 0.8, seeded (every text equal to the floor's)`);
  say();
  const row = (name: string, m: Measured, base: Measured) => [
    name,
    String(m.streams),
    fmt(m.ttft.p50, 3),
    fmt(m.ttft.p99, 3),
    fmt(m.itl.p50, 3),
    fmt(m.itl.p99, 3),
    fmt(ratio(m.ttft.p50, base.ttft.p50), 1) + "x",
    fmt(ratio(m.itl.p50, base.itl.p50), 1) + "x",
    fmt(m.tokensPerSec, 0),
    String(m.errors),
  ];
  const head = ["variant", "streams", "ttft p50", "ttft p99", "itl p50", "itl p99", "ttft/floor", "itl/floor", "tok/s", "errors"];
  say(formatTable(head, [row("floor (in-process)", floorRun, floorRun), row("mesh ws", meshWs, floorRun), row("mesh sse", meshSse, floorRun)]));
  say();
  say(`Concurrent streams, node at ${PACE_MS} ms per token (floor with the same pace: itl p50 ${fmt(floorPaced.itl.p50)} p99 ${fmt(floorPaced.itl.p99)} ms), ${SWEEP_TOKENS} tokens each:`);
  say();
  const sweepRows = (name: string, s: { rows: SweepRow[] }) =>
    s.rows.map((r) => [name, String(r.streams), fmt(r.m.ttft.p50), fmt(r.m.ttft.p99), fmt(r.m.itl.p50), fmt(r.m.itl.p99), fmt(r.p99Ratio) + "x", fmt(r.m.tokensPerSec, 0), String(r.m.errors)]);
  say(formatTable(["path", "streams", "ttft p50", "ttft p99", "itl p50", "itl p99", "itl p99 / 1 stream", "tok/s", "errors"], [...sweepRows("edge+router", viaEdge), ...sweepRows("router", viaRouter)]));
  say();
  const last = (s: { rows: SweepRow[] }) => s.rows.at(-1)!.streams;
  const verdict = (s: { rows: SweepRow[]; carried: number }) =>
    s.rows.at(-1)!.p99Ratio >= 2 || s.rows.at(-1)!.m.errors > 0 ? `${s.carried} (doubled or failed at ${last(s)})` : `at least ${s.carried} (the largest level tried)`;
  say(`Concurrent streams one router carries before p99 ITL doubles: ${verdict(viaRouter)} straight to the router, ${verdict(viaEdge)} through the edge.`);
  say("Times in ms. TTFT: request sent to first token received; ITL: gap between consecutive tokens of a stream, at the client.");

  const summary = (m: Measured) => ({
    streams: m.streams,
    tokens: m.tokens,
    errors: m.errors,
    errorSamples: m.errorSamples,
    tokensPerSec: round(m.tokensPerSec, 1),
    ttftMs: { p50: round(m.ttft.p50), p90: round(m.ttft.p90), p99: round(m.ttft.p99), mean: round(m.ttft.mean) },
    itlMs: { p50: round(m.itl.p50), p90: round(m.itl.p90), p99: round(m.itl.p99), mean: round(m.itl.mean) },
  });
  const { file } = await writeResults("streaming", {
    bench: "streaming",
    quick: QUICK,
    machine: machineInfo(),
    model: { name: "demo-chat", tokens: TOKENS, prompt: PROMPT },
    sequential: { floor: summary(floorRun), meshWs: summary(meshWs), meshSse: summary(meshSse) },
    ratios: {
      wsTtftP50: round(ratio(meshWs.ttft.p50, floorRun.ttft.p50), 2),
      wsItlP50: round(ratio(meshWs.itl.p50, floorRun.itl.p50), 2),
      wsItlP99: round(ratio(meshWs.itl.p99, floorRun.itl.p99), 2),
    },
    sweep: {
      paceMs: PACE_MS,
      tokensPerStream: SWEEP_TOKENS,
      floorPaced: summary(floorPaced),
      viaEdge: { carried: viaEdge.carried, levels: viaEdge.rows.map((r) => ({ ...summary(r.m), p99Ratio: round(r.p99Ratio, 2) })) },
      viaRouter: { carried: viaRouter.carried, levels: viaRouter.rows.map((r) => ({ ...summary(r.m), p99Ratio: round(r.p99Ratio, 2) })) },
    },
  });
  say(`\nresults: ${file}`);
}

main()
  .then(() => cleanup())
  .then(() => process.exit(0))
  .catch(async (e: unknown) => {
    err(`[bench] failed: ${(e as Error).stack ?? String(e)}`);
    await cleanup();
    process.exit(1);
  });
