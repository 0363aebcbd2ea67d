// The OpenAI-compatible surface (/openai/v1) end to end, through the official `openai` npm client
// unchanged: the edge in workerd, one region router, one node running the demo-chat language
// model in onnxruntime-node, Redis behind the Upstash REST stand-in. The node adds 2 ms per
// token (MESH_SIMULATED_TOKEN_MS) so a long generation is still running when the client aborts.
//
// The truth for demo-chat's texts is the same loop run in this process (ReferenceModel): a
// completion is the prompt's text, a chat (demo-chat has no chat template) is the plain
// "role: content" prompt the edge writes. The tiny-gpt bundle cases (Hugging Face files in the
// version's bundle, the chat rendered on the node with its template) run when models/tiny-gpt/
// is there (TINY_GPT_DIR names another place).

import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatRequestSchema, CompletionRequestSchema, OpenAIParamError, parseChatRequest, parseCompletionRequest, plainChatPrompt } from "../edge/openai-format.js";
import { GENERATE_LIMITS } from "../protocol/messages.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { CHAR_TOKENIZER_FILE } from "../scripts/make-char-model.js";
import { call } from "./helpers/mesh-client.js";
import { waitUntil, within } from "./helpers/region-harness.js";
import { readSse, ReferenceModel, streamStats, nodeIdle as waitForNodeIdle, type StreamStats } from "./helpers/stream-client.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const TINY_DIR = process.env.TINY_GPT_DIR ?? join(ROOT, "models", "tiny-gpt");
const HAS_TINY = existsSync(join(TINY_DIR, "model.onnx")) && existsSync(join(TINY_DIR, "tokenizer.json"));

let mesh: MeshHandle;
let dir: string;
let ref: ReferenceModel;
let client: OpenAI;
const REGION = "us-west";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "openai-api-"));
  mesh = await startMesh({
    stateDir: dir,
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    nodeEnv: { HEARTBEAT_MS: "200", MESH_SIMULATED_TOKEN_MS: "2", MESH_EXECUTION_PROVIDER: "cpu" },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
  const chat = mesh.models.find((m) => m.name === "demo-chat")!;
  ref = await ReferenceModel.load(chat.file, join(dir, "models", CHAR_TOKENIZER_FILE));
  client = new OpenAI({ apiKey: mesh.apiKey, baseURL: `${mesh.edge}/openai/v1`, maxRetries: 0 });
}, 240_000);

