// Every message the mesh's parts exchange, and a validator for each one received. msgpack has no
// schema, so a decoded frame is `unknown` until one of these functions has checked its shape.

import type { ErrorCode } from "./errors.js";
import { isErrorCode } from "./errors.js";
import { isOipDatatype, type ModelSignature, type TensorSpec } from "./datatypes.js";
import type { TensorData, WireTensor } from "./tensor.js";

// ---------------------------------------------------------------- edge -> region (HTTP)

/** What a region needs to load a model version on a node: where its bytes are and what they hash to. */
export interface ModelRef {
  /** Unique per (model, version) across the mesh, e.g. `<modelId>@<version>`. */
  key: string;
  name: string;
  version: number;
  sha256: string;
  size: number;
  /** Signed, time-limited URL the node downloads the artifact from. */
  artifactUrl: string;
  signature: ModelSignature;
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
}

export type RegionInferResponse =
  | { ok: true; outputs: WireTensor[]; node: string; timing: Timing }
  | { ok: false; code: ErrorCode; message: string };

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
    }
  | {
      t: "heartbeat";
      inflight: number;
      /** Calls waiting on the node (in a batch window). */
      queued: number;
      /** Share of the last interval spent running models, 0..1. */
      utilisation: number;
      warm: WarmModel[];
    }
  /** The node finishes what it has and takes nothing new. */
  | { t: "draining" }
  | { t: "load_progress"; key: string; bytes: number; total: number }
  | { t: "loaded"; key: string; loadMs: number; downloadMs: number; cached: boolean; memoryMb: number }
  | { t: "load_failed"; key: string; message: string }
  | { t: "result"; id: string; outputs: WireTensor[]; inferMs: number }
  | { t: "error"; id: string; code: ErrorCode; message: string };

export type RouterToNode =
  | { t: "welcome"; region: string }
  | { t: "load"; key: string; url: string; sha256: string; size: number; signature: ModelSignature }
  | { t: "unload"; key: string }
  | { t: "cancel"; id: string }
  | { t: "infer"; id: string; key: string; inputs: WireTensor[]; outputs?: string[] };

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

function signature(v: unknown): ModelSignature {
  const sig = rec(v, "signature");
  return { inputs: arr(sig, "inputs", 1024).map(tensorSpec), outputs: arr(sig, "outputs", 1024).map(tensorSpec) };
}

export function parseModelRef(v: unknown): ModelRef {
  const o = rec(v, "model");
  return {
    key: str(o, "key"),
    name: str(o, "name"),
    version: num(o, "version"),
    sha256: str(o, "sha256", 64),
    size: num(o, "size"),
    artifactUrl: str(o, "artifactUrl"),
    signature: signature(o.signature),
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
      timing: { queueMs: num(t, "queueMs"), loadMs: num(t, "loadMs"), inferMs: num(t, "inferMs"), regionMs: num(t, "regionMs") },
    };
  }
  return { ok: false, code: code(o), message: str(o, "message") };
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
      };
    }
    case "heartbeat":
      return {
        t: "heartbeat",
        inflight: num(o, "inflight"),
        queued: num(o, "queued"),
        utilisation: num(o, "utilisation"),
        warm: warmList(o),
      };
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
      return { t: "result", id: str(o, "id", 128), outputs: tensors(o, "outputs"), inferMs: num(o, "inferMs") };
    case "error":
      return { t: "error", id: str(o, "id", 128), code: code(o), message: str(o, "message") };
    default:
      throw new MessageError(`unknown frame type ${frameType(o.t)}`);
  }
}

export function parseRouterMessage(v: unknown): RouterToNode {
  const o = rec(v, "frame");
  switch (o.t) {
    case "welcome":
      return { t: "welcome", region: str(o, "region", 128) };
    case "load":
      return {
        t: "load",
        key: str(o, "key"),
        url: str(o, "url"),
        sha256: str(o, "sha256", 64),
        size: num(o, "size"),
        signature: signature(o.signature),
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
      };
    }
    default:
      throw new MessageError(`unknown frame type ${frameType(o.t)}`);
  }
}

/** Close codes used on the node socket (RFC 6455 and the registered 4xxx application range). */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  tooBig: 1009,
  internalError: 1011,
  restart: 1012,
  unauthorized: 4401,
} as const;

/** Bounds on what a socket or body may carry; msgpack decoding has no quotas of its own. */
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
export const MAX_INFER_BODY_BYTES = 32 * 1024 * 1024;
