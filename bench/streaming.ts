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

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { generate, generateText } from "../gpu-node/full-context-generator.js";
import { loadTokenizer, type Tokenizer } from "../formats/tokenizer.js";
import { makeCharModel } from "../scripts/make-char-model.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { fmt, formatTable, ratio, round, rounded } from "./stats.js";
import {
  edgeApi,
  EdgeSocket,
  edgeSse,
  routerModelRef,
  RouterSocket,
  sequential,
  socketsFor,
  streamStats,
  sweep,
  sweepVerdict,
  terminateStreamSockets,
  Timeline,
  type ExpectedText,
  type RouterParams,
  type StreamStats,
  type Sweep,
} from "./stream-load.js";

const TOKENS = 64;
const RUNS = QUICK ? 20 : 100;
const PACE_MS = 20;
const SWEEP_TOKENS = QUICK ? 25 : 50;
const LEVELS = QUICK ? [1, 8, 32, 64] : [1, 8, 32, 64, 128, 256, 512, 1024];
const PER_SOCKET = 32;
/** Streams run one after another for the one-stream level of a sweep. */
const BASE_RUNS = QUICK ? 4 : 10;
const PROMPT = "The river";
/** Every stream's sampling, by its seed (the floor's, the router's and, in OIP's names, the edge's). */
const sampling = (seed: number, max = TOKENS): RouterParams => ({ maxTokens: max, temperature: 0.8, topK: 0, seed });
const message = (seed: number, max = TOKENS) => ({ text_input: PROMPT, parameters: { max_tokens: max, temperature: 0.8, top_k: 0, seed } });

// ---------------------------------------------------------------------------------------------
// The floor: the token loop in this process

async function floor(session: ort.InferenceSession, tokenizer: Tokenizer, paceMs: number, runs: number, max: number): Promise<StreamStats> {
  const run = async (i: number) => {
    const tl = new Timeline();
    for await (const t of generate(session, tokenizer, PROMPT, sampling(i, max))) {
      if (paceMs > 0) await new Promise((r) => setTimeout(r, paceMs));
      tl.token(t.token);
    }
    return tl.sample();
  };
  return streamStats(await sequential(run, runs, null));
}

