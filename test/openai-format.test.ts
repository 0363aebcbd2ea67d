// edge/openai-format.ts: OpenAI request bodies read into the mesh's generation (defaults,
// ranges, refused fields naming their parameter), the mesh's stream events written as OpenAI's
// SSE chunks, and the mesh's errors in OpenAI's shape. Pure functions, no mesh.
import { describe, expect, it } from "vitest";
import { MeshError } from "../protocol/errors.js";
import { GENERATE_LIMITS } from "../protocol/messages.js";
import {
  OPENAI_DEFAULT_MAX_TOKENS,
  openAIErrorBody,
  OpenAIParamError,
  parseChatRequest,
  parseCompletionRequest,
  parseModelField,
  plainChatPrompt,
  sseChunkWriter,
} from "../edge/openai-format.js";
import { sseEvent, type StreamEvent } from "../edge/stream-protocol.js";

const chat = (extra: Record<string, unknown> = {}) => ({ model: "m", messages: [{ role: "user", content: "hi" }], ...extra });
const paramOf = (f: () => unknown): string | null | undefined => {
  try {
    f();
  } catch (err) {
    if (err instanceof OpenAIParamError) return err.param;
    throw err;
  }
  return undefined;
};

describe("parseModelField", () => {
  it("reads <model> and <model>:<version or alias>", () => {
    expect(parseModelField("tiny-gpt")).toEqual({ name: "tiny-gpt", ref: undefined });
    expect(parseModelField("tiny-gpt:3")).toEqual({ name: "tiny-gpt", ref: "3" });
    expect(parseModelField("tiny-gpt:prod")).toEqual({ name: "tiny-gpt", ref: "prod" });
    for (const bad of ["", ":3", "m:", 7, null]) expect(paramOf(() => parseModelField(bad)), String(bad)).toBe("model");
  });
});

describe("parseChatRequest", () => {
  it("resolves the defaults: one choice, 256 tokens, temperature 1, top_p and repetition penalty off", () => {
    const r = parseChatRequest(chat());
    expect(r).toMatchObject({ name: "m", ref: undefined, stream: false, includeUsage: false, messages: [{ role: "user", content: "hi" }] });
    expect(r.params).toEqual({ maxTokens: OPENAI_DEFAULT_MAX_TOKENS, temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] });
  });

  it("takes the sampling fields; max_completion_tokens wins over max_tokens; a stop string is a list of one", () => {
    const r = parseChatRequest(chat({ max_tokens: 5, max_completion_tokens: 9, temperature: 0, top_p: 0.5, top_k: 3, repetition_penalty: 1.2, seed: 4, stop: "\n", n: 1 }));
    expect(r.params).toEqual({ maxTokens: 9, temperature: 0, topK: 3, topP: 0.5, repetitionPenalty: 1.2, seed: 4, stop: ["\n"] });
    expect(parseChatRequest(chat({ stream: true, stream_options: { include_usage: true } }))).toMatchObject({ stream: true, includeUsage: true });
  });

  it("joins text content parts; an assistant message with null content is empty", () => {
    const r = parseChatRequest(chat({ messages: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "text", text: "b" }] }, { role: "assistant", content: null }] }));
    expect(r.messages).toEqual([{ role: "user", content: "ab" }, { role: "assistant", content: "" }]);
  });

  it("refuses what it cannot honour, naming the parameter", () => {
    expect(paramOf(() => parseChatRequest(chat({ n: 2 })))).toBe("n");
    expect(paramOf(() => parseChatRequest(chat({ tools: [{ type: "function" }] })))).toBe("tools");
    expect(paramOf(() => parseChatRequest(chat({ logprobs: true })))).toBe("logprobs");
    expect(paramOf(() => parseChatRequest(chat({ presence_penalty: 0.5 })))).toBe("presence_penalty");
    expect(paramOf(() => parseChatRequest(chat({ response_format: { type: "json_object" } })))).toBe("response_format");
    expect(paramOf(() => parseChatRequest(chat({ temperature: 9 })))).toBe("temperature");
    expect(paramOf(() => parseChatRequest(chat({ top_p: 0 })))).toBe("top_p");
    expect(paramOf(() => parseChatRequest(chat({ max_tokens: 0 })))).toBe("max_tokens");
    expect(paramOf(() => parseChatRequest(chat({ seed: -1 })))).toBe("seed");
    expect(paramOf(() => parseChatRequest(chat({ stop: Array(GENERATE_LIMITS.maxStop + 1).fill("x") })))).toBe("stop");
    expect(paramOf(() => parseChatRequest(chat({ messages: [] })))).toBe("messages");
    expect(paramOf(() => parseChatRequest(chat({ messages: [{ role: "user", content: [{ type: "image_url", image_url: {} }] }] })))).toBe("messages[0].content");
    expect(paramOf(() => parseChatRequest(chat({ messages: [{ content: "x" }] })))).toBe("messages[0].role");
    const half = "x".repeat(GENERATE_LIMITS.maxPromptChars / 2 + 1);
    expect(paramOf(() => parseChatRequest(chat({ messages: [{ role: "user", content: half }, { role: "user", content: half }] })))).toBe("messages");
  });

  it("ignores unknown fields and neutral values of unsupported ones", () => {
    expect(() => parseChatRequest(chat({ user: "u", metadata: {}, store: false, frequency_penalty: 0, tools: [], tool_choice: "none", logprobs: false, response_format: { type: "text" }, something_new: 1 }))).not.toThrow();
  });

  it("takes null for any optional field (clients send null for unset), as its default", () => {
    const nulls = { max_tokens: null, max_completion_tokens: null, temperature: null, top_p: null, top_k: null, repetition_penalty: null, n: null, stop: null, seed: null, stream: null, stream_options: null, tools: null, logprobs: null, audio: null };
    expect(parseChatRequest(chat(nulls))).toEqual(parseChatRequest(chat()));
    expect(parseChatRequest(chat({ stream_options: { include_usage: null } })).includeUsage).toBe(false);
  });

  it("refuses a message's tool call, and tools or functions that are not a list", () => {
    expect(paramOf(() => parseChatRequest(chat({ messages: [{ role: "assistant", content: null, tool_calls: [{ id: "c" }] }] })))).toBe("messages[0].tool_calls");
    expect(paramOf(() => parseChatRequest(chat({ tools: "f" })))).toBe("tools");
    expect(paramOf(() => parseChatRequest(chat({ functions: {} })))).toBe("functions");
    expect(paramOf(() => parseChatRequest(chat({ stream_options: { include_usage: "yes" } })))).toBe("stream_options.include_usage");
    expect(paramOf(() => parseChatRequest([chat()]))).toBe(null);
  });
});

