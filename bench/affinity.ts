// Conversation affinity (issue 13): a follow-up's time to first token when the router sends it
// to the node that kept the KV cache it continues, against the same follow-ups placed without
// the key (the router's usual least-busy choice), in one run. Two cases, each with its own
// baseline: a follow-up chat turn (its conversation key, `affinity`), and a plain completion that
// continues a text (the previous prompt, its completion, then more: the new prompt's prefix
// keys, `prefixKeys`, protocol/conversation-key.ts).
//
// A real router and two node agents (test/helpers/region-harness.ts), each with the tiny-gpt
// bundle warm and two stream slots. Each round starts four conversations (or texts) at once
// (distinct long system prompts or prompts, so only a conversation's own cache can help it; the
// router spreads them over both nodes), then sends their follow-ups one at a time in a shuffled
// order (conversations do not continue in the order they began). Without the key the router
// places a follow-up on the least busy node, which holds its conversation about half the time.
// Rounds alternate between the two modes, and between the two cases, so load on the shared
// machine hits all alike.
//
// TTFT is the region's own figure (done.timing.ttftMs: arrival at the router to the first token
// leaving it). A hit is a follow-up whose node reused a kept cache (done.cachedTokens > 0).
//
// Run: npx tsx bench/affinity.ts [--rounds 8] (--quick: 2 rounds per case and mode). Prints a table per case, writes
// bench/results/affinity-<ISO>.json and affinity-latest.json.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createCodec } from "../protocol/codec.js";
import { conversationKey, followUpKey, heldTextKeys, promptPrefixKeys } from "../protocol/conversation-key.js";
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

  /** A chat, or a plain prompt (a string); `keys`: the chat's conversation key, or the prompt's prefix keys. */
  const run = async (input: ChatMessage[] | string, params: GenerateParams, keys?: string | string[]) => {
    const sid = `b${++n}`;
    const req: RegionGenerateRequest = {
      requestId: `aff-${sid}`,
      model,
      ...(typeof input === "string" ? { prompt: input } : { prompt: "", chat: input }),
      params,
      deadline: Date.now() + 120_000,
      ...(typeof keys === "string" ? { affinity: keys } : keys ? { prefixKeys: keys } : {}),
    };
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

  type Case = "chat" | "completion";
  const samples: Record<Case, Record<Mode, Sample[]>> = { chat: { affinity: [], without: [] }, completion: { affinity: [], without: [] } };
  const rng = mulberry32(7);
  const wordsOf = (fits: (content: string) => boolean): string => {
    const words: string[] = [];
    for (;;) {
      for (let i = 0; i < 20; i++) words.push(WORDS[Math.floor(rng() * WORDS.length)]!);
      const content = words.join(" ");
      if (fits(content)) return content;
    }
  };
  const system = () => wordsOf((content) => side.encodePrompt("", [{ role: "system", content }, { role: "user", content: "Tell me a story." }]).length >= FIRST_PROMPT_TOKENS);
  const text = () => wordsOf((content) => side.encodePrompt(content).length >= FIRST_PROMPT_TOKENS) + ".";

  /** One round of a case: its first requests at once, then their follow-ups one at a time. */
  interface Round {
    /** The first requests' inputs. */
    firsts: (ChatMessage[] | string)[];
    /** A follow-up of a first request and its answer; the key the node kept it under; the follow-up's keys. */
    followUp(i: number, answer: string): ChatMessage[] | string;
    kept(i: number, answer: string): Promise<string>;
    keys(followUp: ChatMessage[] | string): Promise<string | string[] | undefined>;
  }
  const rounds: Record<Case, () => Round> = {
    chat: () => {
      const firsts = Array.from({ length: CONVERSATIONS }, (): ChatMessage[] => [
        { role: "system", content: system() },
        { role: "user", content: "Tell me a story." },
      ]);
      const followUp = (i: number, answer: string): ChatMessage[] => [...firsts[i]!, { role: "assistant", content: answer }, { role: "user", content: "And then what happened at the mill?" }];
      return {
        firsts,
        followUp,
        kept: (i, answer) => conversationKey(model.account, model.key, followUp(i, answer).slice(0, -1)),
        keys: (f) => followUpKey(model.account, model.key, f as ChatMessage[]),
      };
    },
    completion: () => {
      const firsts = Array.from({ length: CONVERSATIONS }, text);
      return {
        firsts,
        // The text continued as a client would: the prompt, the completion as it came, then more.
        followUp: (i, answer) => `${firsts[i]!}${answer} And then what happened at the mill?`,
        kept: async (i, answer) => (await heldTextKeys(model.account, model.key, firsts[i]! + answer))[0]!.key,
        keys: (f) => promptPrefixKeys(model.account, model.key, f as string),
      };
    },
  };

  for (let r = 0; r < 4 * ROUNDS; r++) {
    const mode: Mode = r % 2 === 0 ? "affinity" : "without";
    const kase: Case = r % 4 < 2 ? "chat" : "completion";
    const round = rounds[kase]();
    const turn1 = await Promise.all(round.firsts.map((input) => run(input, greedy(24))));
    const follow = round.firsts.map((_, i) => round.followUp(i, turn1[i]!.text));
    // The router knows where each cache is kept once the nodes' heartbeats said so (both modes wait alike).
    const keys = await Promise.all(round.firsts.map((_, i) => round.kept(i, turn1[i]!.text)));
    await waitUntil(`${kase}: kept caches reported`, 10_000, async () => {
      const held = new Set(((await h.status()).affinity ?? []).map((c) => c.key));
      return keys.every((k) => held.has(k)) ? true : undefined;
    }, 50);
    // One at a time: on this shared machine, concurrent prefills would mostly measure each other.
    const results = [];
    for (const i of shuffle([...follow.keys()], rng)) {
      const input = follow[i]!;
      const key = mode === "affinity" ? await round.keys(input) : undefined;
      results.push({ i, ...(await run(input, greedy(16), key)) });
    }
    for (const { i, end } of results) {
      samples[kase][mode].push({
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

  const sum = (xs: Sample[]) => ({
    followUpTtft: summarize(xs.map((x) => x.ttftMs)),
    firstTurnTtft: summarize(xs.map((x) => x.firstTtftMs)),
    hitRate: xs.filter((x) => x.hit).length / xs.length,
    meanPromptTokens: xs.reduce((a, x) => a + x.promptTokens, 0) / xs.length,
    meanCachedTokens: xs.reduce((a, x) => a + x.cachedTokens, 0) / xs.length,
    samples: xs.length,
  });
  const results = (["chat", "completion"] as const).map((kase) => {
    const m = samples[kase];
    const res = { affinity: sum(m.affinity), without: sum(m.without), withoutMisses: sum(m.without.filter((x) => !x.hit)), withoutHits: sum(m.without.filter((x) => x.hit)) };
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
    const what = kase === "chat" ? "follow-up chat turn" : "continued completion (prompt + completion + more)";
    say(`\n${what} TTFT, ${ROUNDS} rounds x ${CONVERSATIONS} per mode, 2 nodes x 2 stream slots, first prompt ~${FIRST_PROMPT_TOKENS} tokens`);
    printTable(
      ["follow-up placed", "TTFT p50 ms", "TTFT p90 ms", "p50 vs without", "p50 vs its first turn", "cache hits", "cached / prompt tokens"],
      [
        row(kase === "chat" ? "with affinity (conversation key)" : "with affinity (prefix keys)", res.affinity),
        row("without", res.without),
        // The two halves of "without": what reuse alone is worth, placement aside.
        row("  without, missed", res.withoutMisses),
        row("  without, hit by chance", res.withoutHits),
      ],
    );
    return [
      kase,
      {
        ...res,
        ratios: {
          followUpP50AffinityVsWithout: round(ratio(res.affinity.followUpTtft.p50, base.p50)),
          followUpP90AffinityVsWithout: round(ratio(res.affinity.followUpTtft.p90, base.p90)),
          followUpP50AffinityVsMiss: round(ratio(res.affinity.followUpTtft.p50, res.withoutMisses.followUpTtft.p50)),
        },
      },
    ] as const;
  });
  await b.saveResults({
    rounds: ROUNDS,
    conversations: CONVERSATIONS,
    firstPromptTokens: FIRST_PROMPT_TOKENS,
    // The chat case's figures stay at the top level, where earlier runs had them.
    ...results[0]![1],
    completion: results[1]![1],
  });
});

function shuffle<T>(xs: T[], rng: () => number): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

