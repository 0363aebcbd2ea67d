// Plain-prompt affinity end to end (protocol/conversation-key.ts prefix keys): the edge in
// workerd, one region router with two node agents, tiny-gpt warm on both, Redis. A client that
// continues a text (the previous prompt, the completion it got, then more) through
// /openai/v1/completions or /v2/models/<m>/generate is sent to the node that kept that text's
// KV cache, and that node reuses it (`cached_tokens`). Two texts are started at once so that
// they are kept on different nodes: with both nodes idle the router's usual choice is one fixed
// node, so the continuation of the text on the other node shows the choice is the key's.
// Another account sending the identical text holds none of the keys and reuses nothing.

import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, startMesh, type MeshHandle } from "../local/mesh.js";
import { heldTextKeys, promptPrefixKeys } from "../protocol/conversation-key.js";
import { mulberry32 } from "../protocol/prng.js";
import { TINY_GPT_NAME, tinyGptBundle } from "../scripts/make-demo-models.js";
import { call, type Answer } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";

const REGION = "us-west";
const MODEL = TINY_GPT_NAME;
const TINY = tinyGptBundle(join(ROOT, "models", TINY_GPT_NAME));
const WORDS = "river mill king town people bread stone water light night morning garden forest road market horse bridge tower winter summer story village".split(" ");

const say = (line: string) => process.stdout.write(`[completion-affinity] ${line}\n`);

let mesh: MeshHandle;
let dir: string;
/** The model key of each account's tiny-gpt (`<model id>@<version>`). */
let keyA: string;
let other: { accountId: string; apiKey: string; modelKey: string };

/** About `chars` characters of words, different per seed: a prompt past the first key boundaries. */
function words(chars: number, seed: number): string {
  const rng = mulberry32(seed);
  const out: string[] = [];
  while (out.join(" ").length < chars) out.push(WORDS[Math.floor(rng() * WORDS.length)]!);
  return out.join(" ") + ".";
}

interface Completion {
  text: string;
  node: string;
  promptTokens: number;
  cachedTokens: number;
}

function completed(a: Answer, text: (b: any) => string, cached: (b: any) => number | undefined): Completion {
  expect(a.status, JSON.stringify(a.body)).toBe(200);
  const node = a.headers.get("x-mesh-node");
  expect(node).toBeTruthy();
  return { text: text(a.body), node: node!, promptTokens: a.body.usage.prompt_tokens, cachedTokens: cached(a.body) ?? 0 };
}

/** POST /openai/v1/completions, greedy. */
async function complete(apiKey: string, prompt: string, maxTokens = 24): Promise<Completion> {
  const a = await call(`${mesh.edge}/openai/v1/completions`, { key: apiKey, json: { model: MODEL, prompt, max_tokens: maxTokens, temperature: 0 }, headers: { "x-mesh-timeout-ms": "60000" } });
  return completed(a, (b) => b.choices[0].text, (b) => b.usage.prompt_tokens_details?.cached_tokens);
}

/** POST /v2/models/<m>/generate, greedy. */
async function generate(apiKey: string, prompt: string, maxTokens = 24): Promise<Completion> {
  const a = await call(`${mesh.edge}/v2/models/${MODEL}/generate`, { key: apiKey, json: { text_input: prompt, parameters: { max_tokens: maxTokens, temperature: 0 } }, headers: { "x-mesh-timeout-ms": "60000" } });
  return completed(a, (b) => b.text_output, (b) => b.usage.cached_tokens);
}

/** The keys the region's report says its nodes keep. */
async function heldInRegion(): Promise<Set<string>> {
  return new Set(((await mesh.regionStatus(REGION)).affinity ?? []).map((c) => c.key));
}

/** Uploads the tiny-gpt bundle as `apiKey`'s account's model; its model key. */
async function deployTinyGpt(apiKey: string): Promise<string> {
  const created = await call(`${mesh.edge}/v1/models`, { key: apiKey, json: { name: MODEL } });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const named: Record<string, string> = {};
  for (const f of TINY!.files) {
    const up = await call(`${mesh.edge}/v1/models/${MODEL}/files`, { key: apiKey, body: await readFile(f.path), headers: { "content-type": "application/octet-stream" } });
    expect(up.status, JSON.stringify(up.body)).toBe(201);
    named[f.name] = up.body.sha256;
  }
  const v = await call(`${mesh.edge}/v1/models/${MODEL}/versions`, {
    key: apiKey,
    body: await readFile(TINY!.graph),
    headers: { "content-type": "application/octet-stream", "x-mesh-files": JSON.stringify(named) },
  });
  expect(v.status, JSON.stringify(v.body)).toBe(201);
  return `${created.body.id}@${v.body.version}`;
}

