// How many concurrent streams one router, and one edge isolate, carry before p99 inter-token
// latency doubles (issue 14: goals >= 1,000 per router and >= 256 per edge isolate).
//
// The tokens come from synthetic nodes (bench/synthetic-node.ts: BENCH ONLY, no model, one token
// per stream every STEP_MS from one timer per node, like a batched decoder's step), so what is
// measured is the relay, not a decoder's CPU: NODES of them hold 4,096 stream slots each. One
// region (us-west), its one real node agent given no stream slots (NODE_STREAMS=0) so every
// stream lands on a synthetic node.
//
//   router   straight to the router's stream socket (signed generate frames, as the edge sends
//            them), 256 streams per socket
//   edge     WebSocket callers to the edge (workerd, one isolate) -> router, 32 streams per socket
//   edge sse Server-Sent Events callers, one HTTP request per stream (edge -> router as one
//            streamed POST each)
//
// At each level N, N streams of TOKENS tokens start spread over one step; the 1-stream level
// runs several streams one after another. A level "carries" when every stream's text is the
// synthetic text for its seed and p99 ITL is under twice the 1-stream p99.
//
// Run: npx tsx bench/stream-capacity.ts           (a few minutes)
//      npx tsx bench/stream-capacity.ts --quick   (smoke run)
// Prints a table and writes bench/results/stream-capacity-<timestamp>.json and -latest.json.

import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import { join } from "node:path";
import WebSocket from "ws";
import { createCodec } from "../protocol/codec.js";
import { GENERATE_GRANT_METHOD, type EdgeToRegion, type ModelRef, type RegionGenerateRequest, type RegionToEdge } from "../protocol/messages.js";
import { artifactUrl, signRequest, tokenizerUrl } from "../protocol/signing.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { makeCharModel } from "../scripts/make-char-model.js";
import { fmt, formatTable, machineInfo, ratio, round, summarize, writeResults, type Summary } from "./stats.js";
import { syntheticText } from "./synthetic-node.js";

const QUICK = process.argv.includes("--quick");
/** --router-only: skip the edge sweeps (for profiling the router). */
const ROUTER_ONLY = process.argv.includes("--router-only");
/** --all-levels: go on past the level where p99 doubled (the whole curve, not just the knee). */
const ALL_LEVELS = process.argv.includes("--all-levels");
/** BENCH_CPU_PROF_DIR: the router writes a V8 CPU profile there at the end (bench/cpu-profile.mjs). */
const PROFILE_DIR = process.env.BENCH_CPU_PROF_DIR;
const STEP_MS = 20;
const TOKENS = QUICK ? 20 : 40;
const NODES = 2;
const ROUTER_LEVELS = QUICK ? [1, 64, 256] : [1, 128, 256, 512, 1024, 1536];
const EDGE_LEVELS = QUICK ? [1, 32, 128] : [1, 32, 64, 128, 256, 512];
const SSE_LEVELS = QUICK ? [1, 32] : [1, 32, 64, 128, 256];
const BASE_RUNS = QUICK ? 3 : 6;
const REGION = "us-west";
/**
 * Accounts the edge's streams are spread over: an isolate lets one account run 128 streams and
 * hold 32 sockets (edge/stream-limits.ts), so the edge levels past that need several tenants.
 */
const ACCOUNTS = 8;

const say = (line = "") => process.stdout.write(line + "\n");
const err = (line: string) => process.stderr.write(line + "\n");
const expectedText = (seed: number) => Array.from({ length: TOKENS }, (_, i) => syntheticText(seed, i)).join("");

// ---------------------------------------------------------------------------------------------
// Cleanup

