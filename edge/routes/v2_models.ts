// The Open Inference Protocol's model endpoints: metadata, readiness and inference, for
// `/v2/models/{m}` and `/v2/models/{m}/versions/{v}` (v = a number, an alias or `latest`).
//
// Inference: the version comes from the caller (a number or alias), else from the model's split
// (sticky per caller), else `latest`; every answer names it (`x-mesh-version`, `model_version`).
// Shadow copies start after the caller's answer is ready and are never waited for. Usage is
// buffered and written after the answer (usage.ts). `x-mesh-dry-run: 1` stops a call right
// before it is forwarded (key check, limits, model, version choice, input validation and region
// choice all done) and answers what it would have done: a measurement aid for the edge's own
// overhead (bench/edge-overhead.ts), never billed as compute.

import type { Hono } from "hono";
import { z } from "zod";
import { ERROR_STATUS, MeshError } from "../../protocol/errors.js";
import { type Timing } from "../../protocol/messages.js";
import { BinaryFramingError, BinaryInputs, binaryOutputChoice, encodeInferResponse, INFERENCE_HEADER, splitBinaryBody } from "../../protocol/binary-tensors.js";
import { TensorError, toJsonTensor, type ParsedInferRequest, type WireTensor } from "../../protocol/tensor.js";
import { checkInferRequest, InferRequestSchema, JsonTensorSchema, TensorSpecSchema } from "../infer-request.js";
import { services, waitUntilOf, type AppContext, type AppEnv } from "../context.js";
import { callerLocation } from "../geo.js";
import { log } from "../log.js";
import { clientAcceptEncoding, encodingHeaders, readBody } from "../content-encoding.js";
import { chargeQuota, limitBody, requireKey } from "../middleware.js";
import { modelKey, requireModel, resolveVersion, routeVersion, type ModelInfo, type VersionInfo } from "../model-registry.js";
import { describeRoute } from "../openapi.js";
import { forwardInfer, rankRegions, type RankedRegion, type UnsignedInferRequest } from "../region-client.js";
import { readyRegions } from "../readiness.js";
import { recordCall, regionState } from "../region-state.js";
import { publicMessage } from "../node-errors.js";
import { compareOutputs } from "../shadow.js";
import { pickShadows, stickyKey } from "../traffic.js";
import { recordUsage, type UsageEvent } from "../usage.js";
import { formatTraceparent } from "../../protocol/trace-context.js";

export const MAX_INFER_BODY = 8 * 1024 * 1024;
const PLATFORM = "onnxruntime_onnx";

async function resolve(c: AppContext): Promise<{ model: ModelInfo; version: VersionInfo }> {
  const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m")!);
  const version = resolveVersion(model, c.req.param("v"));
  c.header("x-mesh-version", String(version.version));
  return { model, version };
}

function deadlineFor(c: AppContext): number {
  const max = c.get("config").inferTimeoutMs;
  const asked = Number(c.req.header("x-mesh-timeout-ms"));
  const timeout = Number.isFinite(asked) && asked > 0 ? Math.min(asked, max) : max;
  return c.get("startedAt") + timeout;
}

async function metadata(c: AppContext) {
  const { model, version } = await resolve(c);
  return c.json({
    name: model.name,
    versions: model.versions.map((v) => String(v.version)),
    platform: PLATFORM,
    inputs: version.signature.inputs,
    outputs: version.signature.outputs,
  });
}

async function ready(c: AppContext) {
  const { model } = await resolve(c);
  const config = c.get("config");
  const ready = readyRegions(config, await regionState(config, waitUntilOf(c)), model.regions).length > 0;
  return c.json({ name: model.name, ready }, ready ? 200 : 503);
}

/** Adds headers to an error on its way out (the version that would have served, the region). */
function withHeaders(err: unknown, headers: Record<string, string>): unknown {
  if (err instanceof MeshError) Object.assign(err.headers, headers);
  return err;
}

