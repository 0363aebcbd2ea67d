// The Open Inference Protocol's model endpoints: metadata, readiness and inference, for
// `/v2/models/{m}` and `/v2/models/{m}/versions/{v}` (v = a number, an alias or `latest`).
//
// Inference: the version comes from the caller (a number or alias), else from the model's split
// (sticky per caller), else `latest`; every answer names it (`x-mesh-version`, `model_version`).
// The call itself runs in infer-call.ts, its shadow copies in shadow-calls.ts (after the caller's
// answer is ready, never waited for). Usage is buffered and written after the answer (usage.ts).
// `x-mesh-dry-run: 1` stops a call right before it is forwarded (key check, limits, model,
// version choice, input validation and region choice all done) and answers what it would have
// done: a measurement aid for the edge's own overhead (bench/edge-overhead.ts), never billed.

import { z } from "zod";
import { MeshError } from "../../protocol/errors.js";
import { binaryOutputChoice, encodeInferResponse, INFERENCE_HEADER } from "../../formats/binary-tensors.js";
import { TensorError, type ParsedInferRequest } from "../../formats/tensor.js";
import { formatTraceparent } from "../../protocol/trace-context.js";
import { deadlineOf, services, waitUntilOf, type AppContext } from "../context.js";
import { clientAcceptEncoding, encodingHeaders } from "../content-encoding.js";
import { callerLocation } from "../geo.js";
import { MAX_INFER_BODY, NO_TIME, parseWith, rankFor, readInferBody, runCall, serverTiming, usageRow, type CallPlan, type CallScope } from "../infer-call.js";
import { InferRequestSchema, JsonTensorSchema, TensorSpecSchema } from "../infer-request.js";
import { log } from "../log.js";
import { chargeQuota, limitBody, requireKey } from "../middleware.js";
import { requireModel, resolveVersion, routeVersion, type ModelInfo, type VersionInfo } from "../model-registry.js";
import { meshRoute, RUN_ERRORS, type MeshApp } from "../openapi.js";
import { readyRegions } from "../readiness.js";
import { regionState } from "../region-state.js";
import { runShadows } from "../shadow-calls.js";
import { pickShadows, stickyKey } from "../traffic.js";
import { recordUsage } from "../usage.js";

export { MAX_INFER_BODY };
const PLATFORM = "onnxruntime_onnx";

