// Streamed chat completions to tiny-gpt through the OpenAI surface (edge/routes/openai.ts, see
// docs/openai-api.md) against the same generation run in this process with the decode engine
// (gpu-node/decoder/), in one run: time to first token (TTFT) and inter-token latency (ITL),
// p50 and p99, the milliseconds the mesh adds and the ratios (goal: at most 2 ms added at p50).
//
//   in-process   DecodeEngine + DecodeLoop on models/tiny-gpt, one intra-op thread, the prompt
//                made as the node makes it (the bundle's chat template and tokenizer), each
//                token's text through the node's detokenizer: the floor
//   openai       the official `openai` client, stream: true, to the edge (workerd) -> region
//                router -> node agent -> session child (one intra-op thread, as the floor)
//   fetch+SSE    the same requests with fetch and a minimal SSE parser, to show what the
//                client's own parsing costs
//
// Greedy (temperature 0), max_tokens 32, fixed prompts; at 1 stream (streams one after another)
// and at 8 concurrent streams (in-process: 8 streams added to one engine at once, so they share
// decode steps as on the node). Every mesh text is checked against the floor's for its prompt.
// A token is a chunk with non-empty content (in-process: a piece with non-empty text); TTFT is
// from just before the request (in-process: before the prompt is rendered) to the first one.
// The phases run in two interleaved blocks so that drift on a shared machine hits all of them.
// Through the mesh tokens often arrive several to a read (a hop that was not scheduled while the
// node decoded sends what queued up at once), so an ITL p50 near 0 is bunching, not speed: the
// table gives the share of such gaps and the time to the last token, which bunching cannot hide.
//
// Run: npm run bench:openai             (about a minute)
//      npx tsx bench/openai-surface.ts --quick
// Prints a table, writes bench/results/openai-surface-<timestamp>.json and openai-surface-latest.json.

import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as ort from "onnxruntime-node";
import OpenAI from "openai";
import { DecodeEngine, DecodeLoop, type EngineEvent } from "../gpu-node/decoder/index.js";
import { loadBundleTextSide, type TextSide } from "../gpu-node/text-side.js";
import { IncrementalDetokenizer, StopWindow } from "../gpu-node/token-text.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { fmt, fmtSigned, formatTable, ratio, round, rounded } from "./stats.js";
import { concurrent, noSamples, postStream, sequential, sseData, streamStats, Timeline, type ExpectedText, type Samples, type StreamRun, type StreamSample, type StreamStats } from "./stream-load.js";

const MODEL_DIR = resolve("models/tiny-gpt");
const MODEL = "tiny-gpt";
const MAX_TOKENS = 32;
const CONCURRENT = 8;
/** Per block: streams one after another, and rounds of CONCURRENT streams. */
const SEQ_RUNS = QUICK ? 8 : 24;
const ROUNDS = QUICK ? 2 : 6;
const BLOCKS = 2;
/** A gap shorter than this is a token that arrived with the one before (no decode step is this fast). */
const BURST_MS = 0.1;
const PROMPTS = [
  "Tell me about the river.",
  "What did the old man say?",
  "Where does the road go?",
  "Describe the sea at night.",
  "Who lives in the house?",
  "Why was the king angry?",
  "What is in the garden?",
  "How did the story end?",
];
const messagesFor = (i: number) => [{ role: "user" as const, content: PROMPTS[i % PROMPTS.length]! }];
/** A token is a chunk (in-process: a piece) with non-empty content. */
const contentTimeline = () => new Timeline(performance.now(), true);

// ---------------------------------------------------------------------------------------------
// The floor: the decode engine in this process, driven as the session child drives it

class InProcess {
  private readonly engine: DecodeEngine;
  private readonly loop: DecodeLoop;
  private readonly streams = new Map<string, { tl: Timeline; detok: IncrementalDetokenizer; window: StopWindow; done: (s: StreamSample) => void; fail: (e: Error) => void }>();
  private next = 0;

