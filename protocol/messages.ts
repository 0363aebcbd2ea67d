// Every message the mesh's parts exchange, and a validator for each one received. msgpack has no
// schema, so a decoded frame is `unknown` until one of these functions has checked its shape.

import type { ErrorCode } from "./errors.js";
import { isErrorCode } from "./errors.js";
import { isOipDatatype, type ModelSignature, type TensorSpec } from "./datatypes.js";
import type { TensorData, WireTensor } from "./tensor.js";
import { parseTraceparent } from "./trace-context.js";
import { CONVERSATION_KEY_RE } from "./conversation-key.js";

// ---------------------------------------------------------------- edge -> region (HTTP)

/** What a region needs to load a model version on a node: where its bytes are and what they hash to. */
export interface ModelRef {
  /** Unique per (model, version) across the mesh, e.g. `<modelId>@<version>`. */
  key: string;
  /** The account that owns the model (and so made the call): fairness and limits per tenant. */
  account: string;
  name: string;
  version: number;
  sha256: string;
  size: number;
  /** Signed, time-limited URL the node downloads the artifact from. */
  artifactUrl: string;
  signature: ModelSignature;
  /** Generative models: the tokenizer.json shipped with the version. */
  tokenizer?: TokenizerRef;
  /** A bundle's data files (ONNX external data), written next to the graph under their names. */
  files?: BundleFileRef[];
}

/** One data file of a bundle: its name beside the graph, and where to fetch it (sha-checked). */
export interface BundleFileRef {
  name: string;
  sha256: string;
  size: number;
  url: string;
}

/** A bundle file as a version records it (no URL: that is signed per region). */
export type BundleFile = Omit<BundleFileRef, "url">;

/** At most this many data files per bundle. */
export const MAX_BUNDLE_FILES = 64;
/** A bundle file's name: a plain file name (no '/', '\\', ':' or '..'), as the graph's `location` names it. */
export const BUNDLE_FILE_NAME_RE = /^(?!\.\.?$)[A-Za-z0-9._-]{1,128}$/;

/** A version's tokenizer.json: fetched through a signed URL and sha-checked like the artifact. */
export interface TokenizerRef {
  sha256: string;
  size: number;
  url: string;
}

export interface RegionInferRequest {
  requestId: string;
  model: ModelRef;
  inputs: WireTensor[];
  outputs?: string[];
  /** Absolute deadline (ms since epoch); the region answers deadline_exceeded past it. */
  deadline: number;
}

export interface Timing {
  queueMs: number;
  loadMs: number;
  inferMs: number;
  regionMs: number;
  /** Session time the node spent on the call (its share of a batch): what usage bills. */
  computeMs?: number;
  /** The spans (ids, within the caller's trace) of the router and, when it echoed one, the node. */
  trace?: SpanIds;
}

/** Span ids (16 hex) of the hops past the edge that handled a call (trace-context.ts). */
export interface SpanIds {
  router: string;
  node?: string;
}

export type RegionInferResponse =
  | { ok: true; outputs: WireTensor[]; node: string; timing: Timing }
  /**
   * computeMs: what a call that failed after it ran still cost on its node (a deadline's stop
   * included), for usage.
   * notStarted: the region refused the call before handing it to any node (draining, no node,
   * queue full), so the edge may send it to another region. Absent: it may have run.
   */
  | { ok: false; code: ErrorCode; message: string; computeMs?: number; notStarted?: true };

// ---------------------------------------------------------------- generation (streams)

/** Sampling parameters of one generation, resolved (defaults applied) at the edge. */
export interface GenerateParams {
  maxTokens: number;
  /** 0 = greedy. */
  temperature: number;
  /** 0 = all tokens. */
  topK: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches this; 1 = off. */
  topP: number;
  /** Divides (positive logits) or multiplies (negative) the scores of tokens already in the context; 1 = off. */
  repetitionPenalty: number;
  /** Absent: the node draws one (the text is then not reproducible). */
  seed?: number;
  stop: string[];
}

/** One chat message; the node renders a list of them through the bundle's chat template. */
export interface ChatMessage {
  role: string;
  content: string;
}

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

