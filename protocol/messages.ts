// Every message the mesh's parts exchange, each defined once: a zod schema that validates it as
// received, with its TypeScript type inferred from that schema (issue 12). msgpack has no schema,
// so a decoded frame is `unknown` until one of the parse functions here has checked its shape.
// A refusal is a MessageError whose message names the field and what it must be; those messages
// reach the wire (a router answers a malformed request with one, as bad_request) and the logs,
// so the field helpers below keep the wording the hand validators used. Unknown fields are dropped, not
// refused: an older peer must keep reading a newer one's frames. Worker-safe (zod only).

import { z } from "zod";
import { isErrorCode, type ErrorCode } from "./errors.js";
import { isOipDatatype, OIP_DATATYPES } from "../formats/datatypes.js";
import type { TensorData } from "../formats/tensor.js";
import { packedSizeError, type CarriedTensor } from "../formats/binary-tensors.js";
import { parseTraceparent } from "./trace-context.js";
import { CONVERSATION_KEY_RE, PROMPT_PREFIX_KEYS } from "./conversation-key.js";
import { wireAnnouncementSchema } from "./wire-version.js";

// ---------------------------------------------------------------- refusals and field helpers

export class MessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MessageError";
  }
}

/** The field an issue is about: the last name in its path (an array index is not a name). */
function fieldOf(iss: { path?: PropertyKey[] | undefined }): string {
  const path = iss.path ?? [];
  for (let i = path.length - 1; i >= 0; i--) if (typeof path[i] === "string") return path[i] as string;
  return "value";
}
/** One message for every issue a field's schema raises (its type and its checks alike). */
const says = (what: string) => (iss: { path?: PropertyKey[] | undefined }) => `'${fieldOf(iss)}' ${what}`;

const str = (max = 4096) => z.string({ error: says("must be a string") }).max(max);
/** Finite: zod 4's number refuses NaN and ±Infinity; a msgpack int64 (BigInt) is not a number. */
const num = () => z.number({ error: says("must be a number") });
/** A safe integer from 0 to max. */
const count = (max = Number.MAX_SAFE_INTEGER) => z.number({ error: says(`must be an integer from 0 to ${max}`) }).int().min(0).max(max);
const bool = () => z.boolean({ error: says("must be a boolean") });
/** At most `max` items; zod checks the length before it looks at an item, so a huge list costs nothing. */
const list = <T extends z.ZodType>(item: T, max: number, error: string | ReturnType<typeof says> = says("must be an array")) =>
  z.array(item, { error }).max(max);
/** The schemas opt() made: objects drop their fields that came as null. */
const OPTIONAL = new WeakSet<z.ZodType>();
/**
 * An optional field: absent or null (msgpack's nil, what an older peer may send for "none")
 * reads as absent; anything else must pass `schema`.
 */
function opt<T extends z.ZodType>(schema: T) {
  const o = schema
    .nullish()
    .transform((v): z.output<T> | undefined => (v === null ? undefined : v))
    .optional();
  OPTIONAL.add(o);
  return o;
}
/**
 * An object of `shape`. zod keeps a key that was present, so a null optional field would come out
 * as a key holding undefined: removed here, so a parsed message has only the keys it means (the
 * delete happens only when a peer sent a null, never on the usual path).
 */
function object<S extends z.core.$ZodLooseShape>(shape: S, error?: string) {
  const schema = z.object(shape, error === undefined ? undefined : { error });
  const optional = Object.keys(shape).filter((k) => OPTIONAL.has(shape[k] as z.ZodType));
  if (optional.length === 0) return schema;
  return schema.overwrite((v) => {
    const o = v as Record<string, unknown>;
    for (const k of optional) if (o[k] === undefined && k in o) delete o[k];
    return v;
  });
}
/** A nested map; `label` names it in the refusal ("accelerator must be a map"). */
const map = <S extends z.core.$ZodLooseShape>(label: string, shape: S) => object(shape, `${label} must be a map`);

/** msgpack `bin` (a Uint8Array, or a Node Buffer), of at most `max` bytes. */
const binary = (error: string, max = Infinity) => z.custom<Uint8Array>((v) => v instanceof Uint8Array && v.length <= max, { error });

/**
 * A typed fast path for a hot message or field. Node compiles every schema (COMPILE, below) and
 * needs none; the Worker cannot compile, and zod's interpreter spends its time on per-field
 * dispatch: 3 to 8 times the hand validators the schemas replaced (bench/wire-validation.ts). So
 * where the edge pays per call or per token, a hand check accepts the usual well-formed value and
 * builds it; anything else goes to the schema (z.INVALID), whose refusal is the one reported. A
 * fast path may accept only what its schema accepts and must build what the schema builds:
 * test/wire-schema.test.ts compares the two.
 */