let tmpDir: string | null = null;
let meshStarting: Promise<MeshHandle> | null = null;
const nodes: ChildProcess[] = [];
const sockets = new Set<WebSocket>();
let cleanupPromise: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleanupPromise ??= (async () => {
    for (const ws of sockets) ws.terminate();
    for (const n of nodes) if (n.exitCode === null) n.kill("SIGTERM");
    const mesh = await meshStarting?.catch(() => null);
    if (mesh) await mesh.stop().catch((e: unknown) => err(`[bench] mesh stop failed: ${String(e)}`));
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
// One stream's timeline at the client

interface Sample {
  ttftMs: number;
  gaps: number[];
  text: string;
}

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
  sample(): Sample {
    return { ttftMs: this.first - this.sentAt, gaps: this.gaps, text: this.text };
  }
}

type Pending = { tl: Timeline; resolve: (s: Sample) => void; reject: (e: Error) => void };

/** Many streams on one WebSocket to the edge (JSON text frames). */
class EdgeSocket {
  private readonly lines = new Map<string, Pending>();
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
  generate(id: string, seed: number): Promise<Sample> {
    return new Promise((resolve, reject) => {
      this.lines.set(id, { tl: new Timeline(performance.now()), resolve, reject });
      this.ws.send(JSON.stringify({ type: "generate", id, text_input: "x", parameters: { max_tokens: TOKENS, seed }, window: 256 }));
    });
  }
  close(): void {
    this.ws.close();
    sockets.delete(this.ws);
  }
}

/** One SSE request to the edge. */
async function sse(edge: string, key: string, model: string, seed: number): Promise<Sample> {
  const tl = new Timeline(performance.now());
  const res = await fetch(`${edge}/v2/models/${model}/generate_stream`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify({ text_input: "x", parameters: { max_tokens: TOKENS, seed } }),
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

/** Straight to a router's stream socket, as the edge talks to it (each generate signed). */
class RouterSocket {
  private readonly codec = createCodec();
  private readonly lines = new Map<string, Pending>();
  private constructor(
    readonly ws: WebSocket,
    private readonly secret: string,
  ) {
    ws.on("message", (data) => {
      const f = this.codec.decode(data as Buffer) as RegionToEdge;
      if (f.t === "pong") return;
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
  generate(sid: string, model: ModelRef, seed: number): Promise<Sample> {
    return new Promise((resolve, reject) => {
      this.lines.set(sid, { tl: new Timeline(performance.now()), resolve, reject });
      const req: RegionGenerateRequest = {
        requestId: `bench-${sid}`,
        model,
        prompt: "x",
        params: { maxTokens: TOKENS, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, seed, stop: [] },
        deadline: Date.now() + 120_000,
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
// Levels

interface Level {
  streams: number;
  ttft: Summary;
  itl: Summary;
  tokens: number;
  errors: number;
  errorSamples: string[];
  p99Ratio: number;
}

type Starter = (i: number, seed: number) => Promise<Sample>;

async function level(n: number, start: Starter): Promise<Omit<Level, "p99Ratio">> {
  const errors: string[] = [];
  const samples: Sample[] = [];
  const check = async (i: number, seed: number) => {
    try {
      const s = await start(i, seed);
      if (s.text !== expectedText(seed)) throw new Error(`stream ${i}: text differs from the synthetic text`);
      samples.push(s);
    } catch (e) {
      errors.push((e as Error).message);
    }
  };
  if (n === 1) {
    for (let i = 0; i < BASE_RUNS; i++) await check(i, i);
  } else {
    await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        // Spread over one step so the streams do not all start on the same tick.
        await new Promise((r) => setTimeout(r, Math.random() * STEP_MS));
        await check(i, i);
      }),
    );
  }
  return {
    streams: n,
    ttft: summarize(samples.map((s) => s.ttftMs)),
    itl: summarize(samples.flatMap((s) => s.gaps)),
    tokens: samples.reduce((t, s) => t + s.gaps.length + 1, 0),
    errors: errors.length,
    errorSamples: errors.slice(0, 3),
  };
}

async function sweep(name: string, levels: number[], prepare: (n: number) => Promise<{ start: Starter; close: () => void }>): Promise<{ rows: Level[]; carried: number }> {
  const rows: Level[] = [];
  let base = NaN;
  let carried = 0;
  for (const n of levels) {
    const { start, close } = await prepare(n);
    const m = await level(n, start);
    close();
    if (n === 1) base = m.itl.p99;
    const r = ratio(m.itl.p99, base);
    rows.push({ ...m, p99Ratio: r });
    err(`[bench] ${name} ${n} streams: itl p50 ${fmt(m.itl.p50)} p99 ${fmt(m.itl.p99)} ms (x${fmt(r)}), ttft p99 ${fmt(m.ttft.p99)} ms, errors ${m.errors}${m.errors ? ` (${m.errorSamples[0]})` : ""}`);
    const ok = m.errors === 0 && r < 2;
    // Carried: the largest level with every level up to it within bounds.
    if (ok && carried === (rows.at(-2)?.streams ?? 0)) carried = n;
    if (!ok && !ALL_LEVELS) break;
  }
  return { rows, carried };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  tmpDir = await mkdtemp(join(os.tmpdir(), "bench-capacity-"));
  const files = await makeCharModel(join(tmpDir, "models"));
  err("[bench] starting the mesh (one region; its real node takes no streams)");
  meshStarting = startMesh({
    stateDir: join(tmpDir, "mesh"),
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    demoChat: false,
    tinyGpt: false,
    nodeEnv: { NODE_STREAMS: "0", MESH_EXECUTION_PROVIDER: "cpu" },
    routerEnv: {
      MAX_STREAMS_PER_SOCKET: "4096",
      MAX_INFLIGHT: "16384",
      MAX_QUEUE_PER_MODEL: "8192",
      ...(PROFILE_DIR ? { NODE_OPTIONS: `--import ${join(process.cwd(), "bench/cpu-profile.mjs")}`, BENCH_CPU_PROF_NAME: "router" } : {}),
    },
    // The per-key request rate would refuse a level's burst of generate requests: not what is measured.
    edgeVars: { EXPLORATION_SHARE: "0", KEY_RATE_PER_SECOND: "100000", KEY_RATE_BURST: "100000" },
    progress: (l) => err(l),
  });
  const mesh = await meshStarting;
  const routerUrl = mesh.regions[REGION]!;
  for (let k = 0; k < NODES; k++) {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/synthetic-node.ts"], {
      env: {
        ...process.env,
        MESH_SYNTHETIC_NODE: "bench",
        ROUTER_URL: routerUrl.replace(/^http/, "ws") + "/v1/nodes",
        NODE_TOKEN: mesh.nodeToken,
        NODE_ID: `synth-${k + 1}`,
        SYNTH_STEP_MS: String(STEP_MS),
        SYNTH_STREAMS: "4096",
      },
      stdio: ["ignore", "inherit", "inherit"],
    });
    nodes.push(child);
  }
  const api = async (key: string, method: string, path: string, body?: BodyInit, type = "application/json") => {
    const res = await fetch(mesh.edge + path, { method, body, headers: { authorization: `Bearer ${key}`, "content-type": type } });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    return JSON.parse(text) as Record<string, any>;
  };
  const modelBytes = await readFile(files.modelPath);
  const tokenizerText = await readFile(files.tokenizerPath, "utf8");
  /** Each account's key, with its own copy of the model (same bytes, so the nodes load it once). */
  const keys: string[] = [];
  let first: { up: Record<string, any>; tok: Record<string, any>; model: Record<string, any> } | null = null;
  for (let a = 0; a < ACCOUNTS; a++) {
    const key = a === 0 ? mesh.apiKey : ((await api(mesh.adminToken, "POST", "/v1/accounts", JSON.stringify({ name: `bench-${a}` }))).apiKey.key as string);
    await api(key, "POST", "/v1/models", JSON.stringify({ name: "synth" }));
    const up = await api(key, "POST", "/v1/models/synth/versions", modelBytes, "application/octet-stream");
    const tok = await api(key, "PUT", "/v1/models/synth/versions/1/tokenizer", tokenizerText);
    const model = await api(key, "PUT", "/v1/models/synth", JSON.stringify({ regions: [REGION] }));
    first ??= { up, tok, model };
    keys.push(key);
  }
  const { up, tok, model } = first!;
  const secret = mesh.regionSecrets[REGION]!;
  const ref: ModelRef = {
    key: `${model.id}@1`,
    account: "bench",
    name: "synth",
    version: 1,
    sha256: up.sha256,
    size: up.size,
    artifactUrl: await artifactUrl(secret, mesh.edge, REGION, up.sha256, Date.now() + 3_600_000),
    signature: { inputs: up.inputs, outputs: up.outputs },
    tokenizer: { sha256: tok.sha256, size: tok.size, url: await tokenizerUrl(secret, mesh.edge, REGION, tok.sha256, Date.now() + 3_600_000) },
  };
  // Wait for the synthetic nodes, then warm the model on them (through the edge: a real load).
  const wsUrl = `${mesh.edge.replace(/^http/, "ws")}/v2/models/synth/stream`;
  for (const key of keys) {
    for (let tries = 0; ; tries++) {
      try {
        const s = await EdgeSocket.open(wsUrl, key);
        await s.generate("warm", 0);
        s.close();
        break;
      } catch (e) {
        if (tries > 50) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  let sid = 0;
  const socketsOf = async <T>(n: number, per: number, open: (k: number) => Promise<T>) => {
    const out: T[] = [];
    for (let k = 0; k < Math.max(1, Math.ceil(n / per)); k++) out.push(await open(k));
    return out;
  };
  err(`[bench] router: straight to its stream socket (${STEP_MS} ms per token at the nodes, ${TOKENS} tokens per stream)`);
  const viaRouter = await sweep("router", ROUTER_LEVELS, async (n) => {
    const ss = await socketsOf(n, 256, () => RouterSocket.open(routerUrl, secret));
    return { start: (i, seed) => ss[i % ss.length]!.generate(`r${sid++}`, ref, seed), close: () => ss.forEach((s) => s.close()) };
  });
  err("[bench] edge: WebSocket callers, 32 streams per socket");
  const viaEdge = await sweep("edge ws", ROUTER_ONLY ? [] : EDGE_LEVELS, async (n) => {
    // Socket k belongs to account k % ACCOUNTS: the streams spread evenly over the accounts.
    const ss = await socketsOf(n, Math.min(32, Math.ceil(n / ACCOUNTS)), (k) => EdgeSocket.open(wsUrl, keys[k % ACCOUNTS]!));
    return { start: (i, seed) => ss[i % ss.length]!.generate(`e${sid++}`, seed), close: () => ss.forEach((s) => s.close()) };
  });
  err("[bench] edge: SSE callers, one request per stream");
  const viaSse = await sweep("edge sse", ROUTER_ONLY ? [] : SSE_LEVELS, async () => ({ start: (i, seed) => sse(mesh.edge, keys[i % ACCOUNTS]!, "synth", seed), close: () => undefined }));

  if (PROFILE_DIR) {
    for (const p of mesh.processes) if (p.name === `router-${REGION}`) p.child.kill("SIGUSR2");
    await new Promise((r) => setTimeout(r, 2_000));
  }
  say();
  say(`Stream capacity: synthetic nodes (${NODES}, ${STEP_MS} ms per token, no model), ${TOKENS} tokens per stream, every text checked`);
  say();
  const rows = (name: string, s: { rows: Level[] }) =>
    s.rows.map((r) => [name, String(r.streams), fmt(r.ttft.p50), fmt(r.ttft.p99), fmt(r.itl.p50), fmt(r.itl.p99), fmt(r.p99Ratio) + "x", String(r.errors)]);
  say(formatTable(["path", "streams", "ttft p50", "ttft p99", "itl p50", "itl p99", "itl p99 / 1 stream", "errors"], [...rows("router", viaRouter), ...rows("edge ws", viaEdge), ...rows("edge sse", viaSse)]));
  say();
  const verdict = (s: { rows: Level[]; carried: number }) => {
    if (s.rows.length === 0) return "not measured";
    const broke = s.rows.find((r) => r.p99Ratio >= 2 || r.errors > 0);
    return broke ? `${s.carried} (doubled or failed at ${broke.streams})` : `at least ${s.carried} (the largest level tried)`;
  };
  say(`Streams carried before p99 ITL doubles: router ${verdict(viaRouter)}; edge isolate (WebSocket) ${verdict(viaEdge)}; edge isolate (SSE) ${verdict(viaSse)}.`);
  say("Times in ms, at the client. Goals (issue 14): >= 1,000 per router, >= 256 per edge isolate.");
  const out = (s: { rows: Level[]; carried: number }) => ({
    carried: s.carried,
    levels: s.rows.map((r) => ({
      streams: r.streams,
      tokens: r.tokens,
      errors: r.errors,
      errorSamples: r.errorSamples,
      p99Ratio: round(r.p99Ratio, 2),
      ttftMs: { p50: round(r.ttft.p50), p99: round(r.ttft.p99) },
      itlMs: { p50: round(r.itl.p50), p90: round(r.itl.p90), p99: round(r.itl.p99) },
    })),
  });
  const { file } = await writeResults("stream-capacity", {
    bench: "stream-capacity",
    quick: QUICK,
    machine: machineInfo(),
    stepMs: STEP_MS,
    tokensPerStream: TOKENS,
    syntheticNodes: NODES,
    router: out(viaRouter),
    edgeWs: out(viaEdge),
    edgeSse: out(viaSse),
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