afterAll(async () => {
  await ref?.release();
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const stats = (): Promise<StreamStats> => streamStats(mesh.regions[REGION]!, mesh.regionSecrets[REGION]!);

const nodeIdle = (timeoutMs = 15_000) => waitForNodeIdle(stats, timeoutMs);

describe("the openai client against the mesh (demo-chat)", () => {
  it("lists the account's generative models, and only those", async () => {
    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    expect(ids).toContain("demo-chat");
    // The demo's tensor models (no tokenizer, not decoders) are not listed.
    for (const m of mesh.models.filter((x) => x.name !== "demo-chat" && x.name !== "tiny-gpt")) expect(ids).not.toContain(m.name);
    expect(list.data.find((m) => m.id === "demo-chat")).toMatchObject({ object: "model", owned_by: mesh.accountId });
    expect(await client.models.retrieve("demo-chat:1")).toMatchObject({ id: "demo-chat:1", object: "model" });
  });

  it("a non-streamed chat completion: the plain prompt's text, usage and the version that ran", async () => {
    const messages = [
      { role: "system" as const, content: "Answer briefly." },
      { role: "user" as const, content: "Where does the river go?" },
    ];
    const { data, response } = await client.chat.completions.create({ model: "demo-chat", messages, max_tokens: 24, temperature: 0.8, seed: 11 }).withResponse();
    expect(response.headers.get("x-request-id")).toMatch(/\S/);
    const prompt = plainChatPrompt(messages);
    expect(data.object).toBe("chat.completion");
    expect(data.model).toBe("demo-chat:1");
    expect(data.choices).toHaveLength(1);
    expect(data.choices[0]!.message).toMatchObject({ role: "assistant", content: await ref.text(prompt, { max_tokens: 24, temperature: 0.8, seed: 11 }) });
    expect(data.choices[0]!.finish_reason).toBe("length");
    expect(data.usage).toEqual({ prompt_tokens: ref.tokenizer.encode(prompt).length, completion_tokens: 24, total_tokens: ref.tokenizer.encode(prompt).length + 24 });
  });

  it("a completion with a stop sequence, and the same through /completions and a pinned version", async () => {
    const params = { max_tokens: 40, temperature: 0.9, top_k: 20, seed: 3 };
    const expected = await ref.text("The river", params);
    const whole = await client.completions.create({ model: "demo-chat:1", prompt: "The river", ...params } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(whole.object).toBe("text_completion");
    expect(whole.choices[0]!.text).toBe(expected);
    expect(whole.usage).toMatchObject({ prompt_tokens: 9, completion_tokens: 40 });
    const stop = expected.slice(10, 12);
    const stopped = await client.completions.create({ model: "demo-chat:latest", prompt: "The river", stop, ...params } as OpenAI.CompletionCreateParamsNonStreaming);
    expect(stopped.choices[0]!.finish_reason).toBe("stop");
    expect(expected.startsWith(stopped.choices[0]!.text)).toBe(true);
    expect(stopped.choices[0]!.text).not.toContain(stop);
  });

  it("a streamed chat completion: role first, one chunk per token, the finish, the usage chunk; [DONE] on the wire", async () => {
    const messages = [{ role: "user" as const, content: "Tell me of the sea." }];
    const params = { max_tokens: 30, temperature: 0.7, seed: 5 };
    const expected = await ref.text(plainChatPrompt(messages), params);
    const stream = await client.chat.completions.create({ model: "demo-chat", messages, stream: true, stream_options: { include_usage: true }, ...params });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const ch of stream) chunks.push(ch);
    expect(chunks[0]!.choices[0]!.delta.role).toBe("assistant");
    expect(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0]!.id && c.model === "demo-chat:1")).toBe(true);
    const content = chunks.flatMap((c) => c.choices.map((x) => x.delta.content ?? ""));
    expect(content.join("")).toBe(expected);
    expect(chunks.filter((c) => c.choices[0]?.delta.content)).toHaveLength(30);
    const finish = chunks.filter((c) => c.choices[0]?.finish_reason);
    expect(finish).toHaveLength(1);
    expect(finish[0]!.choices[0]!.finish_reason).toBe("length");
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toMatchObject({ completion_tokens: 30, prompt_tokens: ref.tokenizer.encode(plainChatPrompt(messages)).length });

    // The wire itself: SSE data lines of JSON, ending with [DONE]; no usage chunk unless asked.
    const res = await fetch(`${mesh.edge}/openai/v1/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ model: "demo-chat", prompt: "The river", stream: true, max_tokens: 5, temperature: 0 }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const events = (await res.text()).split("\n\n").filter((b) => b.startsWith("data: ")).map((b) => b.slice(6));
    expect(events.at(-1)).toBe("[DONE]");
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e) as OpenAI.Completion);
    expect(parsed.map((p) => p.choices[0]!.text).join("")).toBe(await ref.text("The river", { max_tokens: 5, temperature: 0 }));
    expect(parsed.every((p) => p.object === "text_completion" && p.usage === undefined)).toBe(true);
    // The stream's headers name its request, the id its chunks carry.
    expect(parsed[0]!.id).toBe(`cmpl-${res.headers.get("x-request-id")}`);
  });

  it("a stream the client aborts: the generation stops on the node", async () => {
    const before = await nodeIdle();
    const stream = await client.chat.completions.create({
      model: "demo-chat",
      messages: [{ role: "user", content: "Go on and on." }],
      max_tokens: 4000,
      temperature: 0.8,
      seed: 2,
      stream: true,
    });
    let seen = 0;
    await within(
      (async () => {
        for await (const ch of stream) {
          if (ch.choices[0]?.delta.content && ++seen >= 10) {
            stream.controller.abort();
            break;
          }
        }
      })(),
      30_000,
      "first tokens",
    );
    expect(seen).toBe(10);
    const after = await nodeIdle();
    // 4000 tokens at 2 ms each would run 8 s; the node stopped once the edge saw the reader go.
    expect(after - before).toBeLessThan(1000);
    expect((await stats()).router.running).toBe(0);
  });

  it("a bad model name, an unknown version, and refused parameters: OpenAI-shaped errors", async () => {
    for (const model of ["no-such-model", "demo-chat:99"]) {
      const err = await client.chat.completions.create({ model, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(OpenAI.NotFoundError);
      const e = err as InstanceType<typeof OpenAI.NotFoundError>;
      expect(e.status).toBe(404);
      expect(e.code).toBe("model_not_found");
      expect(e.type).toBe("invalid_request_error");
      expect(e.param).toBe("model");
      expect(e.requestID).toMatch(/\S/);
    }
    const n = await client.chat.completions.create({ model: "demo-chat", n: 2, messages: [{ role: "user", content: "hi" }] }).catch((e: unknown) => e);
    expect(n).toBeInstanceOf(OpenAI.BadRequestError);
    expect(n).toMatchObject({ status: 400, param: "n", type: "invalid_request_error" });
    const tools = await client.chat.completions
      .create({ model: "demo-chat", messages: [{ role: "user", content: "hi" }], tools: [{ type: "function", function: { name: "f" } }] })
      .catch((e: unknown) => e);
    expect(tools).toMatchObject({ status: 400, param: "tools" });
    // A tensor model cannot generate: a 400 that says why.
    const tensor = mesh.models.find((m) => m.name !== "demo-chat" && m.name !== "tiny-gpt")!;
    const notGen = await client.completions.create({ model: tensor.name, prompt: "x" }).catch((e: unknown) => e);
    expect(notGen).toMatchObject({ status: 400, type: "invalid_request_error" });
    // Raw: the body is OpenAI's shape, the request id in the header and the body.
    const raw = await fetch(`${mesh.edge}/openai/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: "{not json",
    });
    expect(raw.status).toBe(400);
    const body = (await raw.json()) as { error: Record<string, unknown> };
    expect(body.error).toMatchObject({ type: "invalid_request_error", code: "invalid_json", param: null });
    expect(body.error.request_id).toBe(raw.headers.get("x-request-id"));
  });

  it("a body the documented schema refuses is refused by the route: 400 in OpenAI's shape naming the param; one it takes, with the fields clients send, gets through", async () => {
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${mesh.edge}/openai/v1/${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, requestId: res.headers.get("x-request-id"), body: (await res.json()) as { error: Record<string, unknown> } };
    };
    /** The param the route's parser names for a body (the parser is checked against the schema in request-schemas.test.ts). */
    const paramOf = (parse: (b: unknown) => unknown, b: unknown) => {
      try {
        parse(b);
      } catch (err) {
        if (err instanceof OpenAIParamError) return err.param;
        throw err;
      }
      throw new Error(`the parser takes ${JSON.stringify(b)}`);
    };
    const messages = [{ role: "user", content: "hi" }];
    const chat = (extra: Record<string, unknown>) => ({ model: "demo-chat", messages, ...extra });
    const completion = (extra: Record<string, unknown>) => ({ model: "demo-chat", prompt: "The river", ...extra });
    const cases = [
      [
        "chat/completions",
        ChatRequestSchema,
        parseChatRequest,
        [
          [1, 2],
          { messages },
          chat({ model: "demo-chat:" }),
          chat({ messages: [] }),
          chat({ messages: [{ role: "", content: "x" }] }),
          chat({ messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "https://x.test/a.png" } }] }] }),
          chat({ messages: [{ role: "assistant", content: null, tool_calls: [{ id: "c1" }] }] }),
          chat({ temperature: 9 }),
          chat({ top_p: 0 }),
          chat({ top_k: -1 }),
          chat({ max_tokens: 0 }),
          chat({ max_completion_tokens: 1.5 }),
          chat({ stop: [""] }),
          chat({ stop: Array(GENERATE_LIMITS.maxStop + 1).fill("x") }),
          chat({ seed: -1 }),
          chat({ n: 2 }),
          chat({ stream: "yes" }),
          chat({ stream_options: { include_usage: 1 } }),
          chat({ logprobs: true }),
          chat({ tools: [{ type: "function", function: { name: "f" } }] }),
          chat({ response_format: { type: "json_object" } }),
          chat({ logit_bias: { "50256": -100 } }),
          chat({ presence_penalty: 0.5 }),
        ],
      ],
      [
        "completions",
        CompletionRequestSchema,
        parseCompletionRequest,
        [
          { prompt: "x" },
          completion({ prompt: "" }),
          completion({ prompt: ["a", "b"] }),
          completion({ prompt: [1, 2] }),
          completion({ prompt: "x".repeat(GENERATE_LIMITS.maxPromptChars + 1) }),
          completion({ suffix: "z" }),
          completion({ echo: true }),
          completion({ best_of: 2 }),
          completion({ logprobs: 2 }),
          completion({ frequency_penalty: 1 }),
        ],
      ],
    ] as const;
    for (const [path, schema, parse, bodies] of cases) {
      for (const b of bodies) {
        const what = `${path} ${JSON.stringify(b).slice(0, 200)}`;
        expect(schema.safeParse(b).success, `${what} is refused by the documented schema`).toBe(false);
        const res = await post(path, b);
        expect(res.status, what).toBe(400);
        expect(Object.keys(res.body), what).toEqual(["error"]);
        expect(Object.keys(res.body.error).sort(), what).toEqual(["code", "message", "param", "request_id", "type"]);
        expect(res.body.error, what).toMatchObject({ type: "invalid_request_error", code: "bad_request", param: paramOf(parse, b), request_id: res.requestId });
      }
    }
    // What OpenAI's clients send beside the fields the mesh reads: nulls, neutral values, fields it does not know.
    const extras = { user: "u", metadata: { a: "b" }, store: false, n: 1, logprobs: false, stop: null, seed: null, stream: false, stream_options: null, parallel_tool_calls: true, service_tier: "auto" };
    const taken = [
      ["chat/completions", ChatRequestSchema, chat({ max_tokens: 2, ...extras, tools: [], tool_choice: "none", response_format: { type: "text" } })],
      ["completions", CompletionRequestSchema, completion({ max_tokens: 2, ...extras, echo: false, suffix: "", best_of: 1 })],
    ] as const;
    for (const [path, schema, b] of taken) {
      expect(schema.safeParse(b).success, path).toBe(true);
      const res = await post(path, b);
      expect(res.status, `${path} ${JSON.stringify(res.body)}`).toBe(200);
      const answer = res.body as unknown as { choices: unknown[]; usage: { completion_tokens: number } };
      expect(answer.choices).toHaveLength(1);
      expect(answer.usage.completion_tokens).toBeLessThanOrEqual(2);
    }
  });

  it("usage records each call with the prompt and completion tokens its answer reported", async () => {
    // A copy of demo-chat under another name: its usage rows are this test's alone.
    const name = "oa-usage";
    expect((await call(`${mesh.edge}/v1/models`, { key: mesh.apiKey, json: { name } })).status).toBe(201);
    const chat = mesh.models.find((m) => m.name === "demo-chat")!;
    const up = await call(`${mesh.edge}/v1/models/${name}/versions`, { key: mesh.apiKey, body: await readFile(chat.file), headers: { "content-type": "application/octet-stream" } });
    expect(up.status).toBe(201);
    const tok = await call(`${mesh.edge}/v1/models/${name}/versions/1/tokenizer`, {
      key: mesh.apiKey,
      method: "PUT",
      body: await readFile(join(dir, "models", CHAR_TOKENIZER_FILE)),
      headers: { "content-type": "application/json" },
    });
    expect(tok.status).toBe(200);
    const a = await client.chat.completions.create({ model: name, messages: [{ role: "user", content: "Count the stars." }], max_tokens: 7, temperature: 0 });
    const stream = await client.completions.create({ model: name, prompt: "The river", max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let b: OpenAI.CompletionUsage | undefined;
    for await (const ch of stream) if (ch.usage) b = ch.usage;
    expect(b).toMatchObject({ prompt_tokens: 9, completion_tokens: 5 });
    const row = await waitUntil(
      "usage rows",
      30_000,
      async () => {
        const u = await call(`${mesh.edge}/v1/usage?model=${name}`, { key: mesh.apiKey });
        const r = (u.body.models as { calls: number; promptTokens: number; completionTokens: number }[] | undefined)?.[0];
        return r && r.calls === 2 ? r : undefined;
      },
      250,
    );
    expect(row.promptTokens).toBe(a.usage!.prompt_tokens + b!.prompt_tokens);
    expect(row.completionTokens).toBe(a.usage!.completion_tokens + b!.completion_tokens);
  });

  it("a revoked key: 401 invalid_api_key", async () => {
    const made = await call(`${mesh.edge}/v1/keys`, { key: mesh.apiKey, json: { name: "openai-revoke", scopes: ["infer"] } });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    const other = new OpenAI({ apiKey: made.body.key as string, baseURL: `${mesh.edge}/openai/v1`, maxRetries: 0 });
    expect((await other.models.list()).data.map((m) => m.id)).toContain("demo-chat");
    const revoked = await call(`${mesh.edge}/v1/keys/${made.body.id as string}`, { key: mesh.apiKey, method: "DELETE" });
    expect(revoked.status).toBe(200);
    const err = await waitUntil(
      "revocation seen",
      30_000,
      async () => {
        const e = await other.chat.completions.create({ model: "demo-chat", messages: [{ role: "user", content: "hi" }], max_tokens: 2 }).then(
          () => undefined,
          (x: unknown) => x,
        );
        return e;
      },
      250,
    );
    expect(err).toBeInstanceOf(OpenAI.AuthenticationError);
    expect(err).toMatchObject({ status: 401, code: "invalid_api_key", type: "invalid_request_error" });
    const none = new OpenAI({ apiKey: "mesh_not_a_key", baseURL: `${mesh.edge}/openai/v1`, maxRetries: 0 });
    await expect(none.models.list()).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
  });
});

