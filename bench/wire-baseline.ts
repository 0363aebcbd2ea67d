// BASELINE FOR bench/wire-validation.ts ONLY: the hand-written validators protocol/messages.ts
// had before its messages were defined once as zod schemas (issue 12), copied unchanged but for
// imports, so the bench can keep measuring the schemas against them. Nothing else may import
// this file; it is not kept in step with the protocol.

import type { ErrorCode } from "../protocol/errors.js";
import { isErrorCode } from "../protocol/errors.js";
import { isOipDatatype, type ModelSignature, type TensorSpec } from "../formats/datatypes.js";
import type { TensorData } from "../formats/tensor.js";
import { packedSizeError, type CarriedTensor, type PackedTensor } from "../formats/binary-tensors.js";
import { parseTraceparent } from "../protocol/trace-context.js";
import { CONVERSATION_KEY_RE } from "../protocol/conversation-key.js";
import {
  BUNDLE_FILE_NAME_RE,
  GENERATE_LIMITS,
  MAX_BUNDLE_FILES,
  MAX_GENERATE_REQUEST_BYTES,
  MAX_HEARTBEAT_CONVERSATIONS,
  type BundleFileRef,
  type ChatMessage,
  type ConversationHeld,
  type DiskUsage,
  type EdgeToRegion,
  type FinishReason,
  type GenerateParams,
  type ModelRef,
  type NodeToRouter,
  type ProcessMemory,
  type ProgressStage,
  type RegionGenerateRequest,
  type RegionInferRequest,
  type RegionInferResponse,
  type RegionToEdge,
  type RouterToNode,
  type SpanIds,
  type TokenizerRef,
  type WarmModel,
} from "../protocol/messages.js";

class MessageError extends Error {
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
/**
 * A tensor on a hop. Packed (`bytes`): only its size is checked against its shape, the bytes
 * stay a view of the frame (the router forwards them as they came). Typed (`data`): older edges
 * and nodes send typed arrays or strings.
 */
function tensor(v: unknown): CarriedTensor {
  const o = rec(v, "tensor");
  const datatype = o.datatype;
  if (!isOipDatatype(datatype)) throw new MessageError("'datatype' is not an OIP datatype");
  if (o.bytes !== undefined) {
    if (!(o.bytes instanceof Uint8Array)) throw new MessageError("'bytes' must be binary");
    const packed: PackedTensor = { name: str(o, "name"), datatype, shape: shape(o.shape), bytes: o.bytes };
    const wrong = packedSizeError(packed);
    if (wrong) throw new MessageError(wrong);
    return packed;
  }
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
function tensors(o: Rec, k: string): CarriedTensor[] {
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