async function resolve(c: AppContext): Promise<{ model: ModelInfo; version: VersionInfo }> {
  const model = await requireModel(services(c), c.get("key").accountId, c.req.param("m")!);
  const version = resolveVersion(model, c.req.param("v"));
  c.header("x-mesh-version", String(version.version));
  return { model, version };
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

async function infer(c: AppContext) {
  const requestId = c.get("requestId");
  const startedAt = c.get("startedAt");
  const scope: CallScope = { services: services(c), key: c.get("key"), caller: callerLocation(c.req.raw, c.get("config").localMode) };
  const model = await requireModel(scope.services, scope.key.accountId, c.req.param("m")!);
  const body = await readInferBody(c.req.raw);
  const oipId = typeof body.json === "object" && body.json !== null ? (body.json as { id?: unknown }).id : undefined;
  const { version, via } = routeVersion(model, c.req.param("v"), stickyKey(c.req.header("x-mesh-sticky"), oipId));
  const versionHeaders = { "x-mesh-version": String(version.version), "x-mesh-route": via };
  for (const [k, v] of Object.entries(versionHeaders)) c.header(k, v);
  const call = { ...scope, model, requestId, startedAt, shadowOf: null };
  let parsed: ParsedInferRequest;
  let asBinary: (name: string) => boolean;
  try {
    parsed = parseWith(body, version.signature);
    asBinary = binaryOutputChoice(body.json);
  } catch (err) {
    if (!(err instanceof TensorError)) throw err;
    const end = { version: version.version, status: 400, region: null, node: null, times: NO_TIME, edgeMs: Date.now() - startedAt };
    recordUsage(scope.services, usageRow(call, end));
    throw new MeshError("invalid_tensor", err.message, versionHeaders);
  }
  let plan: CallPlan;
  try {
    await chargeQuota(c);
    plan = { ...call, version, parsed, ranked: await rankFor(scope, model, version), deadline: deadlineOf(c, startedAt), traceparent: formatTraceparent(c.get("trace")) };
  } catch (err) {
    throw withHeaders(err, versionHeaders);
  }
  if (c.req.header("x-mesh-dry-run") === "1") {
    return c.json({ dryRun: true, model_name: model.name, model_version: String(version.version), route: via, region: plan.ranked[0]?.region.name ?? null });
  }
  const outcome = runCall(plan).then((o) => {
    recordUsage(scope.services, o.usage);
    return o;
  });
  const shadows = pickShadows(model.traffic, version.version);
  if (shadows.length > 0) {
    scope.services.waitUntil(runShadows(body, plan, outcome, shadows).catch((err: unknown) => log("warn", requestId, "shadow failed", { error: String(err) })));
  }
  const result = await outcome;
  if (!result.ok) throw withHeaders(result.error, { ...versionHeaders, ...(result.region ? { "x-mesh-region": result.region } : {}) });
  c.header("Server-Timing", serverTiming(result, c.get("trace").spanId));
  c.header("x-mesh-region", result.region);
  c.header("x-mesh-node", result.node);
  c.header("x-mesh-colo", scope.caller.colo);
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

function registerV2(app: MeshApp, base: string, versioned: boolean): void {
  const auth = requireKey("infer");
  const params: Record<string, string> = { m: "Model name." };
  if (versioned) params.v = "A version number, an alias (e.g. `prod`) or `latest`.";
  // What every route of a model shares: who may call, its parameters, its not-found answers.
  const model = { tag: "Inference", auth: "infer", params, errors: ["model_not_found", "version_not_found"], middleware: [auth] } as const;
  const resolved = (description: string, schema: z.ZodType) => ({ 200: { description, schema, headers: VERSION_HEADER } });
  app.openapi(
    meshRoute({ ...model, method: "get", path: base, summary: versioned ? "Model metadata of one version" : "Model metadata (of `latest`)", responses: resolved("Name, versions, platform, inputs and outputs.", ModelMetadataSchema) }),
    metadata,
  );
  app.openapi(
    meshRoute({ ...model, method: "get", path: `${base}/ready`, summary: "Model readiness", responses: resolved("Ready.", z.object({ name: z.string(), ready: z.boolean() })) }),
    ready,
  );
  app.openapi(
    meshRoute({
      ...model,
      method: "post",
      path: `${base}/infer`,
      summary: versioned ? "Inference on a named version (number or alias)" : "Inference (the model's split, else `latest`)",
      description: versioned
        ? "Runs the call on exactly the version named. Shadow copies of the model's traffic rule still apply. " + BINARY_NOTE
        : "The version comes from the model's traffic rule (weighted split, sticky per `x-mesh-sticky` or the OIP `id`), else `latest`. " + BINARY_NOTE,
      headers: {
        "x-mesh-sticky": "Sticky key for a split: the same key keeps landing on the same version while the split is unchanged.",
        "x-mesh-timeout-ms": "Shortens the call's deadline (default and maximum INFER_TIMEOUT_MS).",
        "x-mesh-dry-run": "`1`: do everything up to forwarding and answer what would have happened (a measurement aid; no compute).",
        "inference-header-content-length":
          "Triton's binary tensor data extension: the body is this many bytes of JSON, then the binary inputs' data in order (docs/binary-tensors.md).",
        "content-encoding": "`gzip` or `deflate`: the body is compressed (the size limit applies to it decompressed too).",
        "accept-encoding": "`gzip`: answers of 1 KiB or more come back gzipped.",
      },
      // Checked by the handler (infer-call.ts readInferBody, then checkInferRequest): the body may
      // be compressed or carry binary tensors after its JSON, which a JSON validator cannot read,
      // and the tensors' data goes through the typed fast path, never element by element through zod.
      body: {
        schema: InferRequestSchema,
        checkedBy: "handler",
        maxBytes: MAX_INFER_BODY,
        example: { id: "a1", inputs: [{ name: "x", datatype: "FP32", shape: [1, 4], data: [1, 2, 3, 4] }] },
      },
      responses: {
        200: { description: "The outputs (or, with `x-mesh-dry-run: 1`, what would have run).", schema: z.union([InferResponseSchema, DryRunSchema]), headers: INFER_HEADERS },
      },
      errors: ["invalid_tensor", "unsupported_media_type", ...RUN_ERRORS],
      middleware: [auth, limitBody(MAX_INFER_BODY)],
    }),
    infer,
  );
}

export function registerV2Models(app: MeshApp): void {
  registerV2(app, "/v2/models/{m}", false);
  registerV2(app, "/v2/models/{m}/versions/{v}", true);
}