describe.skipIf(!HAS_TINY)("a generative bundle (tiny-gpt): Hugging Face files beside the graph", () => {
  const name = "tiny-gpt-bundle";
  const api = (path: string, init: Parameters<typeof call>[1] = {}) => call(`${mesh.edge}${path}`, { key: mesh.apiKey, ...init });
  const fileNames = ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"];

  beforeAll(async () => {
    expect((await api("/v1/models", { json: { name } })).status).toBe(201);
  });

  it("refuses a tokenizer.json that is not one, and a chat_template that is not a string", async () => {
    const junk = await api(`/v1/models/${name}/files`, { body: JSON.stringify({ hello: 1 }), headers: { "content-type": "application/json" } });
    expect(junk.status).toBe(201);
    const badCfg = await api(`/v1/models/${name}/files`, { body: JSON.stringify({ chat_template: [{ name: "x" }] }), headers: { "content-type": "application/json" } });
    const graph = await readFile(join(TINY_DIR, "model.onnx"));
    for (const [file, sha] of [
      ["tokenizer.json", junk.body.sha256],
      ["tokenizer_config.json", badCfg.body.sha256],
    ] as const) {
      const up = await api(`/v1/models/${name}/versions`, { body: graph, headers: { "content-type": "application/octet-stream", "x-mesh-files": JSON.stringify({ [file]: sha }) } });
      expect(up.status, JSON.stringify(up.body)).toBe(400);
      expect(up.body).toMatchObject({ code: "invalid_model_file" });
      expect(up.body.error).toContain(file);
    }
    // A file this account never uploaded cannot be named.
    const foreign = await api(`/v1/models/${name}/versions`, { body: graph, headers: { "content-type": "application/octet-stream", "x-mesh-files": JSON.stringify({ "tokenizer.json": "0".repeat(64) }) } });
    expect(foreign.status).toBe(400);
  });

  /** Uploads the tiny-gpt bundle's files and a version of `model` naming them. */
  async function uploadBundleVersion(model: string) {
    const files: Record<string, string> = {};
    for (const f of fileNames) {
      if (!existsSync(join(TINY_DIR, f))) continue;
      const up = await api(`/v1/models/${model}/files`, { body: await readFile(join(TINY_DIR, f)), headers: { "content-type": "application/octet-stream" } });
      expect(up.status, JSON.stringify(up.body)).toBe(201);
      files[f] = up.body.sha256 as string;
    }
    const version = await api(`/v1/models/${model}/versions`, {
      body: await readFile(join(TINY_DIR, "model.onnx")),
      headers: { "content-type": "application/octet-stream", "x-mesh-files": JSON.stringify(files) },
    });
    expect(version.status, JSON.stringify(version.body)).toBe(201);
    return { files, version };
  }

  it("a version with its files generates without an uploaded tokenizer; the node renders the chat template", async () => {
    const { files, version } = await uploadBundleVersion(name);
    expect((version.body.files as { name: string }[]).map((f) => f.name).sort()).toEqual(Object.keys(files).sort());
    expect((await client.models.list()).data.map((m) => m.id)).toContain(name);

    const messages = [{ role: "user", content: "Hello there" }];
    const tokJson = JSON.parse(await readFile(join(TINY_DIR, "tokenizer.json"), "utf8")) as object;
    const tokCfg = JSON.parse(await readFile(join(TINY_DIR, "tokenizer_config.json"), "utf8")) as { chat_template: string };
    const rendered = new Template(tokCfg.chat_template).render({ messages, add_generation_prompt: true });
    const promptTokens = new Tokenizer(tokJson, tokCfg).encode(rendered).ids.length;
    const answer = await client.chat.completions.create({ model: name, messages: messages as OpenAI.ChatCompletionMessageParam[], max_tokens: 8, temperature: 0 });
    // The prompt the node counted is the template's rendering, not the edge's plain fallback.
    expect(answer.usage!.prompt_tokens).toBe(promptTokens);
    expect(answer.usage!.completion_tokens).toBeLessThanOrEqual(8);
    expect(answer.model).toBe(`${name}:1`);
    const again = await client.chat.completions.create({ model: name, messages: messages as OpenAI.ChatCompletionMessageParam[], max_tokens: 8, temperature: 0 });
    expect(again.choices[0]!.message.content).toBe(answer.choices[0]!.message.content);
  });

  it("shadow copies of generations: chat (whole and streamed) and generate_stream each run again on the shadow version once served; the caller's text is unchanged", async () => {
    // Two identical versions of a model of this test's own: v1 serves, v2 gets every copy.
    const model = "tiny-gpt-shadowed";
    expect((await api("/v1/models", { json: { name: model } })).status).toBe(201);
    expect((await uploadBundleVersion(model)).version.body.version).toBe(1);
    expect((await uploadBundleVersion(model)).version.body.version).toBe(2);
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "Once upon a time" }];
    const greedy = { max_tokens: 10, temperature: 0 };
    const whole = () => client.chat.completions.create({ model, messages, ...greedy });
    const streamed = async () => {
      const stream = await client.chat.completions.create({ model, messages, ...greedy, stream: true, stream_options: { include_usage: true } });
      let text = "";
      let usage: OpenAI.CompletionUsage | undefined;
      for await (const ch of stream) {
        text += ch.choices[0]?.delta.content ?? "";
        if (ch.usage) usage = ch.usage;
      }
      return { text, usage: usage! };
    };
    const sse = async () => {
      const res = await fetch(`${mesh.edge}/v2/models/${model}/generate_stream`, {
        method: "POST",
        headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
        body: JSON.stringify({ text_input: "The old house", parameters: { max_tokens: 10, temperature: 0.9, seed: 7 } }),
      });
      expect(res.status).toBe(200);
      const events = (await within(readSse(res), 60_000, "sse")).map((e) => e.ev);
      const done = events.at(-1)!;
      expect(done.type).toBe("done");
      return { version: done.model_version as string, text: events.filter((e) => e.type === "token").map((e) => e.text_output as string).join(""), promptTokens: done.prompt_tokens as number, tokens: done.tokens as number };
    };
    // Without a rule (latest, v2, serves; the same graph as v1): the texts a caller gets.
    const before = { whole: (await whole()).choices[0]!.message.content, streamed: (await streamed()).text, sse: (await sse()).text };

    // The edge that takes the rule evicts its cached model at once (this mesh has one edge).
    const put = await api(`/v1/models/${model}/traffic`, { method: "PUT", json: { split: [{ version: 1, weight: 100 }], shadow: [{ version: 2, percent: 100 }] } });
    expect(put.status, JSON.stringify(put.body)).toBe(200);
    const t1 = Date.now();
    const served = { whole: await whole(), streamed: await streamed(), sse: await sse() };
    // The caller's answers are what they were without a shadow.
    expect(served.whole.model).toBe(`${model}:1`);
    expect(served.whole.choices[0]!.message.content).toBe(before.whole);
    expect(served.streamed.text).toBe(before.streamed);
    expect(served.sse.text).toBe(before.sse);
    expect(served.sse.version).toBe("1");
    // Each of the three ran again on v2, after it, with the same prompt and settings: the same
    // tokens, and (greedy, or seeded) the same text: no mismatch. Shadows are not the caller's calls.
    const promptTokens = served.whole.usage!.prompt_tokens + served.streamed.usage.prompt_tokens + served.sse.promptTokens;
    const completionTokens = served.whole.usage!.completion_tokens + served.streamed.usage.completion_tokens + served.sse.tokens;
    type Row = { version: number; calls: number; shadow: { calls: number; errors: number; mismatches: number; promptTokens: number; completionTokens: number } };
    const rows = await waitUntil(
      "shadow rows",
      90_000,
      async () => {
        const u = await api(`/v1/usage?model=${model}&from=${t1}`);
        const r = (u.body.models ?? []) as Row[];
        return (r.find((x) => x.version === 2)?.shadow.calls ?? 0) >= 3 ? r : undefined;
      },
      250,
    );
    const v2 = rows.find((r) => r.version === 2)!;
    expect(v2.shadow).toEqual({ calls: 3, errors: 0, computeMs: expect.any(Number), mismatches: 0, promptTokens, completionTokens });
    expect(v2.calls).toBe(0);
    expect(rows.find((r) => r.version === 1)!.calls).toBe(3);

    // A shadow version that cannot generate (a tensor model): the copy fails, the caller never knows.
    const mlp = mesh.models.find((m) => m.name === "demo-mlp")!;
    const v3 = await api(`/v1/models/${model}/versions`, { body: await readFile(mlp.file), headers: { "content-type": "application/octet-stream" } });
    expect(v3.status, JSON.stringify(v3.body)).toBe(201);
    const put3 = await api(`/v1/models/${model}/traffic`, { method: "PUT", json: { split: [{ version: 1, weight: 100 }], shadow: [{ version: v3.body.version, percent: 100 }] } });
    expect(put3.status, JSON.stringify(put3.body)).toBe(200);
    const t2 = Date.now();
    const again = await whole();
    expect(again.choices[0]!.message.content).toBe(before.whole);
    const failed = await waitUntil(
      "failed shadow row",
      30_000,
      async () => {
        const u = await api(`/v1/usage?model=${model}&from=${t2}`);
        const r = ((u.body.models ?? []) as Row[]).find((x) => x.version === v3.body.version);
        return (r?.shadow.calls ?? 0) >= 1 ? r : undefined;
      },
      250,
    );
    expect(failed.shadow).toMatchObject({ calls: 1, errors: 1, mismatches: 0, completionTokens: 0 });
  }, 180_000); // two cold versions load on the node, each shadow after its served generation

  // startMesh deploys the bundle only from this checkout's models/tiny-gpt/ (TINY_GPT_DIR feeds the cases above).
  it.skipIf(!existsSync(join(ROOT, "models", "tiny-gpt", "model.onnx")))("the tiny-gpt startMesh deploys (as npm start does): a streamed greedy chat is the non-streamed text", async () => {
    expect(mesh.models.map((m) => m.name)).toContain("tiny-gpt");
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: "user", content: "In the beginning" }];
    const whole = await client.chat.completions.create({ model: "tiny-gpt", messages, max_tokens: 16, temperature: 0 });
    const stream = await client.chat.completions.create({ model: "tiny-gpt", messages, max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = "";
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const ch of stream) {
      text += ch.choices[0]?.delta.content ?? "";
      if (ch.usage) usage = ch.usage;
    }
    expect(text).toBe(whole.choices[0]!.message.content);
    // The same prompt again reuses the first answer's kept KV cache on the node (conversation
    // affinity): the counts are the same, the cached share is said on top.
    expect({ ...usage, prompt_tokens_details: undefined }).toEqual({ ...whole.usage, prompt_tokens_details: undefined });
    // A follow-up turn (the answer sent back, a new question) goes to the node that kept the
    // conversation and reuses its prompt's cache.
    const followUp: OpenAI.ChatCompletionMessageParam[] = [...messages, { role: "assistant", content: whole.choices[0]!.message.content ?? "" }, { role: "user", content: "And then?" }];
    const next = await client.chat.completions.create({ model: "tiny-gpt", messages: followUp, max_tokens: 8, temperature: 0 });
    const cached = next.usage?.prompt_tokens_details?.cached_tokens ?? 0;
    expect(cached).toBeGreaterThanOrEqual(whole.usage!.prompt_tokens - 1);
    expect(cached).toBeLessThan(next.usage!.prompt_tokens);
  });
});