function fastPath<S extends z.ZodType>(name: string, schema: S, parse: (v: Record<string, unknown>) => z.output<S> | typeof z.INVALID): S {
  const fast = z.withParser(schema, (v) => (isMap(v) ? parse(v) : z.INVALID));
  FAST_PATHS.push({ name, fast, plain: schema });
  return fast;
}
/** Each fast path beside its schema without it (test/wire-schema.test.ts proves the two answer alike). */
const FAST_PATHS: { name: string; fast: z.ZodType; plain: z.ZodType }[] = [];
const isStr = (v: unknown, max = 4096): v is string => typeof v === "string" && v.length <= max;
const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);
const isCount = (v: unknown, max = Number.MAX_SAFE_INTEGER): v is number => Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= max;

const HEX64 = /^[0-9a-f]{64}$/;
const SPAN_ID = /^[0-9a-f]{16}$/;

const errorCode = z.custom<ErrorCode>(isErrorCode, { error: "'code' is not a known error code" });
/** An optional W3C traceparent; a malformed one is refused rather than ignored (a peer's bug). */
const traceparent = opt(z.string({ error: "'traceparent' must be a W3C traceparent" }).refine((v) => parseTraceparent(v) !== null, { error: "'traceparent' must be a W3C traceparent" }));
const requestId = str(128);
const sha256 = str(64);

// ---------------------------------------------------------------- tensors and signatures

const datatype = z.enum(OIP_DATATYPES, { error: "'datatype' is not an OIP datatype" });
/** -1 marks a dynamic dimension in a signature; a tensor's own shape is checked against its bytes. */
const shape = list(z.number({ error: "'shape' must be an array of integers" }).int().min(-1), 16, "'shape' must be an array of integers");

/** A model input or output as the signature describes it; -1 marks a dynamic dimension. */
const tensorSpecSchema = map("tensor spec", { name: str(), datatype, shape });
export type TensorSpec = z.infer<typeof tensorSpecSchema>;

/** What a model file declares about itself, read from its graph at upload time. */
const modelSignatureSchema = map("signature", { inputs: list(tensorSpecSchema, 1024), outputs: list(tensorSpecSchema, 1024) });
export type ModelSignature = z.infer<typeof modelSignatureSchema>;

/**
 * A packed tensor (binary-tensors.ts PackedTensor): only its size is checked against its shape,
 * the bytes stay a view of the frame (the router forwards them as they came).
 */
const packedTensor = map("tensor", { name: str(), datatype, shape, bytes: binary("'bytes' must be binary") }).check((ctx) => {
  const wrong = packedSizeError(ctx.value);
  if (wrong) ctx.issues.push({ code: "custom", message: wrong, input: ctx.value });
});
function isTensorData(v: unknown): v is TensorData {
  return (ArrayBuffer.isView(v) && !(v instanceof DataView)) || (Array.isArray(v) && v.every((s) => typeof s === "string"));
}
/** Typed data: what older edges and nodes send (typed arrays, or strings for BYTES). */
const typedTensor = map("tensor", {
  name: str(),
  datatype,
  shape,
  data: z.custom<TensorData>(isTensorData, { error: "'data' must be a typed array or an array of strings" }),
});
/**
 * A tensor on a hop: packed when it has `bytes`, else typed. Tried packed first (today's
 * senders); the refusal is the one of the form the tensor claims to be.
 */
const carriedTensorSchema = z.union([packedTensor, typedTensor], {
  error: (iss) => {
    if (iss.code !== "invalid_union") return undefined;
    const packed = typeof iss.input === "object" && iss.input !== null && (iss.input as Record<string, unknown>).bytes !== undefined;
    return iss.errors[packed ? 0 : 1]?.[0]?.message;
  },
});
/** Fast path: a packed tensor, as every hop sends them now (typed data takes the schema). */
function packedFast(v: unknown): CarriedTensor | typeof z.INVALID {
  if (!isMap(v)) return z.INVALID;
  const { name, datatype, shape, bytes } = v;
  if (!isStr(name) || !isOipDatatype(datatype) || !(bytes instanceof Uint8Array)) return z.INVALID;
  if (!Array.isArray(shape) || shape.length > 16 || !shape.every((d) => Number.isSafeInteger(d))) return z.INVALID;
  const t = { name, datatype, shape: shape.slice() as number[], bytes };
  return packedSizeError(t) === null ? t : z.INVALID;
}
const carriedTensor = fastPath("packed tensor", carriedTensorSchema, packedFast);
const tensors = list(carriedTensor, 1024);
/** Requested output names. */
const names = list(z.string({ error: says("must be strings") }), 1024);

// ---------------------------------------------------------------- edge -> region (HTTP)

/** At most this many data files per bundle. */
export const MAX_BUNDLE_FILES = 64;
/** A bundle file's name: a plain file name (no '/', '\\', ':' or '..'), as the graph's `location` names it. */
export const BUNDLE_FILE_NAME_RE = /^(?!\.\.?$)[A-Za-z0-9._-]{1,128}$/;