describe.skipIf(!TINY)("plain-prompt affinity through a real mesh", () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "completion-affinity-"));
    mesh = await startMesh({
      stateDir: dir,
      regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 2 }],
      demoChat: false,
      edgeVars: { EXPLORATION_SHARE: "0" },
      nodeEnv: { HEARTBEAT_MS: "200", NODE_THREADS_PER_WORKER: "1", NODE_WORKERS_PER_MODEL: "1", MESH_EXECUTION_PROVIDER: "cpu" },
      progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
    });
    const model = await call(`${mesh.edge}/v1/models/${MODEL}`, { key: mesh.apiKey });
    expect(model.status, JSON.stringify(model.body)).toBe(200);
    keyA = `${model.body.id}@${model.body.latestVersion}`;
    // Warm on both nodes, so placement is the router's choice between two ready nodes.
    const put = await call(`${mesh.edge}/v1/models/${MODEL}`, { key: mesh.apiKey, method: "PUT", json: { keepWarm: 2 } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    await waitUntil("tiny-gpt warm on both nodes", 120_000, async () => ((await mesh.regionStatus(REGION)).models.find((m) => m.key === keyA)?.replicas ?? 0) >= 2 || undefined, 250);
    // Another account with its own tiny-gpt (a model belongs to one account).
    const acct = await call(`${mesh.edge}/v1/accounts`, { key: mesh.adminToken, json: { name: "other" } });
    expect(acct.status, JSON.stringify(acct.body)).toBe(201);
    const apiKey = acct.body.apiKey.key as string;
    other = { accountId: acct.body.accountId, apiKey, modelKey: await deployTinyGpt(apiKey) };
  }, 240_000);

  afterAll(async () => {
    await mesh?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("a continued text goes to the node that kept it and reuses its cache; another account's identical text does not", async () => {
    // Two texts at once, until they were kept on different nodes (two streams at once go to two idle nodes).
    let firsts: { prompt: string; done: Completion }[] = [];
    for (let seed = 1; ; seed += 2) {
      const prompts = [words(400, seed), words(400, seed + 1)];
      const done = await Promise.all(prompts.map((p) => complete(mesh.apiKey, p)));
      firsts = prompts.map((prompt, i) => ({ prompt, done: done[i]! }));
      if (done[0]!.node !== done[1]!.node) break;
      expect(seed, "two texts started at once never ran on different nodes").toBeLessThan(9);
    }
    say(`kept on ${firsts.map((f) => f.done.node).join(" and ")}`);

    // The router steers by what the nodes' heartbeats say they keep: wait until both texts are there.
    const texts = firsts.map((f) => f.prompt + f.done.text);
    const held = await Promise.all(texts.map((t) => heldTextKeys(mesh.accountId, keyA, t)));
    await waitUntil("both texts' keys reported", 15_000, async () => {
      const region = await heldInRegion();
      return held.every((h) => h.every((k) => region.has(k.key))) || undefined;
    });

    // Each continued (the text as it came back, then more), one through each route.
    const more = [" Then the king went down to the river.", " In the morning the people came to the market."];
    const next = [await complete(mesh.apiKey, texts[0]! + more[0]!), await generate(mesh.apiKey, texts[1]! + more[1]!)];
    for (let i = 0; i < 2; i++) {
      const [first, cont] = [firsts[i]!.done, next[i]!];
      expect(cont.node, `continuation ${i} ran on the node that kept its text`).toBe(first.node);
      // The first prompt's tokens at least (BPE may merge across where the completion began), never all.
      expect(cont.cachedTokens).toBeGreaterThanOrEqual(first.promptTokens - 2);
      expect(cont.cachedTokens).toBeLessThan(cont.promptTokens);
    }

    // Another account, the identical continued text: none of its keys is one the region keeps,
    // while the same text's keys under the first account are.
    const region = await heldInRegion();
    const prompt = texts[0]! + more[0]!;
    expect((await promptPrefixKeys(mesh.accountId, keyA, prompt)).some((k) => region.has(k))).toBe(true);
    expect((await promptPrefixKeys(other.accountId, other.modelKey, prompt)).filter((k) => region.has(k))).toEqual([]);
    const theirs = await complete(other.apiKey, prompt);
    expect(theirs.cachedTokens).toBe(0);
    expect(theirs.promptTokens).toBe(next[0]!.promptTokens);
    // Its own text, continued, is its own to reuse.
    await waitUntil("the other account's text reported", 15_000, async () => {
      const keys = await heldTextKeys(other.accountId, other.modelKey, prompt + theirs.text);
      return (await heldInRegion()).has(keys[0]!.key) || undefined;
    });
    const again = await complete(other.apiKey, prompt + theirs.text + " And so it ended.");
    expect(again.node).toBe(theirs.node);
    expect(again.cachedTokens).toBeGreaterThan(0);
  }, 180_000);
});