await runBench("streaming", async (b) => {
  b.defer(terminateStreamSockets);
  const files = await makeCharModel(join(b.tmpDir, "models"));
  const session = await ort.InferenceSession.create(files.modelPath, { executionProviders: ["cpu"] });
  b.defer(() => session.release());
  const tokenizerText = await readFile(files.tokenizerPath, "utf8");
  const tokenizer = loadTokenizer(tokenizerText);
  const texts = new Map<string, Promise<string>>();
  const expectedFor = (max: number): ExpectedText => (seed) => {
    const k = `${seed}/${max}`;
    let t = texts.get(k);
    if (!t) {
      t = generateText(session, tokenizer, PROMPT, sampling(seed, max));
      texts.set(k, t);
    }
    return t;
  };
  const expected = expectedFor(TOKENS);

  err("[bench] floor: the token loop in this process");
  await floor(session, tokenizer, 0, 10, TOKENS);
  const floorRun = await floor(session, tokenizer, 0, RUNS, TOKENS);
  const floorPaced = await floor(session, tokenizer, PACE_MS, QUICK ? 3 : 10, SWEEP_TOKENS);

  err("[bench] starting the mesh (two regions, one node each)");
  const mesh = await b.startMesh({
    regions: [
      { name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 },
      { name: "ap-seoul", lat: 37.57, lon: 126.98, nodes: 1 },
    ],
    nodeEnv: { NODE_STREAMS: "4096", MESH_EXECUTION_PROVIDER: "cpu" },
    regionNodeEnv: { "ap-seoul": { MESH_SIMULATED_TOKEN_MS: String(PACE_MS) } },
    routerEnv: { MAX_STREAMS_PER_SOCKET: "4096", MAX_INFLIGHT: "8192", MAX_QUEUE_PER_MODEL: "4096" },
    edgeVars: { EXPLORATION_SHARE: "0" },
  });
  const key = mesh.apiKey;
  const api = edgeApi(mesh.edge);
  await api(key, "PUT", "/v1/models/demo-chat", JSON.stringify({ regions: ["us-west"] }));
  await api(key, "POST", "/v1/models", JSON.stringify({ name: "chat-paced" }));
  const up = await api(key, "POST", "/v1/models/chat-paced/versions", await readFile(files.modelPath), "application/octet-stream");
  const tok = await api(key, "PUT", "/v1/models/chat-paced/versions/1/tokenizer", tokenizerText);
  const paced = await api(key, "PUT", "/v1/models/chat-paced", JSON.stringify({ regions: ["ap-seoul"] }));

  // --- one stream at a time through the edge
  err("[bench] mesh: one stream at a time (WebSocket, then SSE)");
  const edgeWs = await EdgeSocket.open(mesh.edge, "demo-chat", key);
  for (let i = 0; i < 10; i++) await edgeWs.generate(`warm-${i}`, message(i));
  let seq = 0;
  const meshWs = streamStats(await sequential((i) => edgeWs.generate(`s-${seq++}`, message(i)), RUNS, expected));
  edgeWs.close();
  for (let i = 0; i < 5; i++) await edgeSse(mesh.edge, key, "demo-chat", message(i));
  const meshSse = streamStats(await sequential((i) => edgeSse(mesh.edge, key, "demo-chat", message(i)), Math.ceil(RUNS / 2), expected));

  // --- concurrency sweeps on the paced model (ap-seoul)
  const pacedWs = await EdgeSocket.open(mesh.edge, "chat-paced", key);
  for (let i = 0; i < 3; i++) await pacedWs.generate(`warm-paced-${i}`, message(i, SWEEP_TOKENS));
  pacedWs.close();
  const sweepOpts = { baseRuns: BASE_RUNS, spreadMs: PACE_MS, expected: expectedFor(SWEEP_TOKENS) };
  err(`[bench] sweep through the edge (${PACE_MS} ms per token at the node)`);
  let sid = 0;
  const viaEdge = await sweep(
    "edge",
    LEVELS,
    (n) => socketsFor(n, PER_SOCKET, () => EdgeSocket.open(mesh.edge, "chat-paced", key), (s, i) => s.generate(`c-${sid++}`, message(i, SWEEP_TOKENS))),
    sweepOpts,
  );
  const secret = mesh.regionSecrets["ap-seoul"]!;
  const model = await routerModelRef({ edge: mesh.edge, region: "ap-seoul", secret, id: paced.id, name: "chat-paced", up, tok });
  err("[bench] sweep straight to the router's stream socket");
  const viaRouter = await sweep(
    "router",
    LEVELS,
    (n) =>
      socketsFor(n, 256, () => RouterSocket.open(mesh.regions["ap-seoul"]!, secret), (s, i) => s.generate(`r-${sid++}`, model, PROMPT, sampling(i, SWEEP_TOKENS), 60_000)),
    sweepOpts,
  );

  // --- report
  say();
  say(`Streaming: demo-chat, "${PROMPT}", ${TOKENS} tokens per stream, temperature 0.8, seeded (every text equal to the floor's)`);
  say();
  const row = (name: string, m: StreamStats, base: StreamStats) => [
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
  const sweepRows = (name: string, s: Sweep) =>
    s.rows.map((r) => [name, String(r.streams), fmt(r.stats.ttft.p50), fmt(r.stats.ttft.p99), fmt(r.stats.itl.p50), fmt(r.stats.itl.p99), fmt(r.p99Ratio) + "x", fmt(r.stats.tokensPerSec, 0), String(r.stats.errors)]);
  say(formatTable(["path", "streams", "ttft p50", "ttft p99", "itl p50", "itl p99", "itl p99 / 1 stream", "tok/s", "errors"], [...sweepRows("edge+router", viaEdge), ...sweepRows("router", viaRouter)]));
  say();
  say(`Concurrent streams one router carries before p99 ITL doubles: ${sweepVerdict(viaRouter)} straight to the router, ${sweepVerdict(viaEdge)} through the edge.`);
  say("Times in ms. TTFT: request sent to first token received; ITL: gap between consecutive tokens of a stream, at the client.");

  const summary = (m: StreamStats) => ({
    streams: m.streams,
    tokens: m.tokens,
    errors: m.errors,
    errorSamples: m.errorSamples,
    tokensPerSec: round(m.tokensPerSec, 1),
    ttftMs: rounded(m.ttft, ["p50", "p90", "p99", "mean"]),
    itlMs: rounded(m.itl, ["p50", "p90", "p99", "mean"]),
  });
  await b.saveResults({
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
      viaEdge: { carried: viaEdge.carried, levels: viaEdge.rows.map((r) => ({ ...summary(r.stats), p99Ratio: round(r.p99Ratio, 2) })) },
      viaRouter: { carried: viaRouter.carried, levels: viaRouter.rows.map((r) => ({ ...summary(r.stats), p99Ratio: round(r.p99Ratio, 2) })) },
    },
  });
});