async function rankFor(c: AppContext, model: ModelInfo, version: VersionInfo): Promise<RankedRegion[]> {
  const config = c.get("config");
  const caller = callerLocation(c.req.raw, config.localMode);
  const state = await regionState(config, (p) => c.executionCtx.waitUntil(p));
  const ranked = rankRegions(config, state, caller, modelKey(model, version), model.regions);
  if (ranked.length === 0 && model.regions) {
    throw new MeshError(
      "no_region_available",
      `model '${model.name}' may only run in ${model.regions.join(", ")}, and none of them is available now`,
      { "retry-after": "1" },
    );
  }
  return ranked;
}

type Outcome = (
  | { ok: true; region: string; node: string; outputs: WireTensor[]; timing: Timing; roundTripMs: number; total: number }
  | { ok: false; region: string | null; error: MeshError }
) & {
  /** The call's usage row, for the caller of runCall to record (a shadow's, after comparing). */
  usage: UsageEvent;
};

interface CallPlan {
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
type UsageTimes = { queueMs: number; inferMs: number; computeMs?: number };

function usageRow(c: AppContext, plan: CallPlan, version: number, status: number, region: string | null, node: string | null, t: UsageTimes, edgeMs: number): UsageEvent {
  const key = c.get("key");
  return {
    requestId: plan.requestId,
    accountId: key.accountId,
    keyId: key.id,
    modelId: plan.model.id,
    version,
    region,
    node,
    status,
    edgeMs: Math.round(edgeMs),
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

const NO_TIME: UsageTimes = { queueMs: 0, inferMs: 0 };

/** Forwards one call to a region; never throws (the outcome says, with its usage row). */
async function runCall(c: AppContext, plan: CallPlan): Promise<Outcome> {
  const { model, version, parsed } = plan;
  const config = c.get("config");
  const colo = callerLocation(c.req.raw, config.localMode).colo;
  const usage = (region: string | null, node: string | null, status: number, t: UsageTimes, edgeMs: number) =>
    usageRow(c, plan, version.version, status, region, node, t, edgeMs);
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

/** Runs the shadow copies of a call once its own answer is in; logs and records the comparison. */
async function runShadows(c: AppContext, body: InferBody, served: CallPlan, servedOutcome: Promise<Outcome>, versions: number[]): Promise<void> {
  const primary = await servedOutcome;
  await Promise.all(
    versions.map(async (n) => {
      const startedAt = Date.now();
      const plan: CallPlan = {
        ...served,
        // Cut the served id, not the suffix: a shadow must never share the served call's id,
        // which regions treat as an idempotency key.
        requestId: `${served.requestId.slice(0, 64 - `.shadow-v${n}`.length)}.shadow-v${n}`,
        startedAt,
        deadline: startedAt + c.get("config").inferTimeoutMs,
        shadowOf: served.version.version,
      };
      const failed = (error: MeshError): Outcome => ({ ok: false, region: null, error, usage: usageRow(c, plan, n, error.status, null, null, NO_TIME, 0) });
      let outcome: Outcome;
      const version = served.model.versions.find((v) => v.version === n);
      if (!version) {
        outcome = failed(new MeshError("version_not_found", `version ${n} is gone`));
      } else {
        let parsed: ParsedInferRequest | null = null;
        try {
          parsed = parseWith(body, version.signature);
        } catch (err) {
          if (!(err instanceof TensorError)) throw err;
          outcome = failed(new MeshError("invalid_tensor", err.message));
        }
        if (parsed) {
          const ranked = await rankFor(c, served.model, version).catch(() => [] as RankedRegion[]);
          outcome = await runCall(c, { ...plan, version, parsed, ranked });
        }
      }
      outcome ??= failed(new MeshError("internal_error", "internal error"));
      const comparison = primary.ok && outcome.ok ? compareOutputs(primary.outputs.map(toJsonTensor), outcome.outputs.map(toJsonTensor)) : null;
      log(outcome.ok ? "info" : "warn", served.requestId, "shadow call", {
        model: served.model.name,
        served: served.version.version,
        shadow: n,
        servedStatus: primary.ok ? 200 : primary.error.status,
        shadowStatus: outcome.ok ? 200 : outcome.error.status,
        ...(outcome.ok ? {} : { shadowError: outcome.error.code }),
        ...(comparison ? { matched: comparison.matched, maxAbsDiff: comparison.maxAbsDiff, reason: comparison.reason } : {}),
      });
      recordUsage(c.get("db"), { ...outcome.usage, matched: comparison ? (comparison.matched ? 1 : 0) : null }, (p) => c.executionCtx.waitUntil(p));
    }),
  );
}

/** A call's body: the JSON object, and the binary part after it when the caller sent one. */
interface InferBody {
  json: unknown;
  binary?: Uint8Array;
}

/**
 * Reads a call's body (decompressed, bounded): plain JSON, or with Inference-Header-Content-Length
 * (Triton's binary tensor data extension) a JSON header and the tensors' bytes after it.
 */
async function readInferBody(c: AppContext): Promise<InferBody> {
  const bytes = await readBody(c.req.raw, MAX_INFER_BODY);
  const headerLength = c.req.header(INFERENCE_HEADER);
  let text: string;
  let binary: Uint8Array | undefined;
  if (headerLength === undefined) {
    text = new TextDecoder().decode(bytes);
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
function parseWith(body: InferBody, signature: VersionInfo["signature"]): ParsedInferRequest {
  return checkInferRequest(body.json, signature, body.binary ? new BinaryInputs(body.binary) : undefined);
}

async function infer(c: AppContext) {
  const s = services(c);
  const key = c.get("key");
  const requestId = c.get("requestId");
  const model = await requireModel(s, key.accountId, c.req.param("m")!);
  const body = await readInferBody(c);
  const oipId = typeof body.json === "object" && body.json !== null ? (body.json as { id?: unknown }).id : undefined;
  const { version, via } = routeVersion(model, c.req.param("v"), stickyKey(c.req.header("x-mesh-sticky"), oipId));
  const versionHeaders = { "x-mesh-version": String(version.version), "x-mesh-route": via };
  for (const [k, v] of Object.entries(versionHeaders)) c.header(k, v);
  let parsed: ParsedInferRequest;
  let asBinary: (name: string) => boolean;
  try {
    parsed = parseWith(body, version.signature);
    asBinary = binaryOutputChoice(body.json);
  } catch (err) {
    if (!(err instanceof TensorError)) throw err;
    recordUsage(
      s.db,
      {
        requestId,
        accountId: key.accountId,
        keyId: key.id,
        modelId: model.id,
        version: version.version,
        region: null,
        node: null,
        status: 400,
        edgeMs: Date.now() - c.get("startedAt"),
        queueMs: 0,
        inferMs: 0,
        shadowOf: null,
        matched: null,
        createdAt: c.get("startedAt"),
      },
      s.waitUntil,
    );
    throw new MeshError("invalid_tensor", err.message, versionHeaders);
  }
  let ranked: RankedRegion[];
  try {
    await chargeQuota(c);
    ranked = await rankFor(c, model, version);
  } catch (err) {
    throw withHeaders(err, versionHeaders);
  }
  if (c.req.header("x-mesh-dry-run") === "1") {
    return c.json({ dryRun: true, model_name: model.name, model_version: String(version.version), route: via, region: ranked[0]?.region.name ?? null });
  }
  const plan: CallPlan = {
    model,
    version,
    parsed,
    ranked,
    requestId,
    deadline: deadlineFor(c),
    startedAt: c.get("startedAt"),
    shadowOf: null,
    traceparent: formatTraceparent(c.get("trace")),
  };
  const outcome = runCall(c, plan).then((o) => {
    recordUsage(s.db, o.usage, s.waitUntil);
    return o;
  });
  const shadows = pickShadows(model.traffic, version.version);
  if (shadows.length > 0) {
    // Chained after the caller's own call: a shadow never competes with it, and nothing here
    // is awaited by the response.
    c.executionCtx.waitUntil(
      runShadows(c, body, plan, outcome, shadows).catch((err: unknown) => log("warn", requestId, "shadow failed", { error: String(err) })),
    );
  }
  const result = await outcome;
  if (!result.ok) throw withHeaders(result.error, { ...versionHeaders, ...(result.region ? { "x-mesh-region": result.region } : {}) });
  const t = result.timing;
  const networkMs = Math.max(0, result.roundTripMs - t.regionMs);
  const edgeMs = Math.max(0, result.total - result.roundTripMs);
  c.header(
    "Server-Timing",
    [
      `edge;dur=${edgeMs};desc="${c.get("trace").spanId}"`,
      `network;dur=${networkMs.toFixed(2)}`,
      // A phase a span measured names it (desc: its span id in the response's trace).
      `region;dur=${t.regionMs.toFixed(2)}${t.trace ? `;desc="${t.trace.router}"` : ""}`,
      `queue;dur=${t.queueMs.toFixed(2)}`,
      `load;dur=${t.loadMs.toFixed(2)}`,
      `infer;dur=${t.inferMs.toFixed(2)}${t.trace?.node ? `;desc="${t.trace.node}"` : ""}`,
      // The session time the node billed (its share of a batch): what usage counts.
      ...(t.computeMs !== undefined ? [`compute;dur=${t.computeMs.toFixed(2)}`] : []),
      `total;dur=${result.total}`,
    ].join(", "),
  );
  c.header("x-mesh-region", result.region);
  c.header("x-mesh-node", result.node);
  c.header("x-mesh-colo", callerLocation(c.req.raw, c.get("config").localMode).colo);
  const head = { model_name: model.name, model_version: String(version.version), ...(parsed.id !== undefined ? { id: parsed.id } : {}) };
  const answer = encodeInferResponse(head, result.outputs, asBinary);
  const size = typeof answer.body === "string" ? answer.body.length : answer.body.byteLength;
  return c.body(answer.body, 200, {
    ...encodingHeaders(clientAcceptEncoding(c.req.raw), size),
    ...(answer.headerLength === undefined
      ? { "content-type": "application/json" }
      : { "content-type": "application/octet-stream", [INFERENCE_HEADER]: String(answer.headerLength) }),
  });
}

// ---------------------------------------------------------------------------------------------
// Schemas and registration

export const InferResponseSchema = z.object({
  model_name: z.string(),
  model_version: z.string().describe("The version that served the call (also `x-mesh-version`)."),
  id: z.string().optional(),
  outputs: z.array(JsonTensorSchema),
});

const DryRunSchema = z.object({
  dryRun: z.literal(true),
  model_name: z.string(),
  model_version: z.string(),
  route: z.enum(["named", "split", "latest"]),
  region: z.string().nullable(),
});

const ModelMetadataSchema = z.object({
  name: z.string(),
  versions: z.array(z.string()).describe("Live versions, newest first."),
  platform: z.string(),
  inputs: z.array(TensorSpecSchema),
  outputs: z.array(TensorSpecSchema),
});

const VERSION_HEADER = { "x-mesh-version": "The version that answered." };
const INFER_HEADERS = {
  "x-mesh-version": "The version that served the call (on errors too, once chosen).",
  "x-mesh-route": "How the version was chosen: `named` (by the caller), `split` (traffic rule) or `latest`.",
  "x-mesh-region": "The region that ran the call.",
  "x-mesh-node": "The node that ran the call.",
  "server-timing": "edge, network, region, queue, load, infer, compute (billed), total (ms); edge, region and infer name their span in `desc`.",
  "inference-header-content-length": "On a binary answer (`application/octet-stream`): the length of its JSON part; the outputs' bytes follow.",
  "content-encoding": "`gzip` when the caller accepts it and the answer is 1 KiB or more.",
  vary: "`Accept-Encoding`.",
  "x-ratelimit-limit": "The key's sustained rate, calls per second.",
  "x-ratelimit-remaining": "Calls the key could make at once right now.",
};

const BINARY_NOTE =
  "Inputs and outputs may travel as raw bytes (Triton's binary tensor data extension: `Inference-Header-Content-Length`, `binary_data_size`, `binary_data`, `binary_data_output`); bodies may be gzip or deflate compressed.";

function describeV2(base: string, versioned: boolean): void {
  const params: Record<string, string> = { m: "Model name." };
  if (versioned) params.v = "A version number, an alias (e.g. `prod`) or `latest`.";
  describeRoute({
    method: "get",
    path: base,
    tag: "Inference",
    auth: "infer",
    summary: versioned ? "Model metadata of one version" : "Model metadata (of `latest`)",
    params,
    responses: { 200: { description: "Name, versions, platform, inputs and outputs.", schema: ModelMetadataSchema, headers: VERSION_HEADER } },
    errors: ["model_not_found", "version_not_found"],
  });
  describeRoute({
    method: "get",
    path: `${base}/ready`,
    tag: "Inference",
    auth: "infer",
    summary: "Model readiness",
    params,
    responses: { 200: { description: "Ready.", schema: z.object({ name: z.string(), ready: z.boolean() }), headers: VERSION_HEADER } },
    errors: ["model_not_found", "version_not_found"],
  });
  describeRoute({
    method: "post",
    path: `${base}/infer`,
    tag: "Inference",
    auth: "infer",
    summary: versioned ? "Inference on a named version (number or alias)" : "Inference (the model's split, else `latest`)",
    description: versioned
      ? "Runs the call on exactly the version named. Shadow copies of the model's traffic rule still apply. " + BINARY_NOTE
      : "The version comes from the model's traffic rule (weighted split, sticky per `x-mesh-sticky` or the OIP `id`), else `latest`. " +
        BINARY_NOTE,
    params,
    headers: {
      "x-mesh-sticky": "Sticky key for a split: the same key keeps landing on the same version while the split is unchanged.",
      "x-mesh-timeout-ms": "Shortens the call's deadline (default and maximum INFER_TIMEOUT_MS).",
      "x-mesh-dry-run": "`1`: do everything up to forwarding and answer what would have happened (a measurement aid; no compute).",
      "inference-header-content-length":
        "Triton's binary tensor data extension: the body is this many bytes of JSON, then the binary inputs' data in order (docs/binary-tensors.md).",
      "content-encoding": "`gzip` or `deflate`: the body is compressed (the size limit applies to it decompressed too).",
      "accept-encoding": "`gzip`: answers of 1 KiB or more come back gzipped.",
    },
    body: { schema: InferRequestSchema, maxBytes: MAX_INFER_BODY, example: { id: "a1", inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] } },
    responses: {
      200: { description: "The outputs (or, with `x-mesh-dry-run: 1`, what would have run).", schema: z.union([InferResponseSchema, DryRunSchema]), headers: INFER_HEADERS },
    },
    errors: [
      "invalid_tensor",
      "unsupported_media_type",
      "model_not_found",
      "version_not_found",
      "quota_exceeded",
      "inference_failed",
      "region_error",
      "node_error",
      "no_region_available",
      "no_capacity",
      "deadline_exceeded",
    ],
  });
}

export function registerV2Models(app: Hono<AppEnv>): void {
  const auth = requireKey("infer");
  for (const base of ["/v2/models/:m", "/v2/models/:m/versions/:v"]) {
    app.get(base, auth, metadata);
    app.get(`${base}/ready`, auth, ready);
    app.post(`${base}/infer`, auth, limitBody(MAX_INFER_BODY), infer);
  }
  describeV2("/v2/models/{m}", false);
  describeV2("/v2/models/{m}/versions/{v}", true);
}
