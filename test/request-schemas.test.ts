// The infer, generate and OpenAI requests' schemas (what /openapi.json documents) against the
// checks the routes run: every body the schema refuses is refused by the route's check, in a
// table of known cases and in seeded random mutations of a valid body; a body the schema takes
// gets past the schema (the infer route then checks it against the model's signature). The
// OpenAI routes' refusals name the field at fault (OpenAI's `param`). The path and query
// schemas the routes declare, read from the app's own route registry, refuse and take what the
// route's rules say (the routes refusing them end to end: edge-e2e.test.ts). Pure logic.

import { beforeAll, describe, expect, it } from "vitest";
import { checkInferRequest, InferRequestSchema, plainInferRequest } from "../edge/infer-request.js";
import { ChatRequestSchema, CompletionRequestSchema, OpenAIParamError, parseChatRequest, parseCompletionRequest } from "../edge/openai-format.js";
import { GenerateRequestSchema, parseGenerateInput } from "../edge/stream-protocol.js";
import { MeshError } from "../protocol/errors.js";
import { mulberry32 } from "../protocol/prng.js";
import { TensorError } from "../formats/tensor.js";

const SIGNATURE = {
  inputs: [{ name: "x", datatype: "FP32" as const, shape: [-1, 4] }],
  outputs: [{ name: "y", datatype: "FP32" as const, shape: [-1, 2] }],
};
const VALID_INFER = { id: "a1", inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }], outputs: [{ name: "y" }], parameters: { binary_data_output: false } };
// As OpenAI's clients send them: nulls for unset fields, neutral values of refused ones, fields the mesh does not know.
const VALID_CHAT = {
  model: "m:prod",
  messages: [
    { role: "system", content: "Be brief." },
    { role: "user", content: [{ type: "text", text: "hi" }] },
    { role: "assistant", content: null },
  ],
  max_tokens: 5,
  temperature: 0.5,
  top_p: 0.9,
  stop: ["\n"],
  seed: 7,
  n: 1,
  stream: true,
  stream_options: { include_usage: true },
  logprobs: false,
  tools: [],
  tool_choice: "none",
  user: "u",
  metadata: {},
};
const VALID_COMPLETION = { model: "m", prompt: ["The river"], max_completion_tokens: 5, top_k: 3, repetition_penalty: 1.1, echo: false, suffix: "", best_of: 1, stop: null, user: "u" };
const VALID_GENERATE = { id: "g1", text_input: "The river", parameters: { max_tokens: 5, temperature: 0.5, top_k: 3, top_p: 0.9, repetition_penalty: 1.1, seed: 7, stop: ["\n"] } };

/** Junk values a mutation puts in place of a field (each wrong somewhere in both schemas). */
const JUNK: unknown[] = [null, -1, 1.5, 2 ** 40, "", "x", "has space", true, [], [1, "a"], {}, { a: 1 }, "x".repeat(40_000)];

function clone<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

/** Every path to a field or element of a JSON value. */
function paths(v: unknown, at: (string | number)[] = []): (string | number)[][] {
  const out: (string | number)[][] = at.length ? [at] : [];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...at, i])));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...at, k]));
  return out;
}

function mutate(base: unknown, rand: () => number): unknown {
  const body = clone(base) as Record<string, unknown>;
  const all = paths(body);
  const p = all[Math.floor(rand() * all.length)]!;
  let parent: any = body;
  for (const k of p.slice(0, -1)) parent = parent[k];
  const last = p[p.length - 1]!;
  const r = rand();
  if (r < 0.15 && !Array.isArray(parent)) delete parent[last];
  else if (r < 0.25 && !Array.isArray(parent)) parent[`extra${Math.floor(rand() * 3)}`] = JUNK[Math.floor(rand() * JUNK.length)];
  else parent[last] = clone(JUNK[Math.floor(rand() * JUNK.length)]);
  return body;
}

function inferRefuses(body: unknown): boolean {
  try {
    checkInferRequest(body, SIGNATURE);
    return false;
  } catch (err) {
    if (err instanceof TensorError) return true;
    throw err;
  }
}

function generateRefuses(body: unknown): boolean {
  try {
    parseGenerateInput(body);
    return false;
  } catch (err) {
    if (err instanceof MeshError && err.code === "bad_request") return true;
    throw err;
  }
}