/** One data file of a bundle: its name beside the graph, and where to fetch it (sha-checked). */
const bundleFileRefSchema = map("file", {
  // Checked here, so the node never writes outside the version's directory.
  name: str(128).refine((n) => BUNDLE_FILE_NAME_RE.test(n) && n !== "model.onnx", { error: "a bundle file's 'name' must be a distinct plain file name" }),
  sha256: sha256.regex(HEX64, { error: "a bundle file's 'sha256' must be 64 hex digits" }),
  size: count(),
  url: str(),
});
export type BundleFileRef = z.infer<typeof bundleFileRefSchema>;
const bundleFiles = list(bundleFileRefSchema, MAX_BUNDLE_FILES, `'files' must be a list of at most ${MAX_BUNDLE_FILES}`).check((ctx) => {
  const seen = new Set<string>();
  for (const f of ctx.value) {
    if (seen.has(f.name)) ctx.issues.push({ code: "custom", message: "a bundle file's 'name' must be a distinct plain file name", input: f.name });
    seen.add(f.name);
  }
});

/** A bundle file as a version records it (no URL: that is signed per region). */
export type BundleFile = Omit<BundleFileRef, "url">;

/** A version's tokenizer.json: fetched through a signed URL and sha-checked like the artifact. */
const tokenizerRefSchema = map("tokenizer", {
  sha256: sha256.regex(HEX64, { error: "'tokenizer.sha256' must be 64 hex digits" }),
  size: count(),
  url: str(),
});
export type TokenizerRef = z.infer<typeof tokenizerRefSchema>;

/** What a region needs to load a model version on a node: where its bytes are and what they hash to. */
const modelRefSchema = map("model", {
  /** Unique per (model, version) across the mesh, e.g. `<modelId>@<version>`. */
  key: str(),
  /** The account that owns the model (and so made the call): fairness and limits per tenant. */
  account: str(128),
  name: str(),
  version: num(),
  sha256,
  size: num(),
  /** Signed, time-limited URL the node downloads the artifact from. */
  artifactUrl: str(),
  signature: modelSignatureSchema,
  /** Generative models: the tokenizer.json shipped with the version. */
  tokenizer: opt(tokenizerRefSchema),
  /** A bundle's data files (ONNX external data), written next to the graph under their names. */
  files: opt(bundleFiles),
});
export type ModelRef = z.infer<typeof modelRefSchema>;

const regionInferRequestSchema = map("request", {
  requestId,
  model: modelRefSchema,
  /** Packed by the edge (binary-tensors.ts): the router forwards them to the node unread. */
  inputs: tensors,
  outputs: opt(names),
  /** Absolute deadline (ms since epoch); the region answers deadline_exceeded past it. */
  deadline: num(),
});
export type RegionInferRequest = z.infer<typeof regionInferRequestSchema>;

/** Span ids (16 hex) of the hops past the edge that handled a call (trace-context.ts). */
const spanId = str(16).regex(SPAN_ID, { error: (iss) => `'trace.${fieldOf(iss)}' must be a span id` });
const isSpanId = (v: unknown): v is string => typeof v === "string" && SPAN_ID.test(v);
const spanIdsSchema = map("trace", { router: spanId, node: opt(spanId) });
export type SpanIds = z.infer<typeof spanIdsSchema>;

const timingSchema = map("timing", {
  queueMs: num(),
  loadMs: num(),
  inferMs: num(),
  regionMs: num(),
  /** Session time the node spent on the call (its share of a batch): what usage bills. */
  computeMs: opt(num()),
  /** The spans (ids, within the caller's trace) of the router and, when it echoed one, the node. */
  trace: opt(spanIdsSchema),
});
export type Timing = z.infer<typeof timingSchema>;

/** Fast path: the answer the edge reads per call, packed outputs and no nulls. */
function answerFast(v: Record<string, unknown>) {
  const { ok, outputs, node, timing } = v;
  if (ok !== true || !isStr(node) || !Array.isArray(outputs) || outputs.length > 1024 || !isMap(timing)) return z.INVALID;
  const packed: CarriedTensor[] = [];
  for (const o of outputs) {
    const t = packedFast(o);
    if (t === z.INVALID) return z.INVALID;
    packed.push(t);
  }
  const { queueMs, loadMs, inferMs, regionMs, computeMs, trace } = timing;
  if (!isNum(queueMs) || !isNum(loadMs) || !isNum(inferMs) || !isNum(regionMs) || (computeMs !== undefined && !isNum(computeMs))) return z.INVALID;
  let spans: SpanIds | undefined;
  if (trace !== undefined) {
    if (!isMap(trace) || !isSpanId(trace.router) || (trace.node !== undefined && !isSpanId(trace.node))) return z.INVALID;
    spans = { router: trace.router, ...(trace.node !== undefined ? { node: trace.node as string } : {}) };
  }
  const t: Timing = { queueMs, loadMs, inferMs, regionMs, ...(computeMs !== undefined ? { computeMs } : {}), ...(spans ? { trace: spans } : {}) };
  return { ok: true as const, outputs: packed, node, timing: t };
}

