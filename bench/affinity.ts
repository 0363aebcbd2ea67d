// Conversation affinity (issue 13): a follow-up chat turn's time to first token when the router
// sends it to the node that kept the conversation's KV cache, against the same turns placed
// without the conversation key (the router's usual least-busy choice), in one run.
//
// A real router and two node agents (test/helpers/region-harness.ts), each with the tiny-gpt
// bundle warm and two stream slots. Each round starts four conversations at once (distinct long
// system prompts, so only a conversation's own cache can help it; the router spreads them over
// both nodes), then sends their follow-ups one at a time in a shuffled order (conversations do
// not continue in the order they began). Without the key the router places a follow-up on the
// least busy node, which holds its conversation about half the time. Rounds alternate between
// the two modes so load on the shared machine hits both alike.
//
// TTFT is the region's own figure (done.timing.ttftMs: arrival at the router to the first token
// leaving it). A hit is a follow-up whose node reused a kept cache (done.cachedTokens > 0).
//
// Run: npx tsx bench/affinity.ts [--rounds 8] (--quick: 2 rounds). Prints a table, writes
// bench/results/affinity-<ISO>.json and affinity-latest.json.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createCodec } from "../protocol/codec.js";
import { conversationKey, followUpKey } from "../protocol/conversation-key.js";
import { GENERATE_GRANT_METHOD, type ChatMessage, type GenerateParams, type RegionGenerateRequest } from "../protocol/messages.js";
import { mulberry32 } from "../protocol/prng.js";
import { signRequest } from "../protocol/signing.js";
import { makeTextSide } from "../gpu-node/text-side.js";
import { RegionHarness, ROOT, waitUntil } from "../test/helpers/region-harness.js";
import { RegionStream } from "../test/helpers/stream-client.js";
import { QUICK, runBench, say } from "./harness.js";
import { fmt, printTable, ratio, round, summarize, type Summary } from "./stats.js";

const arg = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const ROUNDS = arg("rounds", QUICK ? 2 : 8);
const CONVERSATIONS = 4;
/** The first turn's prompt length in tokens (the model's context is 512): long, so its prefill matters. */
const FIRST_PROMPT_TOKENS = arg("prompt-tokens", 320);
const BUNDLE = join(ROOT, "models", "tiny-gpt");
const FILES = ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"];
const WORDS =
  "river mill king town people bread stone water light night morning garden forest road market horse bridge tower winter summer story village window letter friend mountain boat field song".split(" ");
const greedy = (maxTokens: number): GenerateParams => ({ maxTokens, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] });

type Mode = "affinity" | "without";
interface Sample {
  ttftMs: number;
  hit: boolean;
  promptTokens: number;
  cachedTokens: number;
  firstTtftMs: number;
}

const codec = createCodec();
let n = 0;

