// Pure-logic tests of plain-prompt affinity (protocol/conversation-key.ts): where a text's keys
// fall, that a continuation's prompt asks for a key the node holding the text it continues
// recorded, that no key of one account (or model) matches another's, and the bounds on keys
// per text, per prompt and on the wire; then the router's choice among holders of different
// prefixes and a kept cache's keys as the node lists them.

import { describe, expect, it } from "vitest";
import { KvBatch, type KvShape } from "../gpu-node/decoder/kv-cache.js";
import { PrefixCache } from "../gpu-node/decoder/prefix-cache.js";
import {
  conversationKey,
  CONVERSATION_KEY_RE,
  HELD_TEXT_KEYS,
  heldTextKeys,
  PREFIX_STEP,
  prefixLengths,
  PROMPT_PREFIX_KEYS,
  promptPrefixKeys,
  textPrefixKeys,
} from "../protocol/conversation-key.js";
import { GENERATE_LIMITS, MessageError, parseRegionGenerateRequest } from "../protocol/messages.js";
import { mulberry32 } from "../protocol/prng.js";
import { pickWarmForStream, type NodeState } from "../regions/placement.js";
import { fakeNode } from "./helpers/fakes.js";

const S = PREFIX_STEP;
const A = "acct-a";
const B = "acct-b";
const M = "mdl_1@1";

/** Text of `n` characters, different per seed (with some characters outside the BMP). */
function text(n: number, seed: number): string {
  const rng = mulberry32(seed);
  const alphabet = "abcdefghij klmnopqrstuvwxyz.,\né🙂";
  let out = "";
  while (out.length < n) out += alphabet[Math.floor(rng() * alphabet.length)];
  return out.slice(0, n);
}

/** The first of `prompt` keys (longest first) that `held` has, as the router looks: its index, -1 for none. */
const firstHeld = (prompt: string[], held: { key: string }[]) => prompt.findIndex((k) => held.some((h) => h.key === k));

describe("prefix lengths", () => {
  it("the text's own length, then every boundary below it, longest first, bounded", () => {
    expect(prefixLengths(0, 3)).toEqual([]);
    expect(prefixLengths(100, 3)).toEqual([100]);
    expect(prefixLengths(S, 3)).toEqual([S]);
    expect(prefixLengths(S + 1, 3)).toEqual([S + 1, S]);
    expect(prefixLengths(4 * S, 3)).toEqual([4 * S, 3 * S, 2 * S]);
    expect(prefixLengths(1000, HELD_TEXT_KEYS)).toEqual([1000, 768, 512]);
    expect(prefixLengths(1000, 0)).toEqual([]);
    const many = prefixLengths(GENERATE_LIMITS.maxPromptChars, PROMPT_PREFIX_KEYS);
    expect(many).toHaveLength(PROMPT_PREFIX_KEYS);
    expect(many[0]).toBe(GENERATE_LIMITS.maxPromptChars);
    expect(many.slice(1).every((n, i) => n % S === 0 && n < many[i]!)).toBe(true);
  });
});

describe("a continuation finds the text it continues", () => {
  const previous = text(1000, 1); // a prompt and its completion, as the node kept them

  it("a key depends on the prefix only, not on what follows it", async () => {
    const long = previous + text(700, 2);
    for (const n of [1, S - 1, S, S + 1, 777, 1000]) {
      expect(await textPrefixKeys(A, M, long, [n])).toEqual(await textPrefixKeys(A, M, long.slice(0, n), [n]));
    }
    const keys = await promptPrefixKeys(A, M, long);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.every((k) => CONVERSATION_KEY_RE.test(k))).toBe(true);
  });

  it("the continued text (old text + more) asks first for the longest boundary the node recorded", async () => {
    const held = await heldTextKeys(A, M, previous);
    expect(held.map((h) => h.chars)).toEqual([1000, 768, 512]);
    const prompt = await promptPrefixKeys(A, M, previous + text(300, 3));
    expect(prefixLengths(1300, PROMPT_PREFIX_KEYS)[firstHeld(prompt, held)]).toBe(768);
    // The text sent back as it was ("continue"): the whole of it matches.
    expect(firstHeld(await promptPrefixKeys(A, M, previous), held)).toBe(0);
    // The client trimmed the completion's end and went on: a boundary below the edit still matches.
    const edited = await promptPrefixKeys(A, M, previous.slice(0, 900) + text(400, 4));
    expect(prefixLengths(1300, PROMPT_PREFIX_KEYS)[firstHeld(edited, held)]).toBe(768);
    const earlier = await promptPrefixKeys(A, M, previous.slice(0, 700) + text(400, 5));
    expect(prefixLengths(1100, PROMPT_PREFIX_KEYS)[firstHeld(earlier, held)]).toBe(512);
  });

  it("a prompt that shares no boundary with the text, or a short text continued, finds nothing", async () => {
    expect(firstHeld(await promptPrefixKeys(A, M, text(1300, 6)), await heldTextKeys(A, M, previous))).toBe(-1);
    const short = text(200, 7);
    expect(firstHeld(await promptPrefixKeys(A, M, short + "more"), await heldTextKeys(A, M, short))).toBe(-1);
    expect(firstHeld(await promptPrefixKeys(A, M, short), await heldTextKeys(A, M, short))).toBe(0);
  });

  it("a continuation that added more than the keys asked reach misses (bounded per prompt)", async () => {
    const held = await heldTextKeys(A, M, previous);
    const far = previous + text(S * PROMPT_PREFIX_KEYS, 8);
    expect(await promptPrefixKeys(A, M, far)).toHaveLength(PROMPT_PREFIX_KEYS);
    expect(firstHeld(await promptPrefixKeys(A, M, far), held)).toBe(-1);
  });
});