describe("InferRequestSchema is what the infer route checks", () => {
  it("takes the documented example and the route's check does too", () => {
    expect(InferRequestSchema.safeParse(VALID_INFER).success).toBe(true);
    expect(checkInferRequest(VALID_INFER, SIGNATURE).inputs[0]!.data).toEqual(new Float32Array([1, 2, 3, 4]));
  });

  it("every body it refuses in the table is refused, with the field named", () => {
    const refused: [unknown, RegExp][] = [
      [[1, 2, 3], /body/],
      [{}, /inputs/],
      [{ inputs: [] }, /at least one input/],
      [{ id: 5, inputs: VALID_INFER.inputs }, /id/],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: 5 }] }, /data/],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [1, -4], data: [1, 2, 3, 4] }] }, /shape/],
      [{ inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], parameters: { binary_data_size: "4" } }] }, /binary_data_size/],
      [{ ...VALID_INFER, outputs: [{ name: "y", parameters: { binary_data: "yes" } }] }, /binary_data/],
      [{ ...VALID_INFER, parameters: { binary_data_output: 1 } }, /binary_data_output/],
    ];
    for (const [body, message] of refused) {
      expect(InferRequestSchema.safeParse(body).success, JSON.stringify(body)).toBe(false);
      expect(() => checkInferRequest(body, SIGNATURE), JSON.stringify(body)).toThrow(message);
    }
  });

  it("seeded mutations: whatever the schema refuses, the check refuses", () => {
    const rand = mulberry32(12);
    let refusedBySchema = 0;
    for (let i = 0; i < 800; i++) {
      const body = mutate(VALID_INFER, rand);
      if (!InferRequestSchema.safeParse(body).success) {
        refusedBySchema++;
        expect(inferRefuses(body), JSON.stringify(body).slice(0, 300)).toBe(true);
      }
    }
    expect(refusedBySchema).toBeGreaterThan(200);
  });

  it("the hand check in front of it takes only what it takes, and the usual bodies", () => {
    const binary = { inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], parameters: { binary_data_size: 16 } }], outputs: [{ name: "y", parameters: { binary_data: true } }], parameters: { binary_data_output: true, extra: [1] } };
    for (const body of [VALID_INFER, binary, { inputs: [{ name: "x", datatype: "FP32", shape: [], data: [] }] }]) {
      expect(plainInferRequest(body), JSON.stringify(body)).toBe(true);
      expect(InferRequestSchema.safeParse(body).success).toBe(true);
    }
    const rand = mulberry32(34);
    let taken = 0;
    for (let i = 0; i < 2000; i++) {
      const body = mutate(i % 2 ? VALID_INFER : binary, rand);
      if (plainInferRequest(body)) {
        taken++;
        expect(InferRequestSchema.safeParse(body).success, JSON.stringify(body).slice(0, 300)).toBe(true);
      }
    }
    expect(taken).toBeGreaterThan(200);
  });
});

describe("GenerateRequestSchema is what parseGenerateInput checks", () => {
  it("takes the documented example; refuses exactly what the check refuses", () => {
    expect(GenerateRequestSchema.safeParse(VALID_GENERATE).success).toBe(true);
    expect(parseGenerateInput(VALID_GENERATE).params).toMatchObject({ maxTokens: 5, topK: 3, seed: 7, stop: ["\n"] });
    const rand = mulberry32(34);
    let refusedBySchema = 0;
    for (let i = 0; i < 800; i++) {
      const body = mutate(VALID_GENERATE, rand);
      const schemaRefuses = !GenerateRequestSchema.safeParse(body).success;
      refusedBySchema += schemaRefuses ? 1 : 0;
      // One check: the route refuses a body exactly when the schema does.
      expect(generateRefuses(body), JSON.stringify(body).slice(0, 300)).toBe(schemaRefuses);
    }
    expect(refusedBySchema).toBeGreaterThan(200);
  });
});