await runBench("affinity", async (b) => {
  const h = await RegionHarness.create(`bench-affinity-${process.pid}`);
  b.defer(() => h.close());
  await h.startRouter();
  for (const id of ["n1", "n2"]) await h.startNode(id, { NODE_STREAMS: "2", HEARTBEAT_MS: "100", NODE_WORKERS_PER_MODEL: "1", NODE_THREADS_PER_WORKER: "1" });
  const model = await h.addBundle("tiny-gpt", 1, BUNDLE, "model.onnx", FILES);
  const json = async (f: string) => JSON.parse(await readFile(join(BUNDLE, f), "utf8")) as unknown;
  const side = makeTextSide({ tokenizer: await json("tokenizer.json"), tokenizerConfig: await json("tokenizer_config.json") });
  const s = await RegionStream.open(h.routerUrl, await signRequest(h.secret, "GET", "/v1/streams"));

  const run = async (chat: ChatMessage[], params: GenerateParams, affinity?: string) => {
    const sid = `b${++n}`;
    const req: RegionGenerateRequest = { requestId: `aff-${sid}`, model, prompt: "", chat, params, deadline: Date.now() + 120_000, ...(affinity ? { affinity } : {}) };
    const bytes = codec.encode(req);
    s.generate(sid, bytes, await signRequest(h.secret, GENERATE_GRANT_METHOD, "/v1/streams", bytes), 256);
    const end = await s.end(sid, 120_000);
    if (end.t !== "done") throw new Error(`${sid}: ${end.code} ${end.message}`);
    const text = s.of(sid).filter((f) => f.t === "token").map((f) => f.text as string).join("");
    return { end, text };
  };

  // Both nodes warm: concurrent streams beyond one node's slots make the router load a second replica.
  await waitUntil("tiny-gpt warm on both nodes", 120_000, async () => {
    // More streams than the warm node's slots can take soon (queue > slots) start a load elsewhere.
    await Promise.all(Array.from({ length: 10 }, () => run([{ role: "user", content: "warm up" }], greedy(48))));
    const rep = await h.status();
    return (rep.models.find((m) => m.key === model.key)?.replicas ?? 0) >= 2 ? true : undefined;
  }, 200);

  const samples: Record<Mode, Sample[]> = { affinity: [], without: [] };
  const rng = mulberry32(7);
  const system = (): string => {
    const words: string[] = [];
    for (;;) {
      for (let i = 0; i < 20; i++) words.push(WORDS[Math.floor(rng() * WORDS.length)]!);
      const content = words.join(" ");
      if (side.encodePrompt("", [{ role: "system", content }, { role: "user", content: "Tell me a story." }]).length >= FIRST_PROMPT_TOKENS) return content;
    }
  };
  for (let r = 0; r < 2 * ROUNDS; r++) {
    const mode: Mode = r % 2 === 0 ? "affinity" : "without";
    const firsts = Array.from({ length: CONVERSATIONS }, (): ChatMessage[] => [
      { role: "system", content: system() },
      { role: "user", content: "Tell me a story." },
    ]);
    const turn1 = await Promise.all(firsts.map((chat) => run(chat, greedy(24))));
    const follow = firsts.map((chat, i) => [...chat, { role: "assistant", content: turn1[i]!.text }, { role: "user", content: "And then what happened at the mill?" }]);
    // The router knows where each conversation is kept once the nodes' heartbeats said so (both modes wait alike).
    const keys = await Promise.all(follow.map((chat) => conversationKey(model.account, model.key, chat.slice(0, -1))));
    await waitUntil("conversations reported", 10_000, async () => {
      const held = new Set(((await h.status()).affinity ?? []).map((c) => c.key));
      return keys.every((k) => held.has(k)) ? true : undefined;
    }, 50);
    // One at a time: on this shared machine, concurrent prefills would mostly measure each other.
    const results = [];
    for (const i of shuffle([...follow.keys()], rng)) {
      const chat = follow[i]!;
      const key = mode === "affinity" ? await followUpKey(model.account, model.key, chat) : undefined;
      results.push({ i, ...(await run(chat, greedy(16), key)) });
    }
    for (const { i, end } of results) {
      samples[mode].push({
        ttftMs: end.timing.ttftMs,
        hit: (end.cachedTokens ?? 0) > 0,
        promptTokens: end.promptTokens,
        cachedTokens: end.cachedTokens ?? 0,
        firstTtftMs: turn1[i]!.end.timing.ttftMs,
      });
    }
    process.stdout.write(".");
  }
  process.stdout.write("\n");
  s.close();

  const sum = (m: Mode, pick: (x: Sample) => boolean = () => true) => {
    const xs = samples[m].filter(pick);
    return {
      followUpTtft: summarize(xs.map((x) => x.ttftMs)),
      firstTurnTtft: summarize(xs.map((x) => x.firstTtftMs)),
      hitRate: xs.filter((x) => x.hit).length / xs.length,
      meanPromptTokens: xs.reduce((a, x) => a + x.promptTokens, 0) / xs.length,
      meanCachedTokens: xs.reduce((a, x) => a + x.cachedTokens, 0) / xs.length,
      samples: xs.length,
    };
  };
  const res = { affinity: sum("affinity"), without: sum("without"), withoutMisses: sum("without", (x) => !x.hit), withoutHits: sum("without", (x) => x.hit) };
  const base = res.without.followUpTtft;
  const row = (label: string, r: { followUpTtft: Summary; firstTurnTtft: Summary; hitRate: number; meanPromptTokens: number; meanCachedTokens: number }) => [
    label,
    fmt(r.followUpTtft.p50),
    fmt(r.followUpTtft.p90),
    fmt(ratio(r.followUpTtft.p50, base.p50)),
    fmt(ratio(r.followUpTtft.p50, r.firstTurnTtft.p50)),
    `${Math.round(r.hitRate * 100)}%`,
    `${Math.round(r.meanCachedTokens)} / ${Math.round(r.meanPromptTokens)}`,
  ];
  say(`\nfollow-up turn TTFT, ${ROUNDS} rounds x ${CONVERSATIONS} conversations per mode, 2 nodes x 2 stream slots, first prompt ~${FIRST_PROMPT_TOKENS} tokens`);
  printTable(
    ["follow-up placed", "TTFT p50 ms", "TTFT p90 ms", "p50 vs without", "p50 vs its first turn", "cache hits", "cached / prompt tokens"],
    [
      row("with affinity", res.affinity),
      row("without", res.without),
      // The two halves of "without": what reuse alone is worth, placement aside.
      row("  without, missed", res.withoutMisses),
      row("  without, hit by chance", res.withoutHits),
    ],
  );
  await b.saveResults({
    rounds: ROUNDS,
    conversations: CONVERSATIONS,
    firstPromptTokens: FIRST_PROMPT_TOKENS,
    ...res,
    ratios: {
      followUpP50AffinityVsWithout: round(ratio(res.affinity.followUpTtft.p50, base.p50)),
      followUpP90AffinityVsWithout: round(ratio(res.affinity.followUpTtft.p90, base.p90)),
      followUpP50AffinityVsMiss: round(ratio(res.affinity.followUpTtft.p50, res.withoutMisses.followUpTtft.p50)),
    },
  });
});

function shuffle<T>(xs: T[], rng: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