export interface RegionGenerateRequest {
  requestId: string;
  model: ModelRef;
  /** Empty when `chat` is given. */
  prompt: string;
  /** A chat for the node to render with the bundle's chat template (add_generation_prompt); replaces `prompt`. */
  chat?: ChatMessage[];
  params: GenerateParams;
  /** Absolute deadline (ms since epoch) for the first token: queue, load and first step. */
  deadline: number;
  /** The edge's span (W3C traceparent), signed with the request. */
  traceparent?: string;
  /**
   * A follow-up chat turn: the conversation key of its messages before the last user turn
   * (protocol/conversation-key.ts). The router prefers the node that kept that conversation's
   * KV cache.
   */
  affinity?: string;
}

export type FinishReason = "length" | "stop" | "cancelled";
export type ProgressStage = "queued" | "loading" | "running";

export interface StreamTiming {
  queueMs: number;
  loadMs: number;
  /** From the region's arrival of the request to its first token leaving the region. */
  ttftMs: number;
  /** The node's generation time, first step to last token. */
  genMs: number;
  regionMs: number;
}

/**
 * The edge's side of a stream socket to a region (`GET /v1/streams`, signed at the upgrade):
 * msgpack binary frames, many streams per socket, each named by the edge (`sid`). `window` and
 * `credit` are end-to-end flow control: the region never sends a stream more tokens than the
 * edge has granted, and passes the grants on to the node, which pauses when it has none.
 */
export type EdgeToRegion =
  | {
      t: "generate";
      sid: string;
      /**
       * The RegionGenerateRequest as msgpack bytes, and its grant: the edge's signature headers
       * (signRequest with method GENERATE on the stream path) over exactly these bytes. The
       * request names account, model key, version, sha256, artifact and tokenizer URLs, request
       * id and deadline; the router decodes the bytes only once the grant checks.
       */
      req: Uint8Array;
      grant: Record<string, string>;
      window: number;
    }
  | { t: "credit"; sid: string; n: number }
  | { t: "cancel"; sid: string }
  // Liveness: the edge cannot see WebSocket pings, so it asks with a frame and the region answers.
  | { t: "ping" };

export type RegionToEdge =
  | { t: "progress"; sid: string; stage: ProgressStage; position?: number; bytes?: number; total?: number; node?: string }
  | { t: "token"; sid: string; i: number; text: string; id: number }
  /** cachedTokens: prompt tokens the node reused from a kept KV cache instead of computing them. */
  | { t: "done"; sid: string; reason: FinishReason; tokens: number; promptTokens: number; node: string; timing: StreamTiming; cachedTokens?: number }
  | { t: "error"; sid: string; code: ErrorCode; message: string }
  | { t: "pong" };

// ---------------------------------------------------------------- node <-> router (WebSocket)

export interface Accelerator {
  kind: "cpu" | "gpu";
  name: string;
  memoryMb: number;
}

export interface WarmModel {
  key: string;
  memoryMb: number;
  lastUsed: number;
}

export type NodeToRouter =
  | {
      t: "hello";
      nodeId: string;
      accelerator: Accelerator;
      executionProvider: string;
      memoryBudgetMb: number;
      /** Calls the node runs at once (batching gathers within this). */
      slots: number;
      /** Models held at once; 1 when the runtime must own the GPU alone (0 = memory decides). */
      maxModels: number;
      warm: WarmModel[];
      /** Generations the node runs at once (separate from call slots); absent: none. */
      streams?: number;
    }
  | {
      t: "heartbeat";
      inflight: number;
      /** Calls waiting on the node (in a batch window). */
      queued: number;
      /** Share of the last interval spent running models, 0..1. */
      utilisation: number;
      warm: WarmModel[];
      /** Generations running, and tokens produced since the node started. */
      gen?: { active: number; tokens: number };
      /** The node process's memory, MiB. */
      mem?: ProcessMemory;
      /** Calls the node has started running since it started (absent from older nodes). */
      runs?: number;
      /** The model cache's disk use and the disk's free space (absent from older nodes): placement checks a load fits. */
      disk?: DiskUsage;
      /** Conversation keys whose KV caches the node keeps, with the prefill ms each saves a follow-up (at most MAX_HEARTBEAT_CONVERSATIONS). */
      affinity?: ConversationHeld[];
    }
  /** The node finishes what it has and takes nothing new. */
  | { t: "draining" }
  | { t: "load_progress"; key: string; bytes: number; total: number }
  | { t: "loaded"; key: string; loadMs: number; downloadMs: number; cached: boolean; memoryMb: number }
  | { t: "load_failed"; key: string; message: string }
  /** computeMs: the session time the call spent (its share of a batch); what usage bills. */
  | { t: "result"; id: string; outputs: WireTensor[]; inferMs: number; computeMs?: number; traceparent?: string }
  /** Ends a call as `result` does: the node sends exactly one of the two per infer, a cancel included. */
  | { t: "error"; id: string; code: ErrorCode; message: string; computeMs?: number }
  /** One generated token; the node sends one only against credit the router granted. */
  | { t: "token"; id: string; i: number; text: string; tokenId: number }
  | { t: "done"; id: string; reason: FinishReason; tokens: number; promptTokens: number; genMs: number; cachedTokens?: number };