describe("tenants never share a key", () => {
  it("the same text under another account or model matches nothing", async () => {
    const t = text(1500, 9);
    const held = await heldTextKeys(A, M, t);
    for (const [account, model] of [
      [B, M],
      [A, "mdl_2@1"],
      [A, "mdl_1@2"],
      // The boundaries between account and model are part of the key.
      ["acct-", "a" + M],
    ] as const) {
      const other = await promptPrefixKeys(account, model, t + "more");
      expect(other.filter((k) => held.some((h) => h.key === k))).toEqual([]);
      expect(firstHeld(other, held)).toBe(-1);
    }
  });

  it("a text key is never a chat's conversation key", async () => {
    const content = text(300, 10);
    const chat = await conversationKey(A, M, [{ role: "user", content }]);
    expect(await promptPrefixKeys(A, M, content)).not.toContain(chat);
    expect(await promptPrefixKeys(A, M, JSON.stringify([A, M, [["user", content]]]))).not.toContain(chat);
  });

  it("a prefix longer than the text is refused", async () => {
    await expect(textPrefixKeys(A, M, "abc", [4])).rejects.toThrow(RangeError);
  });
});

describe("wire: a prompt's prefix keys are checked and bounded", () => {
  const K = "c".repeat(32);
  const req = {
    requestId: "r",
    model: { key: "m@1", account: "a", name: "m", version: 1, sha256: "0".repeat(64), size: 1, artifactUrl: "http://x", signature: { inputs: [], outputs: [] } },
    prompt: "p",
    params: { maxTokens: 1, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] },
    deadline: 1,
  };
  it("keys, at most PROMPT_PREFIX_KEYS", () => {
    expect(parseRegionGenerateRequest({ ...req, prefixKeys: [K, K] }).prefixKeys).toEqual([K, K]);
    expect(parseRegionGenerateRequest(req)).not.toHaveProperty("prefixKeys");
    expect(parseRegionGenerateRequest({ ...req, prefixKeys: null })).not.toHaveProperty("prefixKeys");
    expect(() => parseRegionGenerateRequest({ ...req, prefixKeys: ["not-a-key"] })).toThrow(/'prefixKeys' must hold conversation keys/);
    expect(() => parseRegionGenerateRequest({ ...req, prefixKeys: Array.from({ length: PROMPT_PREFIX_KEYS + 1 }, () => K) })).toThrow(MessageError);
    expect(() => parseRegionGenerateRequest({ ...req, prefixKeys: K })).toThrow(MessageError);
  });
});

describe("router: the node that holds the longest prefix", () => {
  const [K1, K2, K3] = ["1", "2", "3"].map((c) => c.repeat(32)) as [string, string, string];
  const node = (id: string, streams: number, held: string[] = []): NodeState =>
    fakeNode(id, { warm: new Map([["m", { memoryMb: 10, lastUsed: 0 }]]), streams, streamSlots: 16, conversations: new Map(held.map((k) => [k, 10])) });

  it("prefers the holder of an earlier (longer) key, then the less busy of equal holders", () => {
    const idle = node("idle", 0);
    const short = node("short", 0, [K3]);
    const long = node("long", 1, [K2]);
    expect(pickWarmForStream([idle, short, long], "m", undefined, [K1, K2, K3])?.id).toBe("long");
    expect(pickWarmForStream([idle, short, long], "m", undefined, [K1, K3])?.id).toBe("short");
    expect(pickWarmForStream([idle, short, long], "m", undefined, [K1])?.id).toBe("idle");
    expect(pickWarmForStream([node("l1", 3, [K2]), node("l2", 2, [K2, K3]), idle], "m", undefined, [K1, K2, K3])?.id).toBe("l2");
    // The longest holder markedly busier than the least busy: the usual choice, not a shorter holder.
    expect(pickWarmForStream([idle, node("short", 1, [K3]), node("long", 10, [K1])], "m", undefined, [K1, K3])?.id).toBe("idle");
  });
});

describe("node: a kept cache's keys as it lists them", () => {
  const shape: KvShape = { layers: 1, heads: 1, headDim: 2, type: "float32" };
  const kept = (from: number, n: number) => {
    const ids = Array.from({ length: n }, (_, i) => from + i);
    const data = new Float32Array(n * 2);
    return { ids, kv: new KvBatch(shape, [data], [data.slice()], 1, n, [0]) };
  };
  it("every key of the most recently used entries first, at most the limit", () => {
    const c = new PrefixCache(shape, { minReuse: 2 });
    c.put("a", kept(0, 30)).keys = [
      { key: "t30", tokens: 30 },
      { key: "t20", tokens: 20 },
      { key: "t10", tokens: 10 },
    ];
    c.put("a", kept(100, 8)).keys = [{ key: "chat", tokens: 8 }];
    c.put("a", kept(200, 8)); // keys not hashed yet: not listed
    expect(c.conversations(10).map((k) => k.key)).toEqual(["chat", "t30", "t20", "t10"]);
    c.match("a", kept(0, 31).ids);
    expect(c.conversations(2)).toEqual([
      { key: "t30", tokens: 30 },
      { key: "t20", tokens: 20 },
    ]);
  });
});