const regionInferResponseSchema = z.discriminatedUnion(
  "ok",
  [
    fastPath("infer answer", object({ ok: z.literal(true), outputs: tensors, node: str(), timing: timingSchema }), answerFast),
    object({
      ok: z.literal(false),
      code: errorCode,
      message: str(),
      /** What a call that failed after it ran still cost on its node (a deadline's stop included), for usage. */
      computeMs: opt(num()),
      /**
       * The region refused the call before handing it to any node (draining, no node, queue
       * full), so the edge may send it to another region. Absent: it may have run. Anything but
       * true reads as absent.
       */
      notStarted: z.literal(true).optional().catch(undefined),
    }),
  ],
  { error: (iss) => (iss.code === "invalid_union" ? "'ok' must be true or false" : "response must be a map") },
);
type RegionInferAnswer = z.infer<typeof regionInferResponseSchema>;
/** T: packed as the node sent them (the router's view), or typed once the edge unpacked them. */
export type RegionInferResponse<T extends CarriedTensor = CarriedTensor> =
  | (Omit<Extract<RegionInferAnswer, { ok: true }>, "outputs"> & { outputs: T[] })
  | Extract<RegionInferAnswer, { ok: false }>;

// ---------------------------------------------------------------- generation (streams)

export const GENERATE_LIMITS = {
  maxTokens: 4_096,
  maxPromptChars: 32_768,
  maxStop: 8,
  maxStopChars: 64,
  maxTemperature: 5,
  maxTopK: 1_000_000,
  maxRepetitionPenalty: 10,
  /** Messages in one chat; their contents together are bounded by maxPromptChars. */
  maxChatMessages: 256,
  maxRoleChars: 64,
  /** Tokens a stream may have produced and not yet had taken by its reader (the credit window). */
  maxWindow: 1_024,
} as const;
const L = GENERATE_LIMITS;

/** Older senders send neither topP nor repetitionPenalty: absent (or null) means 1, "off". */
const offIsOne = (max: number, error: string) =>
  num()
    .nullish()
    .transform((v) => v ?? 1)
    .refine((v) => v > 0 && v <= max, { error });

/**
 * Sampling parameters of one generation, resolved (defaults applied) at the edge. Ranges are
 * checked too: a frame that passed here is safe to hand to the generation loop.
 */
const generateParamsSchema = map("params", {
  /** 0 = greedy. */
  temperature: num().refine((t) => t >= 0 && t <= L.maxTemperature, { error: `'temperature' must be from 0 to ${L.maxTemperature}` }),
  stop: list(
    z.string({ error: `'stop' must hold non-empty strings of at most ${L.maxStopChars} characters` }).min(1).max(L.maxStopChars),
    L.maxStop,
  ),
  /** Absent: the node draws one (the text is then not reproducible). */
  seed: opt(count(0xffffffff)),
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches this; 1 = off. */
  topP: offIsOne(1, "'topP' must be above 0 and at most 1"),
  /** Divides (positive logits) or multiplies (negative) the scores of tokens already in the context; 1 = off. */
  repetitionPenalty: offIsOne(L.maxRepetitionPenalty, `'repetitionPenalty' must be above 0 and at most ${L.maxRepetitionPenalty}`),
  maxTokens: count(L.maxTokens),
  /** 0 = all tokens. */
  topK: count(L.maxTopK),
});
export type GenerateParams = z.infer<typeof generateParamsSchema>;

/** One chat message; the node renders a list of them through the bundle's chat template. */
const chatMessageSchema = map("chat message", {
  role: str(L.maxRoleChars).min(1, { error: "a chat message's 'role' must not be empty" }),
  content: str(L.maxPromptChars),
});
export type ChatMessage = z.infer<typeof chatMessageSchema>;

/** A chat's messages: at most maxChatMessages, short roles, contents together within maxPromptChars. */
const chatSchema = z
  .array(chatMessageSchema, { error: `'chat' must be a list of 1 to ${L.maxChatMessages} messages` })
  .min(1)
  .max(L.maxChatMessages)
  .check((ctx) => {
    let chars = 0;
    for (const m of ctx.value) chars += m.content.length;
    if (chars > L.maxPromptChars) ctx.issues.push({ code: "custom", message: `a chat's contents must total at most ${L.maxPromptChars} characters`, input: chars });
  });

const conversationKey = (error: string) => str(64).regex(CONVERSATION_KEY_RE, { error });