/** A kept conversation cache as nodes and regions report it. */
export interface ConversationHeld {
  key: string;
  /** Prefill time a follow-up saves by reusing it, ms. */
  savedMs: number;
}

/** Conversation keys one heartbeat (or one region report) names at most. */
export const MAX_HEARTBEAT_CONVERSATIONS = 256;

export interface ProcessMemory {
  rssMb: number;
  heapUsedMb: number;
}

/** A node's model cache on disk (gpu-node/model-cache.ts), bytes. */
export interface DiskUsage {
  /** What the cache may hold: MODEL_CACHE_BYTES, or from the disk's free space at start. */
  cacheBudgetBytes: number;
  /** Cached versions plus the room reserved by downloads in progress. */
  cacheUsedBytes: number;
  /** Of those, what cannot be evicted now: loaded versions, loads and downloads in progress. */
  cachePinnedBytes: number;
  /** Free space on the cache's filesystem for the node's user (statfs). */
  freeBytes: number;
}

export type RouterToNode =
  | { t: "welcome"; region: string }
  /** Answers the node's "draining": every frame the router sent before it has arrived. */
  | { t: "drain_ack" }
  | { t: "load"; key: string; url: string; sha256: string; size: number; signature: ModelSignature; tokenizer?: TokenizerRef; files?: BundleFileRef[] }
  | { t: "unload"; key: string }
  | { t: "cancel"; id: string }
  /**
   * sha256: the bytes the router expects under `key` (the node refuses a call when it holds
   * other bytes); deadline: the call's absolute deadline, ms since the epoch (the node stops
   * the call there); requestId: for the node's logs only; traceparent: the router's span (the
   * node's result echoes the node's own span within the same trace).
   */
  | { t: "infer"; id: string; key: string; sha256: string; inputs: WireTensor[]; outputs?: string[]; deadline: number; requestId?: string; traceparent?: string }
  /**
   * Starts a generation; `credit` tokens may be sent before the next `credit` frame. No
   * `tokenizer`: use the loaded version's bundle files (tokenizer.json beside the graph). `chat`:
   * render it with the bundle's chat template and ignore `prompt`.
   */
  | { t: "generate"; id: string; key: string; sha256: string; prompt: string; chat?: ChatMessage[]; params: GenerateParams; tokenizer?: TokenizerRef; credit: number; requestId?: string; traceparent?: string; account?: string }
  | { t: "credit"; id: string; n: number };

// ---------------------------------------------------------------- validation

export class MessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "MessageError";
  }
}

type Rec = Record<string, unknown>;

