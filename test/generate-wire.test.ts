// protocol/messages.ts, the generation wire (issue 13): sampling parameters topP and
// repetitionPenalty (defaults for older senders, ranges), a chat in place of a prompt on the
// region request and the node's generate frame, and a generate frame without a tokenizer (the
// bundle's own).
import { describe, expect, it } from "vitest";
import { createCodec } from "../protocol/codec.js";
import {
  GENERATE_LIMITS,
  MAX_GENERATE_REQUEST_BYTES,
  MessageError,
  parseChat,
  parseGenerateParams,
  parseRegionGenerateRequest,
  parseRouterMessage,
  type ModelRef,
  type RegionGenerateRequest,
  type RouterToNode,
} from "../protocol/messages.js";

const model: ModelRef = {
  key: "m-1@1",
  account: "acct-1",
  name: "tiny-gpt",
  version: 1,
  sha256: "a".repeat(64),
  size: 1000,
  artifactUrl: "https://edge.example/internal/artifacts/aaaa?exp=1&sig=bb",
  signature: { inputs: [], outputs: [] },
  files: [{ name: "tokenizer.json", sha256: "b".repeat(64), size: 10, url: "https://edge.example/t" }],
};

const params = { maxTokens: 8, temperature: 0.7, topK: 40, topP: 0.9, repetitionPenalty: 1.1, seed: 3, stop: ["\n"] };

describe("parseGenerateParams", () => {
  it("keeps topP and repetitionPenalty", () => {
    expect(parseGenerateParams(params)).toEqual(params);
  });

  it("reads an older sender's params without them as off (1 and 1)", () => {
    const { topP: _p, repetitionPenalty: _r, ...old } = params;
    expect(parseGenerateParams(old)).toEqual({ ...old, topP: 1, repetitionPenalty: 1 });
    expect(parseGenerateParams({ ...old, topP: null, repetitionPenalty: null })).toMatchObject({ topP: 1, repetitionPenalty: 1 });
  });

  it("refuses out-of-range or non-number values", () => {
    for (const topP of [0, -0.1, 1.01, Number.NaN, "0.9", Infinity]) {
      expect(() => parseGenerateParams({ ...params, topP }), String(topP)).toThrow(MessageError);
    }
    for (const repetitionPenalty of [0, -1, GENERATE_LIMITS.maxRepetitionPenalty + 0.5, "1", Number.NaN]) {
      expect(() => parseGenerateParams({ ...params, repetitionPenalty }), String(repetitionPenalty)).toThrow(MessageError);
    }
    expect(parseGenerateParams({ ...params, topP: 1e-9, repetitionPenalty: 0.5 })).toMatchObject({ topP: 1e-9, repetitionPenalty: 0.5 });
  });
});

describe("parseChat", () => {
  const chat = [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hello" },
  ];

  it("keeps role and content and drops other fields", () => {
    expect(parseChat(chat.map((m) => ({ ...m, name: "x" })))).toEqual(chat);
  });

  it("refuses empty, too long, or malformed chats", () => {
    expect(() => parseChat([])).toThrow(MessageError);
    expect(() => parseChat("hi")).toThrow(MessageError);
    expect(() => parseChat(Array.from({ length: GENERATE_LIMITS.maxChatMessages + 1 }, () => chat[1]))).toThrow(MessageError);
    expect(() => parseChat([{ role: "", content: "x" }])).toThrow(MessageError);
    expect(() => parseChat([{ role: "r".repeat(GENERATE_LIMITS.maxRoleChars + 1), content: "x" }])).toThrow(MessageError);
    expect(() => parseChat([{ role: "user", content: 3 }])).toThrow(MessageError);
    expect(() => parseChat([{ role: "user" }])).toThrow(MessageError);
    expect(() => parseChat(["user: hi"])).toThrow(MessageError);
  });

  it("bounds the contents together by maxPromptChars", () => {
    const half = "x".repeat(GENERATE_LIMITS.maxPromptChars / 2);
    expect(parseChat([{ role: "user", content: half }, { role: "assistant", content: half }])).toHaveLength(2);
    expect(() => parseChat([{ role: "user", content: half }, { role: "assistant", content: half + "x" }])).toThrow(/at most/);
  });

  it("accepts the longest chat within MAX_GENERATE_REQUEST_BYTES", () => {
    const L = GENERATE_LIMITS;
    const each = Math.floor(L.maxPromptChars / L.maxChatMessages);
    const req: RegionGenerateRequest = {
      requestId: "r",
      model,
      prompt: "",
      chat: Array.from({ length: L.maxChatMessages }, () => ({ role: "\u{1F600}".repeat(L.maxRoleChars / 2), content: "\u{1F600}".repeat(each / 2) })),
      params,
      deadline: 1,
    };
    expect(createCodec().encode(req).length).toBeLessThan(MAX_GENERATE_REQUEST_BYTES);
  });
});

describe("a chat on the region request and the node's generate frame", () => {
  const codec = createCodec();

  it("a RegionGenerateRequest with a chat round-trips; without one, chat stays absent", () => {
    const req: RegionGenerateRequest = { requestId: "r1", model, prompt: "", chat: [{ role: "user", content: "Hi" }], params, deadline: 5 };
    expect(parseRegionGenerateRequest(codec.decode(codec.encode(req)))).toEqual(req);
    const plain: RegionGenerateRequest = { requestId: "r2", model, prompt: "Once", params, deadline: 5 };
    const back = parseRegionGenerateRequest(codec.decode(codec.encode(plain)));
    expect(back).toEqual(plain);
    expect("chat" in back).toBe(false);
    expect(() => parseRegionGenerateRequest({ ...plain, chat: [{ role: "user" }] })).toThrow(MessageError);
  });

  it("a generate frame may leave out the tokenizer and carry a chat", () => {
    const frame: RouterToNode = { t: "generate", id: "1", key: "m-1@1", sha256: "a".repeat(64), prompt: "", chat: [{ role: "user", content: "Hi" }], params, credit: 4 };
    const back = parseRouterMessage(codec.decode(codec.encode(frame)));
    expect(back).toEqual(frame);
    expect("tokenizer" in back).toBe(false);
    const withTok: RouterToNode = { ...frame, tokenizer: { sha256: "c".repeat(64), size: 3, url: "https://x/t" } };
    expect(parseRouterMessage(codec.decode(codec.encode(withTok)))).toEqual(withTok);
    expect(() => parseRouterMessage({ ...frame, tokenizer: { sha256: "nothex", size: 3, url: "u" } })).toThrow(MessageError);
    expect(() => parseRouterMessage({ ...frame, chat: "Hi" })).toThrow(MessageError);
  });
});