const regionGenerateRequestSchema = map("request", {
  requestId,
  model: modelRefSchema,
  /** Empty when `chat` is given. */
  prompt: str(L.maxPromptChars),
  /** A chat for the node to render with the bundle's chat template (add_generation_prompt); replaces `prompt`. */
  chat: opt(chatSchema),
  params: generateParamsSchema,
  /** Absolute deadline (ms since epoch) for the first token: queue, load and first step. */
  deadline: num(),
  /** The edge's span (W3C traceparent), signed with the request. */
  traceparent,
  /**
   * A follow-up chat turn: the conversation key of its messages before the last user turn
   * (protocol/conversation-key.ts). The router prefers the node that kept that conversation's
   * KV cache.
   */
  affinity: opt(conversationKey("'affinity' must be a conversation key")),
  /**
   * A plain prompt: the keys of its prefixes (protocol/conversation-key.ts promptPrefixKeys),
   * longest first. The router prefers the node that kept the longest of them (a text this
   * prompt continues). A field of its own, not `affinity`: an older router drops it unread.
   */
  prefixKeys: opt(list(conversationKey("'prefixKeys' must hold conversation keys"), PROMPT_PREFIX_KEYS, `'prefixKeys' must be an array of at most ${PROMPT_PREFIX_KEYS} keys`)),
});
export type RegionGenerateRequest = z.infer<typeof regionGenerateRequestSchema>;

const finishReason = z.enum(["length", "stop", "cancelled"], { error: "'reason' must be length, stop or cancelled" });
export type FinishReason = z.infer<typeof finishReason>;
const progressStage = z.enum(["queued", "loading", "running"], { error: "'stage' must be queued, loading or running" });
export type ProgressStage = z.infer<typeof progressStage>;

const streamTimingSchema = map("timing", {
  queueMs: num(),
  loadMs: num(),
  /** From the region's arrival of the request to its first token leaving the region. */
  ttftMs: num(),
  /** The node's generation time, first step to last token. */
  genMs: num(),
  regionMs: num(),
});
export type StreamTiming = z.infer<typeof streamTimingSchema>;

/** The method a generate frame's grant is signed under (with the stream socket's path). */
export const GENERATE_GRANT_METHOD = "GENERATE";

/**
 * A generate request's bytes: a prompt (or a chat's contents) at its longest (4 bytes a
 * character), a chat's roles and framing, and its model reference with its bundle files.
 */
export const MAX_GENERATE_REQUEST_BYTES =
  GENERATE_LIMITS.maxPromptChars * 4 + GENERATE_LIMITS.maxChatMessages * (GENERATE_LIMITS.maxRoleChars * 4 + 32) + 256 * 1024;

/** `t` as a short printable string; JSON.stringify alone throws on a BigInt (a msgpack int64). */
function frameType(t: unknown): string {
  try {
    return String(JSON.stringify(t, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v))).slice(0, 40);
  } catch {
    return typeof t;
  }
}
/** The frames of one direction of a socket, told apart by `t`. */
function frames<const O extends readonly [z.ZodObject<{ t: z.ZodLiteral<string> }>, ...z.ZodObject<{ t: z.ZodLiteral<string> }>[]]>(options: O) {
  return z.discriminatedUnion("t", options, {
    error: (iss) => (iss.code === "invalid_union" ? `unknown frame type ${frameType((iss.input as { t?: unknown } | undefined)?.t)}` : "frame must be a map"),
  });
}
/** A frame type: the literal `t` beside its fields. */
const frame = <T extends string, S extends z.core.$ZodLooseShape>(t: T, shape: S) => object({ t: z.literal(t), ...shape });
const sid = str(128);

/** The grant's signature headers: a few short strings (counted before any is read). */
const grant = z
  .custom<Record<string, unknown>>((v) => isMap(v) && Object.keys(v).length <= 8, {
    error: (iss) => (isMap(iss.input) ? "'grant' has too many fields" : "grant must be a map"),
  })
  .pipe(z.record(z.string(), str(128)));

/**
 * The edge's side of a stream socket to a region (`GET /v1/streams`, signed at the upgrade):
 * msgpack binary frames, many streams per socket, each named by the edge (`sid`). `window` and
 * `credit` are end-to-end flow control: the region never sends a stream more tokens than the
 * edge has granted, and passes the grants on to the node, which pauses when it has none.
 */
const edgeToRegionSchema = frames([
  frame("generate", {
    /**
     * The RegionGenerateRequest as msgpack bytes, and its grant: the edge's signature headers
     * (signRequest with method GENERATE on the stream path) over exactly these bytes. The
     * request names account, model key, version, sha256, artifact and tokenizer URLs, request
     * id and deadline; the router decodes the bytes only once the grant checks.
     */
    req: binary(`'req' must be msgpack bytes of at most ${MAX_GENERATE_REQUEST_BYTES}`, MAX_GENERATE_REQUEST_BYTES),
    grant,
    sid,
    window: count(L.maxWindow),
  }),
  frame("credit", { sid, n: count(L.maxWindow) }),
  frame("cancel", { sid }),
  // Liveness: the edge cannot see WebSocket pings, so it asks with a frame and the region answers.
  frame("ping", {}),
]);
export type EdgeToRegion = z.infer<typeof edgeToRegionSchema>;