function rec(v: unknown, what: string): Rec {
  if (typeof v !== "object" || v === null || Array.isArray(v) || ArrayBuffer.isView(v)) {
    throw new MessageError(`${what} must be a map`);
  }
  return v as Rec;
}
function str(o: Rec, k: string, max = 4096): string {
  const v = o[k];
  if (typeof v !== "string" || v.length > max) throw new MessageError(`'${k}' must be a string`);
  return v;
}
function num(o: Rec, k: string): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isFinite(v)) throw new MessageError(`'${k}' must be a number`);
  return v;
}
function bool(o: Rec, k: string): boolean {
  const v = o[k];
  if (typeof v !== "boolean") throw new MessageError(`'${k}' must be a boolean`);
  return v;
}
function arr(o: Rec, k: string, max = 100_000): unknown[] {
  const v = o[k];
  if (!Array.isArray(v) || v.length > max) throw new MessageError(`'${k}' must be an array`);
  return v;
}
function shape(v: unknown): number[] {
  if (!Array.isArray(v) || v.length > 16 || !v.every((d) => typeof d === "number" && Number.isInteger(d) && d >= -1)) {
    throw new MessageError("'shape' must be an array of integers");
  }
  return v as number[];
}
function tensorSpec(v: unknown): TensorSpec {
  const o = rec(v, "tensor spec");
  const datatype = o.datatype;
  if (!isOipDatatype(datatype)) throw new MessageError("'datatype' is not an OIP datatype");
  return { name: str(o, "name"), datatype, shape: shape(o.shape) };
}
function tensor(v: unknown): WireTensor {
  const o = rec(v, "tensor");
  const datatype = o.datatype;
  if (!isOipDatatype(datatype)) throw new MessageError("'datatype' is not an OIP datatype");
  const data = o.data;
  const ok =
    (ArrayBuffer.isView(data) && !(data instanceof DataView)) ||
    (Array.isArray(data) && data.every((s) => typeof s === "string"));
  if (!ok) throw new MessageError("'data' must be a typed array or an array of strings");
  return { name: str(o, "name"), datatype, shape: shape(o.shape), data: data as TensorData };
}
/** An optional W3C traceparent field, spread into the parsed message; a malformed one is refused. */
function traceparent(o: Rec): { traceparent?: string } {
  const v = o.traceparent;
  if (v === undefined || v === null) return {};
  if (typeof v !== "string" || !parseTraceparent(v)) throw new MessageError("'traceparent' must be a W3C traceparent");
  return { traceparent: v };
}
function spanIds(v: unknown): SpanIds {
  const o = rec(v, "trace");
  const id = (k: string) => {
    const s = str(o, k, 16);
    if (!/^[0-9a-f]{16}$/.test(s)) throw new MessageError(`'trace.${k}' must be a span id`);
    return s;
  };
  return { router: id("router"), ...(o.node !== undefined && o.node !== null ? { node: id("node") } : {}) };
}
function tensors(o: Rec, k: string): WireTensor[] {
  return arr(o, k, 1024).map(tensor);
}
function names(o: Rec, k: string): string[] | undefined {
  if (o[k] === undefined || o[k] === null) return undefined;
  return arr(o, k, 1024).map((n) => {
    if (typeof n !== "string") throw new MessageError(`'${k}' must be strings`);
    return n;
  });
}
function code(o: Rec): ErrorCode {
  const c = o.code;
  if (!isErrorCode(c)) throw new MessageError("'code' is not a known error code");
  return c;
}
/** `t` as a short printable string; JSON.stringify alone throws on a BigInt (a msgpack int64). */
function frameType(t: unknown): string {
  try {
    return String(JSON.stringify(t, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v))).slice(0, 40);
  } catch {
    return typeof t;
  }
}
function warmList(o: Rec): WarmModel[] {
  return arr(o, "warm", 10_000).map((w) => {
    const r = rec(w, "warm model");
    return { key: str(r, "key"), memoryMb: num(r, "memoryMb"), lastUsed: num(r, "lastUsed") };
  });
}

function count(o: Rec, k: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0 || v > max) throw new MessageError(`'${k}' must be an integer from 0 to ${max}`);
  return v;
}
function optCount(o: Rec, k: string, max?: number): number | undefined {
  return o[k] === undefined || o[k] === null ? undefined : count(o, k, max);
}
function memory(v: unknown): ProcessMemory {
  const m = rec(v, "mem");
  return { rssMb: num(m, "rssMb"), heapUsedMb: num(m, "heapUsedMb") };
}
function diskUsage(v: unknown): DiskUsage {
  const d = rec(v, "disk");
  const n = (k: string) => count(d, k, Number.MAX_SAFE_INTEGER);
  return { cacheBudgetBytes: n("cacheBudgetBytes"), cacheUsedBytes: n("cacheUsedBytes"), cachePinnedBytes: n("cachePinnedBytes"), freeBytes: n("freeBytes") };
}
function finishReason(o: Rec): FinishReason {
  const r = o.reason;
  if (r !== "length" && r !== "stop" && r !== "cancelled") throw new MessageError("'reason' must be length, stop or cancelled");
  return r;
}

