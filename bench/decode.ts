// The KV-cache decode engine (gpu-node/decoder/) on the tiny-gpt bundle, every figure a ratio
// against a baseline measured in the same run:
//
// 1. Per-token decode time at a short context (16) against a long one (480, near the model's
//    512 positions): with the cache the step cost should stay close to flat. And both against a
//    no-cache loop (the whole context re-run for each token, what gpu-node/full-context-generator.ts does).
// 2. Tokens/s with 1, 4, 16 and 64 concurrent streams, all in one decode batch, against one
//    stream (goal: >= 4x at 16). Prefill is included: streams are added at once and drained.
//
// Each figure is given twice: by wall-clock time and by the CPU time this process used
// (process.cpuUsage, all threads), which moves far less on a machine shared with other work.
//
// Run: npx tsx bench/decode.ts [--model models/tiny-gpt] [--threads 1] [--tokens 24] [--quick]
// Prints tables, writes bench/results/decode-<ISO>.json and decode-latest.json.

import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import * as ort from "onnxruntime-node";
import { DecodeEngine, parseDecoderConfig } from "../gpu-node/decoder/index.js";
import { mulberry32 } from "../gpu-node/full-context-generator.js";
import { QUICK, runBench, say } from "./harness.js";
import { fmt, printTable, ratio, round, summarize } from "./stats.js";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
};
const MODEL_DIR = path.resolve(arg("model", "models/tiny-gpt"));
const THREADS = Number(arg("threads", "1"));
const TOKENS = Number(arg("tokens", QUICK ? "8" : "24"));
const REPEATS = QUICK ? 1 : 3;

if (!existsSync(path.join(MODEL_DIR, "model.onnx"))) {
  console.error(`no ${MODEL_DIR}/model.onnx: the tiny-gpt bundle is needed (pass --model DIR)`);
  process.exit(1);
}
const configJson = readFileSync(path.join(MODEL_DIR, "config.json"), "utf8");
const config = parseDecoderConfig(configJson);
const session = await ort.InferenceSession.create(path.join(MODEL_DIR, "model.onnx"), {
  intraOpNumThreads: THREADS,
  interOpNumThreads: 1,
  graphOptimizationLevel: "all",
});

function prompt(n: number, seed: number): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: n }, () => 3 + Math.floor(rng() * (config.vocabSize - 3)));
}

const median = (xs: number[]) => summarize(xs).p50;

/** Wall and CPU milliseconds of fn. */
async function timed(fn: () => Promise<void>): Promise<{ wall: number; cpu: number }> {
  const c = process.cpuUsage();
  const t = performance.now();
  await fn();
  const used = process.cpuUsage(c);
  return { wall: performance.now() - t, cpu: (used.user + used.system) / 1000 };
}

interface Pair {
  wall: number;
  cpu: number;
}
const medianPair = (xs: Pair[]): Pair => ({ wall: median(xs.map((x) => x.wall)), cpu: median(xs.map((x) => x.cpu)) });

/** ms per decode step of one stream, its prompt prefilled first (not timed). */
async function cachedPerToken(context: number): Promise<Pair> {
  const runs: Pair[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const e = DecodeEngine.create(session, configJson, undefined, { prefillChunk: 512 });
    e.add("s", prompt(context, r + 1), { maxTokens: TOKENS + 1, temperature: 0, stopTokenIds: [] });
    await e.step(); // prefill + first token + one decode step
    let steps = 0;
    const t = await timed(async () => {
      while (e.hasWork) {
        await e.step();
        steps++;
      }
    });
    runs.push({ wall: t.wall / steps, cpu: t.cpu / steps });
  }
  return medianPair(runs);
}

/** ms per token re-running the whole context each time (empty past), as a cache-less loop does. */
async function noCachePerToken(context: number): Promise<Pair> {
  const runs: Pair[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const ids = prompt(context, r + 1);
    const t = await timed(async () => {
    for (let k = 0; k < TOKENS; k++) {
      const T = ids.length;
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [1, T]),
        attention_mask: new ort.Tensor("int64", new BigInt64Array(T).fill(1n), [1, T]),
      };
      if (session.inputNames.includes("position_ids")) feeds["position_ids"] = new ort.Tensor("int64", BigInt64Array.from({ length: T }, (_, i) => BigInt(i)), [1, T]);
      for (let l = 0; l < config.numLayers; l++) {
        for (const kv of ["key", "value"]) feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor("float32", new Float32Array(0), [1, config.numKvHeads, 0, config.headDim]);
      }
      const logits = (await session.run(feeds, ["logits"]))["logits"]!.data as Float32Array;
      const V = config.vocabSize;
      let best = 0;
      for (let j = 1; j < V; j++) if (logits[(T - 1) * V + j]! > logits[(T - 1) * V + best]!) best = j;
      ids.push(best);
    }
    });
    runs.push({ wall: t.wall / TOKENS, cpu: t.cpu / TOKENS });
  }
  return medianPair(runs);
}