describe("parseCompletionRequest", () => {
  it("takes one prompt (a list of one is that one), refuses lists, token ids, suffix and echo", () => {
    expect(parseCompletionRequest({ model: "m", prompt: "The" }).prompt).toBe("The");
    expect(parseCompletionRequest({ model: "m", prompt: ["The"] }).prompt).toBe("The");
    expect(paramOf(() => parseCompletionRequest({ model: "m", prompt: ["a", "b"] }))).toBe("prompt");
    expect(paramOf(() => parseCompletionRequest({ model: "m", prompt: [1, 2] }))).toBe("prompt");
    expect(paramOf(() => parseCompletionRequest({ model: "m", prompt: "" }))).toBe("prompt");
    expect(paramOf(() => parseCompletionRequest({ model: "m", prompt: "a", suffix: "z" }))).toBe("suffix");
    expect(paramOf(() => parseCompletionRequest({ model: "m", prompt: "a", echo: true }))).toBe("echo");
    expect(paramOf(() => parseCompletionRequest({ model: "m", prompt: "a", best_of: 2 }))).toBe("best_of");
  });
});

describe("plainChatPrompt", () => {
  it("writes role: content lines and leaves the assistant to answer", () => {
    expect(plainChatPrompt([{ role: "system", content: "Be brief." }, { role: "user", content: "Hi" }])).toBe("system: Be brief.\nuser: Hi\nassistant:");
  });
});

const head = { id: "chatcmpl-r1", created: 100, model: "m:2" };
const done = (reason: "length" | "stop" | "cancelled"): StreamEvent => ({
  type: "done",
  id: "r1",
  model_name: "m",
  model_version: "2",
  finish_reason: reason,
  prompt_tokens: 4,
  tokens: 2,
  region: null,
  node: null,
  timing: { queue_ms: 0, load_ms: 0, ttft_ms: 0, gen_ms: 0, total_ms: 0 },
});
const tok = (i: number, text: string): StreamEvent => ({ type: "token", id: "r1", index: i, text_output: text, token_id: i });
const frames = (s: string) => s.split("\n\n").filter(Boolean);