/** A bundle's file list; names checked here, so the node never writes outside the version's directory. */
export function parseBundleFiles(v: unknown): BundleFileRef[] {
  if (!Array.isArray(v) || v.length > MAX_BUNDLE_FILES) throw new MessageError(`'files' must be a list of at most ${MAX_BUNDLE_FILES}`);
  const seen = new Set<string>();
  return v.map((f) => {
    const o = rec(f, "file");
    const name = str(o, "name", 128);
    const sha256 = str(o, "sha256", 64);
    if (!BUNDLE_FILE_NAME_RE.test(name) || name === "model.onnx" || seen.has(name)) throw new MessageError("a bundle file's 'name' must be a distinct plain file name");
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new MessageError("a bundle file's 'sha256' must be 64 hex digits");
    seen.add(name);
    return { name, sha256, size: count(o, "size"), url: str(o, "url") };
  });
}

export function parseTokenizerRef(v: unknown): TokenizerRef {
  const o = rec(v, "tokenizer");
  const sha256 = str(o, "sha256", 64);
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new MessageError("'tokenizer.sha256' must be 64 hex digits");
  return { sha256, size: count(o, "size"), url: str(o, "url") };
}

/** Checks ranges too: a frame that passed here is safe to hand to the generation loop. */
export function parseGenerateParams(v: unknown): GenerateParams {
  const o = rec(v, "params");
  const L = GENERATE_LIMITS;
  const temperature = num(o, "temperature");
  if (temperature < 0 || temperature > L.maxTemperature) throw new MessageError(`'temperature' must be from 0 to ${L.maxTemperature}`);
  const stop = arr(o, "stop", L.maxStop).map((x) => {
    if (typeof x !== "string" || x.length === 0 || x.length > L.maxStopChars) {
      throw new MessageError(`'stop' must hold non-empty strings of at most ${L.maxStopChars} characters`);
    }
    return x;
  });
  const seed = optCount(o, "seed", 0xffffffff);
  // Older senders have neither: both mean "off".
  const topP = o.topP === undefined || o.topP === null ? 1 : num(o, "topP");
  if (!(topP > 0 && topP <= 1)) throw new MessageError("'topP' must be above 0 and at most 1");
  const repetitionPenalty = o.repetitionPenalty === undefined || o.repetitionPenalty === null ? 1 : num(o, "repetitionPenalty");
  if (!(repetitionPenalty > 0 && repetitionPenalty <= L.maxRepetitionPenalty)) {
    throw new MessageError(`'repetitionPenalty' must be above 0 and at most ${L.maxRepetitionPenalty}`);
  }
  return {
    maxTokens: count(o, "maxTokens", L.maxTokens),
    temperature,
    topK: count(o, "topK", L.maxTopK),
    topP,
    repetitionPenalty,
    ...(seed !== undefined ? { seed } : {}),
    stop,
  };
}

/** A chat's messages: at most maxChatMessages, short roles, contents together within maxPromptChars. */
export function parseChat(v: unknown): ChatMessage[] {
  const L = GENERATE_LIMITS;
  if (!Array.isArray(v) || v.length === 0 || v.length > L.maxChatMessages) {
    throw new MessageError(`'chat' must be a list of 1 to ${L.maxChatMessages} messages`);
  }
  let chars = 0;
  return v.map((m) => {
    const o = rec(m, "chat message");
    const role = str(o, "role", L.maxRoleChars);
    if (role.length === 0) throw new MessageError("a chat message's 'role' must not be empty");
    const content = str(o, "content", L.maxPromptChars);
    chars += content.length;
    if (chars > L.maxPromptChars) throw new MessageError(`a chat's contents must total at most ${L.maxPromptChars} characters`);
    return { role, content };
  });
}

/** A list of kept conversations, bounded: from a heartbeat or a region report. */
export function parseConversations(v: unknown): ConversationHeld[] {
  if (!Array.isArray(v) || v.length > MAX_HEARTBEAT_CONVERSATIONS) throw new MessageError(`'affinity' must be an array of at most ${MAX_HEARTBEAT_CONVERSATIONS}`);
  return v.map((x) => {
    const c = rec(x, "affinity entry");
    const key = str(c, "key", 64);
    if (!CONVERSATION_KEY_RE.test(key)) throw new MessageError("'affinity[].key' must be a conversation key");
    return { key, savedMs: Math.max(0, num(c, "savedMs")) };
  });
}

function optAffinity(o: Rec): { affinity?: string } {
  if (o.affinity === undefined || o.affinity === null) return {};
  const k = str(o, "affinity", 64);
  if (!CONVERSATION_KEY_RE.test(k)) throw new MessageError("'affinity' must be a conversation key");
  return { affinity: k };
}