/** Tokens/s of n streams added at once (prompt 16, TOKENS*2 tokens each), drained to the end. */
async function throughput(n: number): Promise<Pair> {
  const runs: Pair[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const e = DecodeEngine.create(session, configJson);
    for (let i = 0; i < n; i++) e.add(`s${i}`, prompt(16, 100 + i), { maxTokens: TOKENS * 2, temperature: 0.8, topK: 40, topP: 0.95, seed: i, stopTokenIds: [] });
    let tokens = 0;
    const t = await timed(async () => {
      while (e.hasWork) for (const ev of await e.step()) if (ev.type === "token") tokens++;
    });
    runs.push({ wall: tokens / (t.wall / 1000), cpu: tokens / (t.cpu / 1000) });
  }
  return medianPair(runs);
}

await runBench("decode", async (b) => {
  b.defer(() => session.release());
  // Warm-up: the first runs of a session pay for allocations.
  await cachedPerToken(16);
  await noCachePerToken(16);

  const SHORT = 16;
  const LONG = Math.min(480, config.maxPositions - TOKENS - 2);
  const cached = { short: await cachedPerToken(SHORT), long: await cachedPerToken(LONG) };
  const nocache = { short: await noCachePerToken(SHORT), long: await noCachePerToken(LONG) };

  say(`\ntiny-gpt (${config.numLayers} layers, ${config.numKvHeads} heads x ${config.headDim}, vocab ${config.vocabSize}), ${THREADS} intra-op thread(s), ${TOKENS} tokens a run, median of ${REPEATS}; wall / CPU time\n`);
  const both = (p: Pair, digits = 3) => `${fmt(p.wall, digits)} / ${fmt(p.cpu, digits)}`;
  const ratios = (a: Pair, b: Pair) => `${fmt(ratio(a.wall, b.wall))} / ${fmt(ratio(a.cpu, b.cpu))}`;
  printTable(
    ["context", "cached ms/token", "no-cache ms/token", "no-cache / cached", `cached / cached@${SHORT}`],
    [
      [String(SHORT), both(cached.short), both(nocache.short), ratios(nocache.short, cached.short), "1.00 / 1.00"],
      [String(LONG), both(cached.long), both(nocache.long), ratios(nocache.long, cached.long), ratios(cached.long, cached.short)],
    ],
  );

  const levels = [1, 4, 16, 64];
  const tput: Record<number, Pair> = {};
  for (const n of levels) tput[n] = await throughput(n);
  say("");
  printTable(
    ["streams", "tokens/s", "vs 1 stream"],
    levels.map((n) => [String(n), both(tput[n]!, 0), ratios(tput[n]!, tput[1]!)]),
  );

  const pair = (p: Pair, digits = 4) => ({ wall: round(p.wall, digits), cpu: round(p.cpu, digits) });
  const pairRatio = (a: Pair, b: Pair) => ({ wall: round(ratio(a.wall, b.wall)), cpu: round(ratio(a.cpu, b.cpu)) });
  await b.saveResults({
    model: { dir: MODEL_DIR, ...config },
    threads: THREADS,
    tokensPerRun: TOKENS,
    repeats: REPEATS,
    perToken: {
      contexts: [SHORT, LONG],
      cachedMs: { short: pair(cached.short), long: pair(cached.long) },
      noCacheMs: { short: pair(nocache.short), long: pair(nocache.long) },
      cachedLongOverShort: pairRatio(cached.long, cached.short),
      noCacheOverCached: { short: pairRatio(nocache.short, cached.short), long: pairRatio(nocache.long, cached.long) },
    },
    throughput: levels.map((n) => ({ streams: n, tokensPerSec: pair(tput[n]!, 1), vsOne: pairRatio(tput[n]!, tput[1]!) })),
  });
});
