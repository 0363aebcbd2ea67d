// protocol/messages.ts as zod schemas (issue 12): the refusals a hostile or broken peer meets
// (wrong types, oversized fields, bad traceparent, bad conversation keys, bad packed tensors),
// what the parse functions make of fields the protocol does not name and of nulls, and that the
// compiled schemas Node runs and the interpreted ones the Worker runs answer alike.
import { describe, expect, it } from "vitest";
import type { z } from "zod";
import { packTensor } from "../formats/binary-tensors.js";
import { createCodec } from "../protocol/codec.js";
import {
  GENERATE_LIMITS,
  MAX_GENERATE_REQUEST_BYTES,
  fastPathSchemas,
  MessageError,
  parseEdgeToRegion,
  parseNodeMessage,
  parseRegionGenerateRequest,
  parseRegionInferRequest,
  parseRegionInferResponse,
  parseRegionToEdge,
  parseRouterMessage,
  unbatch,
  wireSchemas,
  type ModelRef,
  type RegionGenerateRequest,
} from "../protocol/messages.js";

const TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const KEY = "0123456789abcdef0123456789abcdef";

const model: ModelRef = {
  key: "m@1",
  account: "acct",
  name: "m",
  version: 1,
  sha256: "a".repeat(64),
  size: 10,
  artifactUrl: "https://edge.example/a",
  signature: { inputs: [{ name: "x", datatype: "FP32", shape: [-1, 4] }], outputs: [{ name: "y", datatype: "FP32", shape: [-1, 1] }] },
};
const x = packTensor({ name: "x", datatype: "FP32", shape: [1, 4], data: new Float32Array([1, 2, 3, 4]) });
const inferRequest = { requestId: "r1", model, inputs: [x], deadline: 1_700_000_000_000 };
const infer = { t: "infer", id: "r1", key: "m@1", sha256: "f".repeat(64), inputs: [x], deadline: 1_700_000_000_000 };
const result = { t: "result", id: "r1", outputs: [x], inferMs: 1 };
const params = { maxTokens: 16, temperature: 0, topK: 0, topP: 1, repetitionPenalty: 1, stop: [] };
const generateRequest: RegionGenerateRequest = { requestId: "r1", model, prompt: "hi", params, deadline: 1_700_000_000_000 };
const heartbeat = { t: "heartbeat", inflight: 0, queued: 0, utilisation: 0, warm: [] };
const token = { t: "token", id: "r1", i: 0, text: "a", tokenId: 7 };
const edgeGenerate = { t: "generate", sid: "s1", req: new Uint8Array(8), grant: { "x-mesh-sig": "abc" }, window: 8 };

function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MessageError);
    return (err as Error).message;
  }
  throw new Error("expected a MessageError");
}