/** The token frame's check: the union's fast path and the frame's own. */
const tokenToEdgeFast = ({ t, sid, i, text, id }: Record<string, unknown>) =>
  t === "token" && isStr(sid, 128) && isCount(i) && isStr(text) && isCount(id) ? { t: "token" as const, sid, i, text, id } : z.INVALID;

const regionToEdgeUnion = frames([
  frame("progress", { position: opt(count()), bytes: opt(count()), total: opt(count()), sid, stage: progressStage, node: opt(str(128)) }),
  /** Fast path: one per token, read by the edge. */
  // `t` is checked here too, though the union dispatched on it: a fast path accepts only what its
  // schema accepts, wherever it is used (test/wire-schema.test.ts "fast paths = schema").
  fastPath("token region -> edge", frame("token", { sid, i: count(), text: str(), id: count() }), tokenToEdgeFast),
  /** cachedTokens: prompt tokens the node reused from a kept KV cache instead of computing them. */
  frame("done", { sid, reason: finishReason, tokens: count(), promptTokens: count(), node: str(128), timing: streamTimingSchema, cachedTokens: opt(count()) }),
  frame("error", { sid, code: errorCode, message: str() }),
  frame("pong", {}),
]);
/**
 * Fast path of the whole direction for its token frames (nearly every frame the edge reads):
 * the union's own dispatch on `t`, interpreted, cost as much as the token's check itself.
 */
const regionToEdgeSchema = fastPath("region -> edge", regionToEdgeUnion, (v) => (v.t === "token" ? tokenToEdgeFast(v) : z.INVALID));
export type RegionToEdge = z.infer<typeof regionToEdgeSchema>;

// ---------------------------------------------------------------- node <-> router (WebSocket)

const acceleratorSchema = map("accelerator", {
  kind: z.enum(["cpu", "gpu"], { error: "'accelerator.kind' must be cpu or gpu" }),
  name: str(),
  memoryMb: num(),
});
export type Accelerator = z.infer<typeof acceleratorSchema>;

const warmModelSchema = map("warm model", { key: str(), memoryMb: num(), lastUsed: num() });
export type WarmModel = z.infer<typeof warmModelSchema>;
const warm = list(warmModelSchema, 10_000);

/** Conversation keys one heartbeat (or one region report) names at most. */
export const MAX_HEARTBEAT_CONVERSATIONS = 256;

/** A kept conversation cache as nodes and regions report it. */
const conversationHeldSchema = map("affinity entry", {
  key: conversationKey("'affinity[].key' must be a conversation key"),
  /** Prefill time a follow-up saves by reusing it, ms. */
  savedMs: num().transform((ms) => Math.max(0, ms)),
});
export type ConversationHeld = z.infer<typeof conversationHeldSchema>;
const conversations = list(conversationHeldSchema, MAX_HEARTBEAT_CONVERSATIONS, `'affinity' must be an array of at most ${MAX_HEARTBEAT_CONVERSATIONS}`);

const processMemorySchema = map("mem", { rssMb: num(), heapUsedMb: num() });
export type ProcessMemory = z.infer<typeof processMemorySchema>;

/** A node's model cache on disk (gpu-node/model-cache.ts), bytes. */
const diskUsageSchema = map("disk", {
  /** What the cache may hold: MODEL_CACHE_BYTES, or from the disk's free space at start. */
  cacheBudgetBytes: count(),
  /** Cached versions plus the room reserved by downloads in progress. */
  cacheUsedBytes: count(),
  /** Of those, what cannot be evicted now: loaded versions, loads and downloads in progress. */
  cachePinnedBytes: count(),
  /** Free space on the cache's filesystem for the node's user (statfs). */
  freeBytes: count(),
});
export type DiskUsage = z.infer<typeof diskUsageSchema>;

