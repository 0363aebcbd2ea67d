// One inference call as the edge runs it, once the infer route has parsed and authorised it:
// read its body (plain JSON, or Triton's binary tensor data extension), check it against the
// version's signature, rank the regions, forward it to the best that takes it, and build the
// call's usage row. Nothing here throws on a region's failure: `runCall` answers an Outcome with
// its usage row, for the caller (the route, or a shadow copy) to record once it knows more.

import { ERROR_STATUS, MeshError } from "../protocol/errors.js";
import type { Timing } from "../protocol/messages.js";
import { BinaryFramingError, BinaryInputs, INFERENCE_HEADER, splitBinaryBody } from "../formats/binary-tensors.js";
import type { ParsedInferRequest, WireTensor } from "../formats/tensor.js";
import type { KeyRecord } from "./api-keys.js";
import { readBody } from "./content-encoding.js";
import type { Services } from "./context.js";
import type { CallerLocation } from "./geo.js";
import { checkInferRequest } from "./infer-request.js";
import { log } from "./log.js";
import { modelKey, type ModelInfo, type VersionInfo } from "./model-registry.js";
import { publicMessage } from "./node-errors.js";
import { forwardInfer, rankRegions, type RankedRegion, type UnsignedInferRequest } from "./region-client.js";
import { rankOnFreshView, recordCall } from "./region-state.js";
import type { UsageEvent } from "./usage.js";

export const MAX_INFER_BODY = 8 * 1024 * 1024;

const utf8 = new TextDecoder();

/** A call's body: the JSON object, and the binary part after it when the caller sent one. */
export interface InferBody {
  json: unknown;
  binary?: Uint8Array;
}

/**
 * Reads a call's body (decompressed, bounded): plain JSON, or with Inference-Header-Content-Length
 * (Triton's binary tensor data extension) a JSON header and the tensors' bytes after it. Not
 * through a zod validator: the binary part is checked by the typed fast path (parseWith), and a
 * JSON body by InferRequestSchema there, so a call is parsed once.
 */
export async function readInferBody(req: Request): Promise<InferBody> {
  const bytes = await readBody(req, MAX_INFER_BODY);
  const headerLength = req.headers.get(INFERENCE_HEADER) ?? undefined;
  let text: string;
  let binary: Uint8Array | undefined;
  if (headerLength === undefined) {
    text = utf8.decode(bytes);
  } else {
    try {
      ({ json: text, binary } = splitBinaryBody(bytes, headerLength));
    } catch (err) {
      if (err instanceof BinaryFramingError) throw new MeshError("bad_request", err.message);
      throw err;
    }
  }
  if (text.length === 0) return { json: {}, ...(binary ? { binary } : {}) };
  try {
    return { json: JSON.parse(text), ...(binary ? { binary } : {}) };
  } catch {
    throw new MeshError("invalid_json", headerLength === undefined ? "request body is not valid JSON" : "the request's JSON header (Inference-Header-Content-Length bytes) is not valid JSON");
  }
}

/**
 * checkInferRequest (InferRequestSchema, then the signature's typed fast path) with a fresh
 * reader of the binary part (a shadow checks the same body again, against its own version).
 */
export function parseWith(body: InferBody, signature: VersionInfo["signature"]): ParsedInferRequest {
  return checkInferRequest(body.json, signature, body.binary ? new BinaryInputs(body.binary) : undefined);
}

/** Where and for whom a call runs: the services of its request, its key and its caller. */
export interface CallScope {
  services: Services;
  key: KeyRecord;
  caller: CallerLocation;
}

/** The regions that may run `version`, best first; 503 when the model's residency leaves none. */
export async function rankFor(scope: CallScope, model: ModelInfo, version: VersionInfo): Promise<RankedRegion[]> {
  const { config, waitUntil } = scope.services;
  const key = modelKey(model, version);
  const ranked = await rankOnFreshView(config, waitUntil, (state) => rankRegions(config, state, scope.caller, key, model.regions));
  if (ranked.length === 0 && model.regions) {
    throw new MeshError(
      "no_region_available",
      `model '${model.name}' may only run in ${model.regions.join(", ")}, and none of them is available now`,
      { "retry-after": "1" },
    );
  }
  return ranked;
}

export type Outcome = (
  | { ok: true; region: string; node: string; outputs: WireTensor[]; timing: Timing; roundTripMs: number; total: number }
  | { ok: false; region: string | null; error: MeshError }
) & {
  /** The call's usage row, for the caller of runCall to record (a shadow's, after comparing). */
  usage: UsageEvent;
};

export interface CallPlan extends CallScope {
  model: ModelInfo;
  version: VersionInfo;
  parsed: ParsedInferRequest;
  ranked: RankedRegion[];
  requestId: string;
  deadline: number;
  startedAt: number;
  /** Set for a shadow copy: the version whose call it copies. */
  shadowOf: number | null;
  /** The edge's span (W3C traceparent): the region and node open theirs under it. */
  traceparent?: string;
}

/** A call's times for its usage row; computeMs is the node's word on what it cost, when it ran. */
export type UsageTimes = { queueMs: number; inferMs: number; computeMs?: number };