function optCached(o: Rec): { cachedTokens?: number } {
  return o.cachedTokens === undefined || o.cachedTokens === null ? {} : { cachedTokens: count(o, "cachedTokens") };
}

function optChat(o: Rec): { chat?: ChatMessage[] } {
  return o.chat === undefined || o.chat === null ? {} : { chat: parseChat(o.chat) };
}

export function parseRegionGenerateRequest(v: unknown): RegionGenerateRequest {
  const o = rec(v, "request");
  return {
    requestId: str(o, "requestId", 128),
    model: parseModelRef(o.model),
    prompt: str(o, "prompt", GENERATE_LIMITS.maxPromptChars),
    ...optChat(o),
    params: parseGenerateParams(o.params),
    deadline: num(o, "deadline"),
    ...traceparent(o),
    ...optAffinity(o),
  };
}

function stage(o: Rec): ProgressStage {
  const s = o.stage;
  if (s !== "queued" && s !== "loading" && s !== "running") throw new MessageError("'stage' must be queued, loading or running");
  return s;
}

/** The method a generate frame's grant is signed under (with the stream socket's path). */
export const GENERATE_GRANT_METHOD = "GENERATE";

/**
 * A generate request's bytes: a prompt (or a chat's contents) at its longest (4 bytes a
 * character), a chat's roles and framing, and its model reference with its bundle files.
 */
export const MAX_GENERATE_REQUEST_BYTES =
  GENERATE_LIMITS.maxPromptChars * 4 + GENERATE_LIMITS.maxChatMessages * (GENERATE_LIMITS.maxRoleChars * 4 + 32) + 256 * 1024;

export function parseEdgeToRegion(v: unknown): EdgeToRegion {
  const o = rec(v, "frame");
  switch (o.t) {
    case "generate": {
      const req = o.req;
      if (!(req instanceof Uint8Array) || req.length > MAX_GENERATE_REQUEST_BYTES) {
        throw new MessageError(`'req' must be msgpack bytes of at most ${MAX_GENERATE_REQUEST_BYTES}`);
      }
      const g = rec(o.grant, "grant");
      const grant: Record<string, string> = {};
      const keys = Object.keys(g);
      if (keys.length > 8) throw new MessageError("'grant' has too many fields");
      for (const k of keys) grant[k] = str(g, k, 128);
      return { t: "generate", sid: str(o, "sid", 128), req, grant, window: count(o, "window", GENERATE_LIMITS.maxWindow) };
    }
    case "credit":
      return { t: "credit", sid: str(o, "sid", 128), n: count(o, "n", GENERATE_LIMITS.maxWindow) };
    case "cancel":
      return { t: "cancel", sid: str(o, "sid", 128) };
    case "ping":
      return { t: "ping" };
    default:
      throw new MessageError(`unknown frame type ${frameType(o.t)}`);
  }
}

export function parseRegionToEdge(v: unknown): RegionToEdge {
  const o = rec(v, "frame");
  switch (o.t) {
    case "progress": {
      const position = optCount(o, "position");
      const bytes = optCount(o, "bytes");
      const total = optCount(o, "total");
      return {
        t: "progress",
        sid: str(o, "sid", 128),
        stage: stage(o),
        ...(position !== undefined ? { position } : {}),
        ...(bytes !== undefined ? { bytes } : {}),
        ...(total !== undefined ? { total } : {}),
        ...(typeof o.node === "string" ? { node: str(o, "node", 128) } : {}),
      };
    }
    case "token":
      return { t: "token", sid: str(o, "sid", 128), i: count(o, "i"), text: str(o, "text"), id: count(o, "id") };
    case "done": {
      const t = rec(o.timing, "timing");
      return {
        t: "done",
        sid: str(o, "sid", 128),
        reason: finishReason(o),
        tokens: count(o, "tokens"),
        promptTokens: count(o, "promptTokens"),
        node: str(o, "node", 128),
        timing: {
          queueMs: num(t, "queueMs"),
          loadMs: num(t, "loadMs"),
          ttftMs: num(t, "ttftMs"),
          genMs: num(t, "genMs"),
          regionMs: num(t, "regionMs"),
        },
        ...optCached(o),
      };
    }
    case "error":
      return { t: "error", sid: str(o, "sid", 128), code: code(o), message: str(o, "message") };
    case "pong":
      return { t: "pong" };
    default:
      throw new MessageError(`unknown frame type ${frameType(o.t)}`);
  }
}