const nodeToRouterSchema = frames([
  frame("hello", {
    accelerator: acceleratorSchema,
    nodeId: str(128),
    executionProvider: str(64),
    memoryBudgetMb: num(),
    /** Calls the node runs at once (batching gathers within this). */
    slots: num(),
    /** Models held at once; 1 when the runtime must own the GPU alone (0 = memory decides). */
    maxModels: num(),
    warm,
    /** Generations the node runs at once (separate from call slots); absent: none. */
    streams: opt(count(100_000)),
    /** The wire versions and features the node speaks (protocol/wire-version.ts); absent: a node from before versions. */
    wire: opt(wireAnnouncementSchema),
  }),
  frame("heartbeat", {
    inflight: num(),
    /** Calls waiting on the node (in a batch window). */
    queued: num(),
    /** Share of the last interval spent running models, 0..1. */
    utilisation: num(),
    warm,
    /** Generations running, and tokens produced since the node started. */
    gen: opt(map("gen", { active: count(), tokens: count() })),
    /** The node process's memory, MiB. */
    mem: opt(processMemorySchema),
    /** Calls the node has started running since it started (absent from older nodes). */
    runs: opt(count()),
    /** The model cache's disk use and the disk's free space (absent from older nodes): placement checks a load fits. */
    disk: opt(diskUsageSchema),
    /** Conversation keys whose KV caches the node keeps, with the prefill ms each saves a follow-up (at most MAX_HEARTBEAT_CONVERSATIONS). */
    affinity: opt(conversations),
  }),
  /** The node finishes what it has and takes nothing new. */
  frame("draining", {}),
  frame("load_progress", { key: str(), bytes: num(), total: num() }),
  frame("loaded", { key: str(), loadMs: num(), downloadMs: num(), cached: bool(), memoryMb: num() }),
  frame("load_failed", { key: str(), message: str() }),
  /** computeMs: the session time the call spent (its share of a batch); what usage bills. */
  frame("result", { id: requestId, outputs: tensors, inferMs: num(), computeMs: opt(num()), traceparent }),
  /** Ends a call as `result` does: the node sends exactly one of the two per infer, a cancel included. */
  frame("error", { id: requestId, code: errorCode, message: str(), computeMs: opt(num()) }),
  /** One generated token; the node sends one only against credit the router granted. */
  frame("token", { id: requestId, i: count(), text: str(), tokenId: count() }),
  frame("done", { id: requestId, reason: finishReason, tokens: count(), promptTokens: count(), genMs: num(), cachedTokens: opt(count()) }),
]);
export type NodeToRouter = z.infer<typeof nodeToRouterSchema>;

const routerToNodeSchema = frames([
  /** wire: what the router speaks (protocol/wire-version.ts); absent: a router from before versions. */
  frame("welcome", { region: str(128), wire: opt(wireAnnouncementSchema) }),
  /** Answers the node's "draining": every frame the router sent before it has arrived. */
  frame("drain_ack", {}),
  frame("load", { key: str(), url: str(), sha256, size: num(), signature: modelSignatureSchema, tokenizer: opt(tokenizerRefSchema), files: opt(bundleFiles) }),
  frame("unload", { key: str() }),
  frame("cancel", { id: requestId }),
  /**
   * sha256: the bytes the router expects under `key` (the node refuses a call when it holds
   * other bytes); deadline: the call's absolute deadline, ms since the epoch (the node stops
   * the call there); requestId: for the node's logs only; traceparent: the router's span (the
   * node's result echoes the node's own span within the same trace).
   */
  frame("infer", {
    outputs: opt(names),
    id: requestId,
    key: str(),
    inputs: tensors,
    sha256,
    deadline: num(),
    requestId: opt(requestId),
    traceparent,
  }),
  /**
   * Starts a generation; `credit` tokens may be sent before the next `credit` frame. No
   * `tokenizer`: use the loaded version's bundle files (tokenizer.json beside the graph). `chat`:
   * render it with the bundle's chat template and ignore `prompt`.
   */
  frame("generate", {
    id: requestId,
    key: str(),
    prompt: str(L.maxPromptChars),
    chat: opt(chatSchema),
    params: generateParamsSchema,
    tokenizer: opt(tokenizerRefSchema),
    credit: count(L.maxWindow),
    sha256,
    requestId: opt(requestId),
    traceparent,
    account: opt(str(128)),
  }),
  frame("credit", { id: requestId, n: count(L.maxWindow) }),
]);
export type RouterToNode = z.infer<typeof routerToNodeSchema>;

// ---------------------------------------------------------------- batches (every socket, both ways)

/**
 * Frames one batch carries at most. A batched decoder's step (or a synthetic node's timer) makes
 * a token for every stream at once; as one socket message each they cost a syscall and a wake-up
 * apiece at every hop, so senders coalesce what one turn of the event loop produced for a
 * socket (protocol/frame-batch.ts). The count is checked before any item is looked at.
 */
export const MAX_BATCH_FRAMES = 1024;
/**
 * Encoded bytes one batch is kept under by its sender (a larger one is split), far below every
 * socket's payload bound (the edge's stream socket takes 1 MiB), which bounds what a receiver reads.
 */
export const MAX_BATCH_BYTES = 256 * 1024;

/**
 * Several frames of one direction in one socket message, in order. Not a frame type of any
 * direction: each item is checked by its direction's own schema (so per-frame authority checks
 * stay as they were), and a batch inside a batch is refused there as an unknown frame type.
 */