describe("ChatRequestSchema and CompletionRequestSchema are what the OpenAI routes' parsers check", () => {
  /** The parser's refusal: the param it names, or undefined when it takes the body. */
  const refusal = (parse: (b: unknown) => unknown, body: unknown): { param: string | null } | undefined => {
    try {
      parse(body);
      return undefined;
    } catch (err) {
      if (err instanceof OpenAIParamError && err.code === "bad_request") return { param: err.param };
      throw err;
    }
  };

  it("take the valid bodies; seeded mutations: the parser refuses exactly what the schema refuses, naming the field the schema's first problem is in", () => {
    expect(parseChatRequest(VALID_CHAT)).toMatchObject({ name: "m", ref: "prod", stream: true, includeUsage: true, messages: [{ content: "Be brief." }, { content: "hi" }, { content: "" }] });
    expect(parseCompletionRequest(VALID_COMPLETION)).toMatchObject({ prompt: "The river", params: { maxTokens: 5, topK: 3, stop: [] } });
    const cases = [
      [ChatRequestSchema, parseChatRequest, VALID_CHAT, 56],
      [CompletionRequestSchema, parseCompletionRequest, VALID_COMPLETION, 78],
    ] as const;
    for (const [schema, parse, valid, seed] of cases) {
      expect(schema.safeParse(valid).success).toBe(true);
      const rand = mulberry32(seed);
      let refusedBySchema = 0;
      for (let i = 0; i < 800; i++) {
        const body = mutate(valid, rand);
        const r = schema.safeParse(body);
        const refused = refusal(parse, body);
        const what = JSON.stringify(body).slice(0, 300);
        expect(refused !== undefined, what).toBe(!r.success);
        if (r.success) continue;
        refusedBySchema++;
        // The param is the path of the schema's first problem, down to the field a client sets.
        const path = r.error.issues[0]!.path;
        expect(refused!.param, what).toEqual(path.length === 0 ? null : expect.stringMatching(new RegExp(`^${String(path[0])}(\\[|\\.|$)`)));
      }
      expect(refusedBySchema).toBeGreaterThan(200);
    }
  });
});

describe("the path and query schemas the routes declare", () => {
  type Schema = { safeParse(v: unknown): { success: boolean } };
  type Route = { method: string; path: string; request?: { params?: { shape: Record<string, Schema> }; query?: { shape: Record<string, Schema> } } };
  let routes: Route[];

  beforeAll(async () => {
    // By path at run time: the Worker's files are type-checked against workers-types (edge/tsconfig.json).
    const edge = (await import(/* @vite-ignore */ "../edge/index.js" as string)) as { createApp(): { openAPIRegistry: { definitions: { type: string; route: Route }[] } } };
    routes = edge.createApp().openAPIRegistry.definitions.filter((d) => d.type === "route").map((d) => d.route);
  });

  const schema = (method: string, path: string, where: "params" | "query", name: string): Schema => {
    const r = routes.find((x) => x.method === method && x.path === path);
    const s = r?.request?.[where]?.shape[name];
    expect(s, `${method} ${path} ${where}.${name}`).toBeDefined();
    return s!;
  };

  it("refuse what the routes' rules refuse, and take what they take", () => {
    const cases: [Schema, unknown[], unknown[]][] = [
      [schema("delete", "/v1/models/{m}/versions/{v}", "params", "v"), ["latest", "prod", "1.5", "-1", "", "12345678901"], ["1", "12", "1234567890"]],
      [schema("put", "/v1/models/{m}/uploads/{id}/parts/{n}", "params", "n"), ["0x1", "123456", "", "1e3", " 1"], ["1", "42", "99999"]],
      [schema("put", "/v1/models/{m}/aliases/{alias}", "params", "alias"), ["1abc", "-x", "a b", "a".repeat(33), ""], ["prod", "latest", "canary-2", "a".repeat(32)]],
      [schema("delete", "/v1/models/{m}/aliases/{alias}", "params", "alias"), ["1abc"], ["prod"]],
      [schema("get", "/v2/models/{m}/stream", "query", "format"), ["xml", "JSON", ""], ["json", "msgpack", undefined]],
      [schema("get", "/v2/models/{m}/versions/{v}/stream", "query", "format"), ["xml"], ["msgpack"]],
      [schema("get", "/v2/models/{m}/stream", "query", "batch"), ["yes", "1", "TRUE", ""], ["true", "false", undefined]],
    ];
    for (const [s, refused, taken] of cases) {
      for (const v of refused) expect(s.safeParse(v).success, JSON.stringify(v)).toBe(false);
      for (const v of taken) expect(s.safeParse(v).success, JSON.stringify(v)).toBe(true);
    }
  });

  it("the data plane's model and version parameters are any string: the hot path runs no parameter validator", () => {
    for (const path of ["/v2/models/{m}/infer", "/v2/models/{m}/versions/{v}/infer", "/v2/models/{m}/generate", "/v2/models/{m}/stream"]) {
      const r = routes.find((x) => x.path === path);
      expect(r, path).toBeDefined();
      expect(r!.request?.params, path).toBeUndefined();
    }
  });
});