function signature(v: unknown): ModelSignature {
  const sig = rec(v, "signature");
  return { inputs: arr(sig, "inputs", 1024).map(tensorSpec), outputs: arr(sig, "outputs", 1024).map(tensorSpec) };
}

export function parseModelRef(v: unknown): ModelRef {
  const o = rec(v, "model");
  return {
    key: str(o, "key"),
    account: str(o, "account", 128),
    name: str(o, "name"),
    version: num(o, "version"),
    sha256: str(o, "sha256", 64),
    size: num(o, "size"),
    artifactUrl: str(o, "artifactUrl"),
    signature: signature(o.signature),
    ...(o.tokenizer !== undefined && o.tokenizer !== null ? { tokenizer: parseTokenizerRef(o.tokenizer) } : {}),
    ...(o.files !== undefined && o.files !== null ? { files: parseBundleFiles(o.files) } : {}),
  };
}

export function parseRegionInferRequest(v: unknown): RegionInferRequest {
  const o = rec(v, "request");
  const outputs = names(o, "outputs");
  return {
    requestId: str(o, "requestId", 128),
    model: parseModelRef(o.model),
    inputs: tensors(o, "inputs"),
    ...(outputs ? { outputs } : {}),
    deadline: num(o, "deadline"),
  };
}

export function parseRegionInferResponse(v: unknown): RegionInferResponse {
  const o = rec(v, "response");
  if (o.ok === true) {
    const t = rec(o.timing, "timing");
    return {
      ok: true,
      outputs: tensors(o, "outputs"),
      node: str(o, "node"),
      timing: {
        queueMs: num(t, "queueMs"),
        loadMs: num(t, "loadMs"),
        inferMs: num(t, "inferMs"),
        regionMs: num(t, "regionMs"),
        ...(t.computeMs !== undefined && t.computeMs !== null ? { computeMs: num(t, "computeMs") } : {}),
        ...(t.trace !== undefined && t.trace !== null ? { trace: spanIds(t.trace) } : {}),
      },
    };
  }
  return { ok: false, code: code(o), message: str(o, "message"), ...(o.computeMs !== undefined && o.computeMs !== null ? { computeMs: num(o, "computeMs") } : {}), ...(o.notStarted === true ? { notStarted: true as const } : {}) };
}

export function parseNodeMessage(v: unknown): NodeToRouter {
  const o = rec(v, "frame");
  switch (o.t) {
    case "hello": {
      const a = rec(o.accelerator, "accelerator");
      const kind = a.kind;
      if (kind !== "cpu" && kind !== "gpu") throw new MessageError("'accelerator.kind' must be cpu or gpu");
      return {
        t: "hello",
        nodeId: str(o, "nodeId", 128),
        accelerator: { kind, name: str(a, "name"), memoryMb: num(a, "memoryMb") },
        executionProvider: str(o, "executionProvider", 64),
        memoryBudgetMb: num(o, "memoryBudgetMb"),
        slots: num(o, "slots"),
        maxModels: num(o, "maxModels"),
        warm: warmList(o),
        ...(o.streams !== undefined && o.streams !== null ? { streams: count(o, "streams", 100_000) } : {}),
      };
    }
    case "heartbeat": {
      const gen = o.gen === undefined || o.gen === null ? undefined : rec(o.gen, "gen");
      return {
        t: "heartbeat",
        inflight: num(o, "inflight"),
        queued: num(o, "queued"),
        utilisation: num(o, "utilisation"),
        warm: warmList(o),
        ...(gen ? { gen: { active: count(gen, "active"), tokens: count(gen, "tokens") } } : {}),
        ...(o.mem !== undefined && o.mem !== null ? { mem: memory(o.mem) } : {}),
        ...(o.runs !== undefined && o.runs !== null ? { runs: count(o, "runs", Number.MAX_SAFE_INTEGER) } : {}),
        ...(o.disk !== undefined && o.disk !== null ? { disk: diskUsage(o.disk) } : {}),
        ...(o.affinity !== undefined && o.affinity !== null ? { affinity: parseConversations(o.affinity) } : {}),
      };
    }
    case "draining":
      return { t: "draining" };
    case "load_progress":
      return { t: "load_progress", key: str(o, "key"), bytes: num(o, "bytes"), total: num(o, "total") };
    case "loaded":
      return {
        t: "loaded",
        key: str(o, "key"),
        loadMs: num(o, "loadMs"),
        downloadMs: num(o, "downloadMs"),
        cached: bool(o, "cached"),
        memoryMb: num(o, "memoryMb"),
      };
    case "load_failed":
      return { t: "load_failed", key: str(o, "key"), message: str(o, "message") };
    case "result":
      return {
        t: "result",
        id: str(o, "id", 128),
        outputs: tensors(o, "outputs"),
        inferMs: num(o, "inferMs"),
        ...(o.computeMs !== undefined && o.computeMs !== null ? { computeMs: num(o, "computeMs") } : {}),
        ...traceparent(o),
      };
    case "error":
      return {
        t: "error",
        id: str(o, "id", 128),
        code: code(o),
        message: str(o, "message"),
        ...(o.computeMs !== undefined && o.computeMs !== null ? { computeMs: num(o, "computeMs") } : {}),
      };
    case "token":
      return { t: "token", id: str(o, "id", 128), i: count(o, "i"), text: str(o, "text"), tokenId: count(o, "tokenId") };
    case "done":
      return {
        t: "done",
        id: str(o, "id", 128),
        reason: finishReason(o),
        tokens: count(o, "tokens"),
        promptTokens: count(o, "promptTokens"),
        genMs: num(o, "genMs"),
        ...optCached(o),
      };
    default:
      throw new MessageError(`unknown frame type ${frameType(o.t)}`);
  }
}