describe("wire schemas: refusals", () => {
  it("refuses a malformed traceparent wherever one is carried", () => {
    for (const bad of ["nope", "00-" + "0".repeat(32) + "-b7ad6b7169203331-01", 42, TRACEPARENT + "-extra"]) {
      expect(refusal(() => parseRouterMessage({ ...infer, traceparent: bad }))).toBe("'traceparent' must be a W3C traceparent");
      expect(refusal(() => parseNodeMessage({ ...result, traceparent: bad }))).toBe("'traceparent' must be a W3C traceparent");
      expect(refusal(() => parseRegionGenerateRequest({ ...generateRequest, traceparent: bad }))).toBe("'traceparent' must be a W3C traceparent");
    }
    expect(parseRouterMessage({ ...infer, traceparent: TRACEPARENT })).toMatchObject({ traceparent: TRACEPARENT });
  });

  it("refuses a conversation key that is not 32 lowercase hex", () => {
    for (const bad of [KEY.toUpperCase(), KEY.slice(1), KEY + "0", 7]) {
      expect(refusal(() => parseRegionGenerateRequest({ ...generateRequest, affinity: bad }))).toMatch(/^'affinity' must be/);
      expect(refusal(() => parseNodeMessage({ ...heartbeat, affinity: [{ key: bad, savedMs: 1 }] }))).toMatch(/^'(affinity\[\]\.)?key' must be/);
    }
    expect(parseRegionGenerateRequest({ ...generateRequest, affinity: KEY }).affinity).toBe(KEY);
  });

  it("refuses oversized fields", () => {
    expect(refusal(() => parseRegionInferRequest({ ...inferRequest, requestId: "r".repeat(129) }))).toBe("'requestId' must be a string");
    expect(refusal(() => parseNodeMessage({ ...token, text: "t".repeat(4097) }))).toBe("'text' must be a string");
    expect(refusal(() => parseRegionGenerateRequest({ ...generateRequest, prompt: "p".repeat(GENERATE_LIMITS.maxPromptChars + 1) }))).toBe("'prompt' must be a string");
    expect(refusal(() => parseEdgeToRegion({ ...edgeGenerate, sid: "s".repeat(129) }))).toBe("'sid' must be a string");
    expect(refusal(() => parseEdgeToRegion({ ...edgeGenerate, req: new Uint8Array(MAX_GENERATE_REQUEST_BYTES + 1) }))).toMatch(/^'req' must be msgpack bytes/);
    const grant = Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`h${i}`, "v"]));
    expect(refusal(() => parseEdgeToRegion({ ...edgeGenerate, grant }))).toBe("'grant' has too many fields");
    expect(refusal(() => parseEdgeToRegion({ ...edgeGenerate, grant: { h: "v".repeat(129) } }))).toBe("'h' must be a string");
    expect(refusal(() => parseEdgeToRegion({ ...edgeGenerate, grant: new Uint8Array(2) }))).toBe("grant must be a map");
    expect(refusal(() => parseRouterMessage({ ...infer, outputs: Array.from({ length: 1025 }, () => "y") }))).toBe("'outputs' must be an array");
    expect(refusal(() => parseNodeMessage({ ...heartbeat, warm: new Array(10_001).fill({ key: "k", memoryMb: 1, lastUsed: 1 }) }))).toBe("'warm' must be an array");
    // A list far past its bound is refused by its length, whatever its items are.
    expect(refusal(() => parseNodeMessage({ ...result, outputs: new Array(1_000_000).fill(0) }))).toBe("'outputs' must be an array");
    expect(refusal(() => parseRegionInferRequest({ ...inferRequest, inputs: [{ ...x, shape: new Array(17).fill(1) }] }))).toBe("'shape' must be an array of integers");
  });

  it("refuses wrong types and out-of-range numbers", () => {
    expect(refusal(() => parseNodeMessage({ ...token, i: -1 }))).toBe(`'i' must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
    expect(refusal(() => parseNodeMessage({ ...token, i: 1.5 }))).toMatch(/^'i' must be an integer/);
    expect(refusal(() => parseNodeMessage({ ...token, tokenId: 2n ** 63n }))).toMatch(/^'tokenId' must be an integer/);
    expect(refusal(() => parseNodeMessage({ ...token, tokenId: "7" }))).toMatch(/^'tokenId' must be an integer/);
    expect(refusal(() => parseEdgeToRegion({ t: "credit", sid: "s", n: GENERATE_LIMITS.maxWindow + 1 }))).toMatch(/^'n' must be an integer from 0 to 1024/);
    expect(refusal(() => parseRegionToEdge({ t: "progress", sid: "s", stage: "done" }))).toBe("'stage' must be queued, loading or running");
    expect(refusal(() => parseNodeMessage({ t: "done", id: "r", reason: "eos", tokens: 1, promptTokens: 1, genMs: 1 }))).toBe("'reason' must be length, stop or cancelled");
    expect(refusal(() => parseNodeMessage({ ...heartbeat, disk: { cacheBudgetBytes: -1, cacheUsedBytes: 0, cachePinnedBytes: 0, freeBytes: 0 } }))).toMatch(/^'cacheBudgetBytes'/);
    expect(refusal(() => parseNodeMessage({ ...heartbeat, gen: [] }))).toBe("gen must be a map");
    expect(refusal(() => parseRegionInferResponse({ code: "node_error", message: "m" }))).toBe("'ok' must be true or false");
  });

  it("refuses bad span ids and bad bundle files", () => {
    const ok = { ok: true, outputs: [x], node: "n", timing: { queueMs: 0, loadMs: 0, inferMs: 0, regionMs: 0 } };
    expect(refusal(() => parseRegionInferResponse({ ...ok, timing: { ...ok.timing, trace: { router: "XYZ" } } }))).toBe("'trace.router' must be a span id");
    const file = { name: "weights.bin", sha256: "b".repeat(64), size: 1, url: "u" };
    const load = { t: "load", key: "m@1", url: "u", sha256: "f".repeat(64), size: 1, signature: model.signature };
    expect(parseRouterMessage({ ...load, files: [file] })).toMatchObject({ files: [file] });
    for (const files of [[file, file], [{ ...file, name: "../x" }], [{ ...file, name: "model.onnx" }]]) {
      expect(refusal(() => parseRouterMessage({ ...load, files }))).toBe("a bundle file's 'name' must be a distinct plain file name");
    }
    expect(refusal(() => parseRouterMessage({ ...load, files: [{ ...file, sha256: "B".repeat(64) }] }))).toBe("a bundle file's 'sha256' must be 64 hex digits");
    expect(refusal(() => parseRouterMessage({ ...load, files: new Array(65).fill(file) }))).toBe("'files' must be a list of at most 64");
  });

  it("refuses a packed tensor whose bytes are not its shape's, or are not bytes", () => {
    expect(refusal(() => parseRegionInferRequest({ ...inferRequest, inputs: [{ ...x, bytes: new Uint8Array(12) }] }))).toMatch(/needs 16 bytes, it has 12/);
    expect(refusal(() => parseRegionInferRequest({ ...inferRequest, inputs: [{ ...x, bytes: [1, 2] }] }))).toBe("'bytes' must be binary");
    expect(refusal(() => parseRegionInferRequest({ ...inferRequest, inputs: [{ ...x, shape: [-1, 4] }] }))).toMatch(/shape must be non-negative integers/);
  });
});

describe("wire schemas: what a parsed message holds", () => {
  it("drops fields the protocol does not name, nested maps included", () => {
    const got = parseRegionInferRequest({ ...inferRequest, extra: 1, model: { ...model, extra: 2 }, inputs: [{ ...x, extra: 3 }] });
    expect(got).not.toHaveProperty("extra");
    expect(got.model).not.toHaveProperty("extra");
    expect(got.inputs[0]).not.toHaveProperty("extra");
  });

  it("reads a null optional field as absent: the key is not there", () => {
    const got = parseNodeMessage({ ...heartbeat, gen: null, mem: null, runs: null, disk: null, affinity: null });
    expect(Object.keys(got).sort()).toEqual(["inflight", "queued", "t", "utilisation", "warm"]);
    const req = parseRegionGenerateRequest({ ...generateRequest, chat: null, traceparent: null, affinity: null, params: { ...params, seed: null, topP: null } });
    expect(Object.keys(req).sort()).toEqual(["deadline", "model", "params", "prompt", "requestId"]);
    expect(req.params).not.toHaveProperty("seed");
    expect(req.params.topP).toBe(1);
  });
});

describe("wire schemas: compiled (Node) and interpreted (Worker) agree", () => {
  const codec = createCodec();
  const SPAN = "b7ad6b7169203331";
  const answer = { ok: true, outputs: [x], node: "n", timing: { queueMs: 0, loadMs: 0, inferMs: 1, regionMs: 2 } };
  const cases: [keyof typeof wireSchemas, (v: unknown) => unknown, unknown][] = [
    ["regionInferRequest", parseRegionInferRequest, inferRequest],
    ["regionInferRequest", parseRegionInferRequest, { ...inferRequest, inputs: [{ ...x, bytes: new Uint8Array(3) }] }],
    ["regionInferRequest", parseRegionInferRequest, { ...inferRequest, deadline: "soon" }],
    ["regionInferResponse", parseRegionInferResponse, { ok: false, code: "no_capacity", message: "full", notStarted: true }],
    // The edge's fast paths (packed outputs, token frames) against the schema's own answer.
    ["regionInferResponse", parseRegionInferResponse, answer],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, timing: { ...answer.timing, computeMs: 0.5, trace: { router: SPAN, node: SPAN } } }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, timing: { ...answer.timing, computeMs: null, trace: { router: SPAN, node: null } } }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, timing: { ...answer.timing, trace: { router: SPAN.toUpperCase() } } }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, outputs: [{ name: "y", datatype: "FP32", shape: [2], data: new Float32Array(2) }] }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, outputs: [{ ...x, shape: [2, 4] }] }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, outputs: [{ ...x, shape: [1.5, 4] }] }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, outputs: [{ ...x, datatype: "FP8" }] }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, node: 5 }],
    ["regionInferResponse", parseRegionInferResponse, { ...answer, timing: { ...answer.timing, inferMs: Infinity } }],
    ["regionToEdge", parseRegionToEdge, { t: "token", sid: "s".repeat(129), i: 0, text: "a", id: 1 }],
    ["regionToEdge", parseRegionToEdge, { t: "token", sid: "s", i: -1, text: "a", id: 1 }],
    ["regionToEdge", parseRegionToEdge, { t: "token", sid: "s", i: 0, text: "a", id: 1, extra: true }],
    ["regionInferResponse", parseRegionInferResponse, { ok: false, code: "kaboom", message: "x" }],
    ["regionGenerateRequest", parseRegionGenerateRequest, { ...generateRequest, chat: [{ role: "user", content: "hi" }], affinity: KEY, traceparent: TRACEPARENT }],
    ["regionGenerateRequest", parseRegionGenerateRequest, { ...generateRequest, params: { ...params, topP: 0 } }],
    ["regionGenerateRequest", parseRegionGenerateRequest, { ...generateRequest, prefixKeys: [KEY, KEY] }],
    ["regionGenerateRequest", parseRegionGenerateRequest, { ...generateRequest, prefixKeys: [KEY, "x"] }],
    ["nodeToRouter", parseNodeMessage, { ...heartbeat, affinity: [{ key: KEY, savedMs: -5 }], mem: null }],
    ["nodeToRouter", parseNodeMessage, token],
    ["nodeToRouter", parseNodeMessage, { ...token, text: 5 }],
    ["nodeToRouter", parseNodeMessage, { t: "nope" }],
    ["routerToNode", parseRouterMessage, { ...infer, requestId: "q", traceparent: TRACEPARENT, outputs: null }],
    ["routerToNode", parseRouterMessage, { ...infer, traceparent: "bad" }],
    ["edgeToRegion", parseEdgeToRegion, edgeGenerate],
    ["regionToEdge", parseRegionToEdge, { t: "token", sid: "s", i: 0, text: "a", id: 1 }],
    ["regionToEdge", parseRegionToEdge, { t: "done", sid: "s", reason: "stop", tokens: 1, promptTokens: 1, node: "n", timing: { queueMs: 0, loadMs: 0, ttftMs: 0, genMs: 0 } }],
  ];

  it("gives the same value, or the same first refusal, through the codec", () => {
    for (const [name, parse, message] of cases) {
      const decoded = codec.decode(codec.encode(message));
      const interpreted = wireSchemas[name].safeParse(decoded);
      let compiled: { ok: true; value: unknown } | { ok: false; message: string };
      try {
        compiled = { ok: true, value: parse(decoded) };
      } catch (err) {
        expect(err).toBeInstanceOf(MessageError);
        compiled = { ok: false, message: (err as Error).message };
      }
      if (interpreted.success) expect(compiled, name).toEqual({ ok: true, value: interpreted.data });
      else expect(compiled, name).toEqual({ ok: false, message: interpreted.error.issues[0]?.message });
    }
  });

  it("the affinity entries' saved time is never negative", () => {
    const got = parseNodeMessage({ ...heartbeat, affinity: [{ key: KEY, savedMs: -5 }] });
    expect(got).toMatchObject({ affinity: [{ key: KEY, savedMs: 0 }] });
  });
});

describe("wire schemas: fast paths = schema", () => {
  // Each typed fast path (messages.ts fastPath: what the Worker, which cannot compile, runs on
  // the hot frames) against the same schema without it, on valid values and on mutations of
  // them: one field removed, or set to a value of each wrong kind, or two such at once, nested
  // fields and batched items included. The fast path may only accept what the schema accepts,
  // and must build what it builds; what it declines goes to the schema, so refusals read alike.
  const codec = createCodec();
  const SPAN = "0123456789abcdef";
  const timing = { queueMs: 0.2, loadMs: 0, inferMs: 1.4, regionMs: 2.1, computeMs: 1.3, trace: { router: SPAN, node: SPAN } };
  const tok = (i: number) => ({ t: "token", sid: `s-${i}`, i, text: " the", id: 262 });
  const valid: Record<string, unknown[]> = {
    "packed tensor": [x, { ...x, shape: [4, 1] }],
    "infer answer": [{ ok: true, outputs: [x], node: "n", timing }, { ok: true, outputs: [], node: "n", timing: { ...timing, computeMs: undefined, trace: undefined } }],
    "token region -> edge": [tok(0), tok(41)],
    "region -> edge": [tok(0), { t: "error", sid: "s", code: "no_capacity", message: "full" }, { t: "pong" }],
    batch: [{ t: "batch", frames: [tok(0), tok(1)] }, { t: "batch", frames: Array.from({ length: 64 }, (_, i) => tok(i)) }, { t: "batch", frames: [] }],
  };
  const WRONG: unknown[] = [undefined, null, -1, 1.5, NaN, Infinity, 2 ** 53, "", "s".repeat(129), "x".repeat(4097), true, [], {}, [1], new Uint8Array(3), "token", "batch", "FP32", SPAN.toUpperCase()];

  /** Mutations of v: each field (one level into maps and arrays) removed or set to each WRONG value. */
  function mutations(v: unknown, depth = 2): unknown[] {
    if (depth === 0 || typeof v !== "object" || v === null || ArrayBuffer.isView(v)) return [];
    const out: unknown[] = [];
    if (Array.isArray(v)) {
      if (v.length === 0) return WRONG.map((w) => [w]);
      for (const i of [0, v.length - 1]) {
        for (const w of WRONG) out.push(v.map((e, j) => (j === i ? w : e)));
        for (const m of mutations(v[i], depth - 1)) out.push(v.map((e, j) => (j === i ? m : e)));
      }
      out.push(Array.from({ length: 1025 }, () => v[0]));
      return out;
    }
    const o = v as Record<string, unknown>;
    for (const k of Object.keys(o)) {
      const { [k]: _, ...without } = o;
      out.push(without);
      for (const w of WRONG) out.push({ ...o, [k]: w });
      for (const m of mutations(o[k], depth - 1)) out.push({ ...o, [k]: m });
    }
    out.push({ ...o, extra: 1 });
    return out;
  }

  const answer = (schema: z.ZodType, v: unknown) => {
    const r = schema.safeParse(v);
    return r.success ? { ok: true, value: r.data } : { ok: false, message: r.error.issues[0]?.message };
  };

  it("names every fast path the messages have", () => {
    expect(fastPathSchemas.map((f) => f.name).sort()).toEqual(Object.keys(valid).sort());
  });

  it("accepts exactly what the schema accepts and builds the same value, through the codec too", () => {
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
    let accepted = 0;
    let refused = 0;
    for (const { name, fast, plain } of fastPathSchemas) {
      for (const v of valid[name]!) {
        expect(answer(fast, v), `${name}: valid`).toEqual(answer(plain, v));
        expect(answer(fast, v).ok, `${name}: valid`).toBe(true);
        const once = mutations(v);
        // Two mutations at once: a field wrong inside a value whose other field is wrong too.
        const twice = Array.from({ length: 200 }, () => mutations(once[rand(once.length)])).flatMap((ms) => (ms.length ? [ms[rand(ms.length)]] : []));
        for (const m of [...once, ...twice]) {
          for (const input of [m, decodable(m) ? codec.decode(codec.encode(m)) : m]) {
            const want = answer(plain, input);
            expect(answer(fast, input), `${name}: ${JSON.stringify(input)?.slice(0, 200)}`).toEqual(want);
            if (want.ok) accepted++;
            else refused++;
          }
        }
      }
    }
    // The mutations reach both sides of every check.
    expect(accepted).toBeGreaterThan(50);
    expect(refused).toBeGreaterThan(1000);
  });

  it("a batch of token frames, as the edge reads it (interpreted), gives what the schemas without fast paths give", () => {
    const plainOf = (name: string) => fastPathSchemas.find((f) => f.name === name)!.plain;
    const batch = codec.decode(codec.encode(valid.batch![1]));
    const viaFast = unbatch(batch, (v) => wireSchemas.regionToEdge.parse(v), true);
    const plainBatch = plainOf("batch").parse(batch) as { frames: unknown[] };
    expect(viaFast).toEqual(plainBatch.frames.map((f) => plainOf("token region -> edge").parse(f)));
    expect(viaFast).toEqual(unbatch(batch, parseRegionToEdge));
  });
});

/** msgpack carries no undefined or NaN distinctly enough to compare: those stay un-encoded. */
function decodable(v: unknown): boolean {
  if (v === undefined || (typeof v === "number" && !Number.isFinite(v))) return false;
  if (Array.isArray(v)) return v.every(decodable);
  if (typeof v === "object" && v !== null && !ArrayBuffer.isView(v)) return Object.values(v).every(decodable);
  return true;
}