describe("sseChunkWriter", () => {
  it("chat: the role first, a chunk per token, the finish, the usage chunk when asked, then [DONE]", () => {
    const w = sseChunkWriter("chat", head, true, "r1");
    const out = [tok(0, "Hel"), tok(1, "lo"), done("length")].map(w).join("");
    const f = frames(out);
    expect(f.at(-1)).toBe("data: [DONE]");
    const chunks = f.slice(0, -1).map((x) => JSON.parse(x.slice(6)));
    expect(chunks.map((c) => c.choices[0]?.delta ?? null)).toEqual([{ role: "assistant", content: "" }, { content: "Hel" }, { content: "lo" }, {}, null]);
    expect(chunks[3].choices[0].finish_reason).toBe("length");
    expect(chunks.slice(0, 4).every((c) => c.usage === null && c.object === "chat.completion.chunk" && c.model === "m:2" && c.id === "chatcmpl-r1")).toBe(true);
    expect(chunks[4]).toMatchObject({ choices: [], usage: { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 } });
  });

  it("completion: text chunks without usage fields unless asked; progress is an SSE comment; an error is an error event", () => {
    const w = sseChunkWriter("completion", head, false, "r1");
    expect(w({ type: "progress", id: "r1", stage: "loading", percent: 40 })).toBe(": loading 40%\n\n");
    const f = frames([tok(0, "a"), done("cancelled")].map(w).join(""));
    const chunks = f.slice(0, -1).map((x) => JSON.parse(x.slice(6)));
    expect(chunks.map((c) => [c.object, c.choices[0].text, c.choices[0].finish_reason, "usage" in c])).toEqual([
      ["text_completion", "a", null, false],
      ["text_completion", "", "stop", false],
    ]);
    const err = JSON.parse(w({ type: "error", id: "r1", error: "node failed", code: "node_error", requestId: "r1" }).slice(6));
    expect(err).toEqual({ error: { message: "node failed", type: "server_error", param: null, code: "node_error", request_id: "r1" } });
  });

  it("a token's chunk is exactly the JSON of the chunk object, whatever the text and the names hold", () => {
    const texts = ['say "hi"\n', "\\", "\u0000token\u0000", "é漢😀", "\ud800", "</script>", ""];
    const odd = { id: 'chatcmpl-"\u0000token\u0000', created: 7, model: 'm"\\:1' };
    for (const [kind, h, usage] of [["chat", head, true], ["completion", head, false], ["chat", odd, false], ["completion", odd, true]] as const) {
      const w = sseChunkWriter(kind, h, usage, "r1");
      if (kind === "chat") w(tok(0, "x"));
      for (const text of texts) {
        const choice = kind === "chat" ? { index: 0, delta: { content: text }, finish_reason: null, logprobs: null } : { index: 0, text, finish_reason: null, logprobs: null };
        const object = kind === "chat" ? "chat.completion.chunk" : "text_completion";
        const expected = `data: ${JSON.stringify({ id: h.id, object, created: h.created, model: h.model, choices: [choice], ...(usage ? { usage: null } : {}) })}\n\n`;
        expect(w(tok(1, text))).toBe(expected);
      }
    }
  });
});

describe("sseEvent", () => {
  it("writes a token event as the JSON of the event, whatever its text holds", () => {
    for (const text of ['say "hi"\n', "\\", "é漢😀", "\ud800", "", "\u2028"]) {
      for (const id of ["r1", 'a"b', "\u0000"]) {
        const ev: StreamEvent = { type: "token", id, index: 41, text_output: text, token_id: 1234 };
        expect(sseEvent(ev)).toBe(`event: token\ndata: ${JSON.stringify(ev)}\n\n`);
      }
    }
  });
});

describe("openAIErrorBody", () => {
  it("maps the mesh's codes to OpenAI's types and codes", () => {
    const body = (e: MeshError) => openAIErrorBody(e, "req_1").error;
    expect(body(new MeshError("unauthorized", "no"))).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key", param: null });
    expect(body(new MeshError("model_not_found", "no"))).toMatchObject({ type: "invalid_request_error", code: "model_not_found", param: "model" });
    expect(body(new MeshError("version_not_found", "no"))).toMatchObject({ code: "model_not_found", param: "model" });
    expect(body(new MeshError("rate_limited", "slow"))).toMatchObject({ type: "requests", code: "rate_limit_exceeded" });
    expect(body(new MeshError("quota_exceeded", "spent"))).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota" });
    expect(body(new OpenAIParamError("n", "only 1"))).toEqual({ message: "only 1", type: "invalid_request_error", param: "n", code: "bad_request", request_id: "req_1" });
    expect(body(new MeshError("no_capacity", "busy"))).toMatchObject({ type: "server_error", code: "no_capacity" });
  });
});