export function parseRouterMessage(v: unknown): RouterToNode {
  const o = rec(v, "frame");
  switch (o.t) {
    case "welcome":
      return { t: "welcome", region: str(o, "region", 128) };
    case "drain_ack":
      return { t: "drain_ack" };
    case "load":
      return {
        t: "load",
        key: str(o, "key"),
        url: str(o, "url"),
        sha256: str(o, "sha256", 64),
        size: num(o, "size"),
        signature: signature(o.signature),
        ...(o.tokenizer !== undefined && o.tokenizer !== null ? { tokenizer: parseTokenizerRef(o.tokenizer) } : {}),
    ...(o.files !== undefined && o.files !== null ? { files: parseBundleFiles(o.files) } : {}),
      };
    case "unload":
      return { t: "unload", key: str(o, "key") };
    case "cancel":
      return { t: "cancel", id: str(o, "id", 128) };
    case "infer": {
      const outputs = names(o, "outputs");
      return {
        t: "infer",
        id: str(o, "id", 128),
        key: str(o, "key"),
        inputs: tensors(o, "inputs"),
        ...(outputs ? { outputs } : {}),
        sha256: str(o, "sha256", 64),
        deadline: num(o, "deadline"),
        ...(o.requestId !== undefined && o.requestId !== null ? { requestId: str(o, "requestId", 128) } : {}),
        ...traceparent(o),
      };
    }
    case "generate":
      return {
        t: "generate",
        id: str(o, "id", 128),
        key: str(o, "key"),
        prompt: str(o, "prompt", GENERATE_LIMITS.maxPromptChars),
        ...optChat(o),
        params: parseGenerateParams(o.params),
        ...(o.tokenizer !== undefined && o.tokenizer !== null ? { tokenizer: parseTokenizerRef(o.tokenizer) } : {}),
        credit: count(o, "credit", GENERATE_LIMITS.maxWindow),
        sha256: str(o, "sha256", 64),
        ...(o.requestId !== undefined && o.requestId !== null ? { requestId: str(o, "requestId", 128) } : {}),
        ...traceparent(o),
        ...(o.account !== undefined && o.account !== null ? { account: str(o, "account", 128) } : {}),
      };
    case "credit":
      return { t: "credit", id: str(o, "id", 128), n: count(o, "n", GENERATE_LIMITS.maxWindow) };
    default:
      throw new MessageError(`unknown frame type ${frameType(o.t)}`);
  }
}

/** Close codes the mesh sends on the node socket (RFC 6455); ws itself closes an oversize frame with 1009. */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  restart: 1012,
} as const;

/** Bounds on what a socket or body may carry; msgpack decoding has no quotas of its own. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
export const MAX_INFER_BODY_BYTES = 32 * 1024 * 1024;