const batchSchema = fastPath(
  "batch",
  frame("batch", {
    frames: list(
      z.custom<Record<string, unknown>>((v) => isMap(v), { error: "a batched frame must be a map" }),
      MAX_BATCH_FRAMES,
      `'frames' must be an array of at most ${MAX_BATCH_FRAMES}`,
    ),
  }),
  // Fast path: the edge reads one per socket message of a batching region, and the interpreter
  // checks the items one by one through z.custom's dispatch (about 40% of a 64-token batch's
  // check, bench/wire-validation.ts); each item is still checked by its frame's own schema.
  ({ t, frames }) => (t === "batch" && Array.isArray(frames) && frames.length <= MAX_BATCH_FRAMES && frames.every(isMap) ? { t: "batch" as const, frames: frames.slice() } : z.INVALID),
);
export type FrameBatch = z.infer<typeof batchSchema>;

// ---------------------------------------------------------------- validation

function isMap(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/**
 * Where the runtime may generate code (Node: routers, nodes), schemas are compiled ahead of time
 * (z.compile): valid input takes the generated fast path, which bench/wire-validation.ts measures
 * faster than the hand validators these schemas replaced, and invalid input falls back to the
 * interpreter, so refusals read the same. The Worker allows no `new Function`: it runs zod's
 * interpreter (slower per message, same results).
 */
const COMPILE = z.core.util.allowsEval.value;

/**
 * The parse function of a schema: its typed value, or a MessageError with the first refusal.
 * `label`: the value must be a map (zod's objects would take a typed array for one).
 */
function validator<S extends z.ZodType>(schema: S, label?: string): (v: unknown) => z.output<S> {
  // Compiled, a whole message's fast path only adds a step to generated code as fast (bench:wire).
  const run = COMPILE ? z.compile((FAST_PATHS.find((f) => f.fast === schema)?.plain as S | undefined) ?? schema) : schema;
  return (v) => {
    if (label !== undefined && !isMap(v)) throw new MessageError(`${label} must be a map`);
    const r = run.safeParse(v);
    if (r.success) return r.data;
    throw new MessageError(r.error.issues[0]?.message ?? `${label ?? "value"} is not valid`);
  };
}

export const parseBundleFiles = validator(bundleFiles);
export const parseTokenizerRef = validator(tokenizerRefSchema, "tokenizer");
export const parseGenerateParams = validator(generateParamsSchema, "params");
export const parseChat = validator(chatSchema);
/** A list of kept conversations, bounded: from a heartbeat or a region report. */
export const parseConversations = validator(conversations);
export const parseModelRef = validator(modelRefSchema, "model");
export const parseRegionInferRequest = validator(regionInferRequestSchema, "request");
export const parseRegionInferResponse: (v: unknown) => RegionInferResponse = validator(regionInferResponseSchema, "response");
export const parseRegionGenerateRequest = validator(regionGenerateRequestSchema, "request");
export const parseEdgeToRegion = validator(edgeToRegionSchema, "frame");
export const parseRegionToEdge = validator(regionToEdgeSchema, "frame");
export const parseNodeMessage = validator(nodeToRouterSchema, "frame");
export const parseRouterMessage = validator(routerToNodeSchema, "frame");
const parseBatch = validator(batchSchema, "frame");

/**
 * The frames one decoded socket message holds, each checked by `parse`: a batch's items in
 * order, or the message itself. Throws MessageError for a malformed batch or any bad item.
 * `acceptBatch` false (the receiver did not announce `batch`, protocol/wire-version.ts): a
 * batch is refused as the unknown frame type it is to a part from before batches.
 */
export function unbatch<F>(decoded: unknown, parse: (v: unknown) => F, acceptBatch = true): F[] {
  if (!acceptBatch || !isMap(decoded) || decoded.t !== "batch") return [parse(decoded)];
  return parseBatch(decoded).frames.map(parse);
}

/** Each fast path (as the schemas hold it) and the same schema without it: tests and benches. */
export const fastPathSchemas: readonly { name: string; fast: z.ZodType; plain: z.ZodType }[] = FAST_PATHS;

/** The schemas themselves, uncompiled (tests compare them with the parse functions; benches). */
export const wireSchemas = {
  modelRef: modelRefSchema,
  regionInferRequest: regionInferRequestSchema,
  regionInferResponse: regionInferResponseSchema,
  regionGenerateRequest: regionGenerateRequestSchema,
  edgeToRegion: edgeToRegionSchema,
  regionToEdge: regionToEdgeSchema,
  nodeToRouter: nodeToRouterSchema,
  routerToNode: routerToNodeSchema,
  batch: batchSchema,
} as const;

/** Close codes the mesh sends on the node socket (RFC 6455); ws itself closes an oversize frame with 1009. */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  restart: 1012,
  /**
   * The peer shares no wire version with this part (a private code, HTTP's 426 Upgrade
   * Required in the 4000s); the reason starts with `wire_version_unsupported` and names both
   * ranges (protocol/wire-version.ts).
   */
  wireVersionUnsupported: 4426,
} as const;

/** Bounds on what a socket or body may carry; msgpack decoding has no quotas of its own. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
export const MAX_INFER_BODY_BYTES = 32 * 1024 * 1024;
