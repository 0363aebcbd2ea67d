// Shadow copies of a call or generation that no region served: a traffic rule's shadow version
// still gets its copy (an operator testing a new version sees how it does exactly when the
// served one fails), a call's as a generation's, on every generation route (OpenAI chat whole
// and streamed, generate_stream, the WebSocket). With nothing served there is nothing to
// compare: the copy's usage row counts no mismatch. A real mesh (workerd edge, redis, a router,
// a node) whose only region's router is stopped: every served request finds no region.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { CHAR_TOKENIZER_FILE } from "../scripts/make-char-model.js";
import { call, errorCodeOf, mlpBody, type Answer } from "./helpers/mesh-client.js";
import { waitUntil, within } from "./helpers/region-harness.js";
import { StreamClient } from "./helpers/stream-client.js";

const REGION = "us-west";
let mesh: MeshHandle;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "shadow-unserved-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    nodeEnv: { HEARTBEAT_MS: "200", MESH_EXECUTION_PROVIDER: "cpu" },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
}, 240_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const api = (path: string, init: Parameters<typeof call>[1] = {}) => call(`${mesh.edge}${path}`, { key: mesh.apiKey, ...init });

/** A model of this test's own: two versions of a demo graph, v1 serving every call and v2 shadowing all of them. */
async function shadowedModel(name: string, demo: string, tokenizerPath?: string): Promise<void> {
  expect((await api("/v1/models", { json: { name } })).status).toBe(201);
  const graph = await readFile(mesh.models.find((m) => m.name === demo)!.file);
  for (const n of [1, 2]) {
    const up = await api(`/v1/models/${name}/versions`, { body: graph, headers: { "content-type": "application/octet-stream" } });
    expect(up.status, JSON.stringify(up.body)).toBe(201);
    expect(up.body.version).toBe(n);
    if (tokenizerPath) {
      const tok = await api(`/v1/models/${name}/versions/${n}/tokenizer`, { method: "PUT", body: await readFile(tokenizerPath), headers: { "content-type": "application/octet-stream" } });
      expect(tok.status, JSON.stringify(tok.body)).toBeLessThan(300);
    }
  }
  const rule = await api(`/v1/models/${name}/traffic`, { method: "PUT", json: { split: [{ version: 1, weight: 100 }], shadow: [{ version: 2, percent: 100 }] } });
  expect(rule.status, JSON.stringify(rule.body)).toBe(200);
}

type ShadowUsage = { calls: number; errors: number; mismatches: number; promptTokens: number; completionTokens: number };
type Row = { version: number; calls: number; errors: number; shadow: ShadowUsage };

/** The shadow version's (v2's) `shadow` usage since `from`, once it counts `calls` copies. */
function shadowRows(model: string, from: number, calls: number): Promise<ShadowUsage> {
  return waitUntil(
    `${calls} shadow rows of ${model}`,
    30_000,
    async () => {
      const u = await api(`/v1/usage?model=${model}&from=${from}`);
      const v2 = ((u.body.models ?? []) as Row[]).find((r) => r.version === 2);
      return (v2?.shadow.calls ?? 0) >= calls ? v2!.shadow : undefined;
    },
    250,
  );
}

describe("shadow copies when no region serves", () => {
  it("a failed call and a generation no region took are each copied to the shadow version; nothing served, no mismatch counted", async () => {
    await shadowedModel("mlp-shadowed", "demo-mlp");
    await shadowedModel("chat-shadowed", "demo-chat", join(dir, "models", CHAR_TOKENIZER_FILE));
    const from = Date.now();

    // The region's router stops (drains): once the edge sees it gone, no region takes anything.
    await mesh.stopRouter(REGION);
    const infer = () => api("/v2/models/mlp-shadowed/infer", { json: mlpBody([[1, 2, 3, 4]]) });
    let calls = 0;
    await waitUntil(
      "the edge sees no region",
      30_000,
      async () => {
        calls++;
        const a = await infer();
        expect(a.status, JSON.stringify(a.body)).not.toBe(200);
        return errorCodeOf(a) === "no_region_available" ? a : undefined;
      },
      250,
    );

    // A unary call's copies run whatever the served call's outcome: one per failed call.
    const unary = await shadowRows("mlp-shadowed", from, calls);
    expect(unary).toMatchObject({ calls, errors: calls, mismatches: 0 });

    // Generations on every route: each refused before its first frame, each copied all the same.
    const greedy = { max_tokens: 8, temperature: 0 };
    const messages = [{ role: "user", content: "Once upon a time" }];
    const refused = (a: Answer, what: string) => {
      expect(a.status, `${what}: ${JSON.stringify(a.body)}`).toBe(503);
      expect(errorCodeOf(a), what).toBe("no_region_available");
    };
    refused(await api("/openai/v1/chat/completions", { json: { model: "chat-shadowed", messages, ...greedy } }), "chat");
    refused(await api("/openai/v1/chat/completions", { json: { model: "chat-shadowed", messages, ...greedy, stream: true } }), "streamed chat");
    refused(await api("/v2/models/chat-shadowed/generate_stream", { json: { text_input: "The old house", parameters: { max_tokens: 8, seed: 7 } } }), "generate_stream");
    const ws = await StreamClient.open(`${mesh.edge.replace(/^http/, "ws")}/v2/models/chat-shadowed/stream`, { key: mesh.apiKey });
    try {
      const ended = await within(ws.generate("w1", { text_input: "The river", parameters: { max_tokens: 8, temperature: 0 } }), 30_000, "socket");
      expect(ended.end.ev).toMatchObject({ type: "error", code: "no_region_available" });
    } finally {
      ws.close();
    }
    // Four copies on v2, each failing as its region is down; no served text, so none judged a mismatch.
    const gens = await shadowRows("chat-shadowed", from, 4);
    expect(gens).toMatchObject({ calls: 4, errors: 4, mismatches: 0, completionTokens: 0 });
    // And the served version has its own row for each refused generation, as a refused call does.
    const served = await waitUntil(
      "4 served rows of chat-shadowed",
      30_000,
      async () => {
        const u = await api(`/v1/usage?model=chat-shadowed&from=${from}`);
        const v1 = ((u.body.models ?? []) as Row[]).find((r) => r.version === 1);
        return (v1?.calls ?? 0) >= 4 ? v1 : undefined;
      },
      250,
    );
    expect(served).toMatchObject({ calls: 4, errors: 4 });
  }, 120_000);
});