export const NO_TIME: UsageTimes = { queueMs: 0, inferMs: 0 };

/** What a usage row says of where a call went and how it ended. */
export interface CallEnd {
  version: number;
  status: number;
  region: string | null;
  node: string | null;
  times: UsageTimes;
  edgeMs: number;
}

/** The usage row of a call (the route's own, a shadow's, or one refused before it ran). */
export function usageRow(plan: Pick<CallPlan, "key" | "model" | "requestId" | "startedAt" | "shadowOf">, end: CallEnd): UsageEvent {
  const t = end.times;
  return {
    requestId: plan.requestId,
    accountId: plan.key.accountId,
    keyId: plan.key.id,
    modelId: plan.model.id,
    version: end.version,
    region: end.region,
    node: end.node,
    status: end.status,
    edgeMs: Math.round(end.edgeMs),
    queueMs: Math.round(t.queueMs),
    inferMs: Math.ceil(t.inferMs),
    // Compute is billed in whole milliseconds, rounded up (a call that ran costs at least 1); a
    // failed call that ran (stopped at its deadline, refused by the runtime) is billed what it spent.
    computeMs: t.computeMs !== undefined ? Math.ceil(t.computeMs) : null,
    shadowOf: plan.shadowOf,
    matched: null,
    createdAt: plan.startedAt,
  };
}

/** Forwards one call to a region; never throws (the outcome says, with its usage row). */
export async function runCall(plan: CallPlan): Promise<Outcome> {
  const { model, version, parsed } = plan;
  const config = plan.services.config;
  const colo = plan.caller.colo;
  const usage = (region: string | null, node: string | null, status: number, times: UsageTimes, edgeMs: number) =>
    usageRow(plan, { version: version.version, status, region, node, times, edgeMs });
  let edgeMs = 0;
  try {
    // The artifact URL is added per region by forwardInfer (signed for that region, on PUBLIC_ORIGIN).
    const request: UnsignedInferRequest = {
      requestId: plan.requestId,
      model: {
        key: modelKey(model, version),
        account: model.accountId,
        name: model.name,
        version: version.version,
        sha256: version.sha256,
        size: version.size,
        signature: version.signature,
        ...(version.files ? { files: version.files } : {}),
      },
      inputs: parsed.inputs,
      ...(parsed.outputs ? { outputs: parsed.outputs } : {}),
      deadline: plan.deadline,
    };
    edgeMs = Date.now() - plan.startedAt;
    const { response, region, roundTripMs } = await forwardInfer(config, plan.ranked, request, colo, plan.traceparent);
    const total = Date.now() - plan.startedAt;
    if (!response.ok) {
      const status = ERROR_STATUS[response.code];
      if (plan.shadowOf === null) recordCall(region, colo, total, null, status, model.accountId);
      const spent = response.computeMs !== undefined ? { ...NO_TIME, computeMs: response.computeMs } : NO_TIME;
      return { ok: false, region, error: new MeshError(response.code, publicMessage(response.message)), usage: usage(region, null, status, spent, edgeMs) };
    }
    const t = response.timing;
    if (plan.shadowOf === null) recordCall(region, colo, total, roundTripMs - t.regionMs, 200, model.accountId);
    return {
      ok: true,
      region,
      node: response.node,
      // Typed arrays as they came: JSON numbers only for the outputs the caller wants as JSON.
      outputs: response.outputs,
      timing: t,
      roundTripMs,
      total,
      usage: usage(region, response.node, 200, t, edgeMs),
    };
  } catch (err) {
    const error = err instanceof MeshError ? err : new MeshError("internal_error", "internal error");
    if (!(err instanceof MeshError)) log("error", plan.requestId, "call failed", { traceparent: plan.traceparent, error: String(err) });
    return { ok: false, region: null, error, usage: usage(null, null, error.status, NO_TIME, edgeMs || Date.now() - plan.startedAt) };
  }
}

/** The answer's Server-Timing: each phase of a call that ran, the spans that measured them named in `desc`. */
export function serverTiming(result: Extract<Outcome, { ok: true }>, edgeSpanId: string): string {
  const t = result.timing;
  const networkMs = Math.max(0, result.roundTripMs - t.regionMs);
  const edgeMs = Math.max(0, result.total - result.roundTripMs);
  return [
    `edge;dur=${edgeMs};desc="${edgeSpanId}"`,
    `network;dur=${networkMs.toFixed(2)}`,
    `region;dur=${t.regionMs.toFixed(2)}${t.trace ? `;desc="${t.trace.router}"` : ""}`,
    `queue;dur=${t.queueMs.toFixed(2)}`,
    `load;dur=${t.loadMs.toFixed(2)}`,
    `infer;dur=${t.inferMs.toFixed(2)}${t.trace?.node ? `;desc="${t.trace.node}"` : ""}`,
    // The session time the node billed (its share of a batch): what usage counts.
    ...(t.computeMs !== undefined ? [`compute;dur=${t.computeMs.toFixed(2)}`] : []),
    `total;dur=${result.total}`,
  ].join(", ");
}