  constructor(
    sess: ort.InferenceSession,
    configJson: unknown,
    generationConfigJson: unknown,
    private readonly side: TextSide,
  ) {
    this.engine = DecodeEngine.create(sess, configJson, generationConfigJson);
    this.loop = new DecodeLoop(this.engine, (e) => this.onEvent(e));
  }

  generate(i: number): Promise<StreamSample> {
    return new Promise((done, fail) => {
      const tl = contentTimeline();
      const id = `s${this.next++}`;
      const ids = this.side.encodePrompt("", messagesFor(i));
      const detok = new IncrementalDetokenizer((x) => this.side.tokenizer.decode(x, { skipSpecialTokens: true }));
      this.streams.set(id, { tl, detok, window: new StopWindow([]), done, fail });
      this.engine.add(id, ids, { maxTokens: MAX_TOKENS, temperature: 0, stopTokenIds: [...new Set([...this.engine.config.eosTokenIds, ...this.side.stopTokenIds])] });
      this.loop.kick();
      // A loop that is finishing its last step does not see a stream added from that step's
      // events (a done resolving the previous generate); kick again once it has stopped.
      if (this.loop.running) void this.loop.idle().then(() => this.loop.kick());
    });
  }

  private onEvent(e: EngineEvent): void {
    const s = this.streams.get(e.id);
    if (!s) return;
    if (e.type === "token") {
      for (const p of s.window.push(e.token, s.detok.push(e.token))) s.tl.token(p.text);
    } else if (e.type === "done") {
      for (const p of s.window.finish()) s.tl.token(p.text);
      this.streams.delete(e.id);
      try {
        s.done(s.tl.sample());
      } catch (x) {
        s.fail(x as Error);
      }
    } else {
      this.streams.delete(e.id);
      s.fail(new Error(e.message));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Through the mesh: the official client, and fetch with a minimal SSE parser

async function viaClient(client: OpenAI, i: number): Promise<StreamSample> {
  const tl = contentTimeline();
  const stream = await client.chat.completions.create({ model: MODEL, messages: messagesFor(i), max_tokens: MAX_TOKENS, temperature: 0, stream: true });
  for await (const chunk of stream) tl.token(chunk.choices[0]?.delta.content ?? "");
  return tl.sample();
}

async function viaFetch(edge: string, key: string, i: number): Promise<StreamSample> {
  const tl = contentTimeline();
  const res = await postStream(`${edge}/openai/v1/chat/completions`, key, { model: MODEL, messages: messagesFor(i), max_tokens: MAX_TOKENS, temperature: 0, stream: true });
  const headersMs = performance.now() - tl.sentAt;
  for await (const data of sseData(res.body)) {
    if (data === "[DONE]") continue;
    const chunk = JSON.parse(data) as { choices?: { delta?: { content?: string } }[]; error?: { message: string } };
    if (chunk.error) throw new Error(chunk.error.message);
    tl.token(chunk.choices?.[0]?.delta?.content ?? "");
  }
  return { ...tl.sample(), headersMs };
}

// ---------------------------------------------------------------------------------------------

await runBench("openai-surface", async (b) => {
  const started = performance.now();
  const side = await loadBundleTextSide(MODEL_DIR);
  if (!side) throw new Error(`no tokenizer.json in ${MODEL_DIR}`);
  const readJson = async (name: string) => JSON.parse(await readFile(join(MODEL_DIR, name), "utf8")) as unknown;
  // As the session child loads it (gpu-node/session-child.ts), with the thread count the mesh's node gets below.
  const session = await ort.InferenceSession.create(join(MODEL_DIR, "model.onnx"), { executionProviders: ["cpu"], graphOptimizationLevel: "all", intraOpNumThreads: 1, interOpNumThreads: 1 });
  b.defer(() => session.release());
  const local = new InProcess(session, await readJson("config.json"), await readJson("generation_config.json"), side);

  // The floor's text for each prompt (greedy: every run of a prompt gives it).
  const texts: string[] = [];
  for (let i = 0; i < PROMPTS.length; i++) texts.push((await local.generate(i)).text);
  const expected: ExpectedText = (i) => texts[i % PROMPTS.length]!;

  err("[bench] starting the mesh (one region, one node, one intra-op thread)");
  const mesh = await b.startMesh({
    regions: [{ name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 }],
    demoChat: false,
    nodeEnv: { MESH_EXECUTION_PROVIDER: "cpu", NODE_THREADS_PER_WORKER: "1" },
    edgeVars: { EXPLORATION_SHARE: "0" },
  });
  const client = new OpenAI({ apiKey: mesh.apiKey, baseURL: `${mesh.edge}/openai/v1`, maxRetries: 0 });

  const paths: { name: string; run: StreamRun }[] = [
    { name: "in-process", run: (i) => local.generate(i) },
    { name: "openai client", run: (i) => viaClient(client, i) },
    { name: "fetch+SSE", run: (i) => viaFetch(mesh.edge, mesh.apiKey, i) },
  ];
  /** `rounds` rounds of CONCURRENT streams at once. */
  const rounds = async (run: StreamRun, n: number, into: Samples) => {
    for (let r = 0; r < n; r++) await concurrent(run, CONCURRENT, expected, into);
  };

  err("[bench] warm-up (the node loads tiny-gpt on the first call)");
  for (const p of paths) {
    const w = await sequential(p.run, PROMPTS.length, expected);
    await rounds(p.run, 1, w);
    if (w.errors.length > 0) throw new Error(`${p.name} warm-up: ${w.errors[0]}`);
  }

  const seq = new Map(paths.map((p) => [p.name, noSamples()]));
  const conc = new Map(paths.map((p) => [p.name, noSamples()]));
  for (let k = 0; k < BLOCKS; k++) {
    for (const p of paths) {
      if (b.interrupted) throw new Error("interrupted");
      err(`[bench] block ${k + 1}/${BLOCKS}: ${p.name}, 1 stream x ${SEQ_RUNS}, then ${ROUNDS} rounds of ${CONCURRENT}`);
      await sequential(p.run, SEQ_RUNS, expected, seq.get(p.name)!);
      await rounds(p.run, ROUNDS, conc.get(p.name)!);
    }
  }

  const levels = [
    { streams: 1, by: new Map([...seq].map(([k, v]) => [k, streamStats(v, BURST_MS)])) },
    { streams: CONCURRENT, by: new Map([...conc].map(([k, v]) => [k, streamStats(v, BURST_MS)])) },
  ];

  say();
  say(`OpenAI surface: tiny-gpt chat completions, stream: true, greedy, max_tokens ${MAX_TOKENS}, ${PROMPTS.length} fixed prompts (every mesh text equal to the in-process one)`);
  say(`ms; "+" = added over in-process at the same level; x = ratio to in-process; gaps<${BURST_MS}: tokens that came in one read with the one before; last: request to last token`);
  say();
  const rows: string[][] = [];
  for (const lv of levels) {
    const base = lv.by.get("in-process")!;
    for (const p of paths) {
      const m = lv.by.get(p.name)!;
      const isBase = p.name === "in-process";
      const added = (a: number, b: number) => (isBase ? "" : fmtSigned(a - b, 2));
      const x = (a: number, b: number) => (isBase ? "" : fmt(ratio(a, b), 1) + "x");
      rows.push([
        p.name,
        String(lv.streams),
        `${m.streams}/${m.tokens}`,
        fmt(m.ttft.p50, 2),
        fmt(m.ttft.p99, 2),
        added(m.ttft.p50, base.ttft.p50),
        added(m.ttft.p99, base.ttft.p99),
        x(m.ttft.p50, base.ttft.p50),
        fmt(m.itl.p50, 3),
        fmt(m.itl.p99, 3),
        added(m.itl.p50, base.itl.p50),
        added(m.itl.p99, base.itl.p99),
        x(m.itl.p50, base.itl.p50),
        fmt(m.burstShare * 100, 0) + "%",
        fmt(m.last.p50, 2),
        added(m.last.p50, base.last.p50),
        added(m.last.p99, base.last.p99),
        String(m.errors),
      ]);
    }
  }
  say(
    formatTable(
      ["path", "concurrent", "streams/tokens", "TTFT p50", "TTFT p99", "+p50", "+p99", "x p50", "ITL p50", "ITL p99", "+p50", "+p99", "x p50", `gaps<${BURST_MS}`, "last p50", "+p50", "+p99", "errors"],
      rows,
    ),
  );
  const oneOpenai = levels[0]!.by.get("openai client")!;
  const oneBase = levels[0]!.by.get("in-process")!;
  const addedP50 = { ttft: oneOpenai.ttft.p50 - oneBase.ttft.p50, itl: oneOpenai.itl.p50 - oneBase.itl.p50 };
  say();
  for (const lv of levels) {
    const f = lv.by.get("fetch+SSE")!;
    say(`fetch+SSE at ${lv.streams}: response headers at p50 ${fmt(f.headers.p50)} ms (p99 ${fmt(f.headers.p99)}), first token at p50 ${fmt(f.ttft.p50)} ms`);
  }
  say(`goal (at most 2 ms added at p50, 1 stream, openai client): TTFT ${fmtSigned(addedP50.ttft)} ms, ITL ${fmtSigned(addedP50.itl, 3)} ms, last token ${fmtSigned(oneOpenai.last.p50 - oneBase.last.p50)} ms`);

  const json = (m: StreamStats) => ({
    streams: m.streams,
    tokens: m.tokens,
    errors: m.errors,
    errorSamples: m.errorSamples,
    ttftMs: rounded(m.ttft, ["p50", "p90", "p99", "mean", "max"]),
    itlMs: rounded(m.itl, ["p50", "p90", "p99", "mean", "max"], 4),
    lastTokenMs: rounded(m.last, ["p50", "p99"]),
    headersMs: rounded(m.headers, ["p50", "p99"]),
    burstShare: round(m.burstShare),
  });
  await b.saveResults({
    model: MODEL,
    params: { maxTokens: MAX_TOKENS, temperature: 0, prompts: PROMPTS, seqRunsPerBlock: SEQ_RUNS, concurrentRoundsPerBlock: ROUNDS, blocks: BLOCKS, quick: QUICK },
    levels: levels.map((lv) => {
      const base = lv.by.get("in-process")!;
      return {
        concurrent: lv.streams,
        paths: Object.fromEntries(
          paths.map((p) => {
            const m = lv.by.get(p.name)!;
            return [
              p.name,
              {
                ...json(m),
                addedMs: { ttftP50: round(m.ttft.p50 - base.ttft.p50), ttftP99: round(m.ttft.p99 - base.ttft.p99), itlP50: round(m.itl.p50 - base.itl.p50, 4), itlP99: round(m.itl.p99 - base.itl.p99, 4), lastP50: round(m.last.p50 - base.last.p50), lastP99: round(m.last.p99 - base.last.p99) },
                vsInProcess: { ttftP50: round(ratio(m.ttft.p50, base.ttft.p50)), ttftP99: round(ratio(m.ttft.p99, base.ttft.p99)), itlP50: round(ratio(m.itl.p50, base.itl.p50)), itlP99: round(ratio(m.itl.p99, base.itl.p99)) },
              },
            ];
          }),
        ),
      };
    }),
    goal: { addedMsAtP50Max: 2, oneStreamOpenaiAddedP50Ms: { ttft: round(addedP50.ttft), itl: round(addedP50.itl, 4) } },
    elapsedSec: round((performance.now() - started) / 1000, 1),
  });
  err(`[bench] done in ${fmt((performance.now() - started) / 1000, 0)} s`);
});
