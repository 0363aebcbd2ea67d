// The Open Inference Protocol's model endpoints: metadata, readiness and inference, for
// `/v2/models/{m}` and `/v2/models/{m}/versions/{v}` (v = a number, an alias or `latest`).

import type { Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
import { type RegionInferRequest } from "../../protocol/messages.js";
import { artifactUrl as signArtifactUrl } from "../../protocol/signing.js";
import { parseInferRequest, TensorError, toJsonTensor } from "../../protocol/tensor.js";
import { usageEvents } from "../../schema/schema.js";
import type { AppContext, AppEnv } from "../context.js";
import { limitBody, readJson, requireKey } from "../middleware.js";
import { modelKey, requireModel, resolveVersion, type ModelInfo, type VersionInfo } from "../model-registry.js";
import { callerLocation } from "../geo.js";
import { forwardInfer, rankRegions } from "../region-client.js";
import { recordCall, regionState } from "../region-state.js";
import { log } from "../log.js";

export const MAX_INFER_BODY = 8 * 1024 * 1024;
const ARTIFACT_URL_TTL_MS = 15 * 60_000;
const PLATFORM = "onnxruntime_onnx";

// Artifact URLs are signed once and reused while they have most of their life left.
const artifactUrls = new Map<string, { url: string; expires: number }>();

async function artifactUrl(c: AppContext, sha256: string): Promise<string> {
  const now = Date.now();
  const origin = new URL(c.req.url).origin;
  const hit = artifactUrls.get(origin + sha256);
  if (hit && hit.expires - now > ARTIFACT_URL_TTL_MS / 2) return hit.url;
  const expires = now + ARTIFACT_URL_TTL_MS;
  const url = await signArtifactUrl(c.get("config").meshSecret, origin, sha256, expires);
  if (artifactUrls.size > 10_000) artifactUrls.clear();
  artifactUrls.set(origin + sha256, { url, expires });
  return url;
}

async function resolve(c: AppContext): Promise<{ model: ModelInfo; version: VersionInfo }> {
  const model = await requireModel(c.get("db"), c.get("key").accountId, c.req.param("m")!);
  return { model, version: resolveVersion(model, c.req.param("v")) };
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
  return c.json({ name: model.name, ready: true });
}

async function infer(c: AppContext) {
  const { model, version } = await resolve(c);
  const body = await readJson(c.req.raw);
  let parsed;
  try {
    parsed = parseInferRequest(body, version.signature);
  } catch (err) {
    if (err instanceof TensorError) throw new MeshError("invalid_tensor", err.message);
    throw err;
  }
  const config = c.get("config");
  const requestId = c.get("requestId");
  const key = modelKey(model, version);
  const request: RegionInferRequest = {
    requestId,
    model: {
      key,
      name: model.name,
      version: version.version,
      sha256: version.sha256,
      size: version.size,
      artifactUrl: await artifactUrl(c, version.sha256),
      signature: version.signature,
    },
    inputs: parsed.inputs,
    ...(parsed.outputs ? { outputs: parsed.outputs } : {}),
    deadline: deadlineFor(c),
  };
  const waitUntil = (p: Promise<unknown>) => c.executionCtx.waitUntil(p);
  const caller = callerLocation(c.req.raw, config.localMode);
  const state = await regionState(config, waitUntil);
  const ranked = rankRegions(config, state, caller, key, model.regions);
  if (ranked.length === 0 && model.regions) {
    throw new MeshError(
      "no_region_available",
      `model '${model.name}' may only run in ${model.regions.join(", ")}, and none of them is available now`,
      { "retry-after": "1" },
    );
  }
  const beforeForward = Date.now();
  let result;
  try {
    result = await forwardInfer(config, ranked, request, caller.colo);
  } catch (err) {
    recordUsage(c, model, version, null, null, err instanceof MeshError ? err.status : 500, { queueMs: 0, inferMs: 0 });
    throw err;
  }
  const { response, region, roundTripMs } = result;
  const total = Date.now() - c.get("startedAt");
  c.header("x-mesh-region", region);
  if (!response.ok) {
    recordUsage(c, model, version, region, null, 500, { queueMs: 0, inferMs: 0 });
    recordCall(region, caller.colo, total, null, 500);
    throw new MeshError(response.code, response.message);
  }
  const t = response.timing;
  recordCall(region, caller.colo, total, roundTripMs - t.regionMs, 200);
  const edgeMs = Math.max(0, total - roundTripMs);
  const networkMs = Math.max(0, roundTripMs - t.regionMs);
  c.header(
    "Server-Timing",
    [
      `edge;dur=${edgeMs}`,
      `network;dur=${networkMs.toFixed(2)}`,
      `region;dur=${t.regionMs.toFixed(2)}`,
      `queue;dur=${t.queueMs.toFixed(2)}`,
      `load;dur=${t.loadMs.toFixed(2)}`,
      `infer;dur=${t.inferMs.toFixed(2)}`,
      `total;dur=${total}`,
    ].join(", "),
  );
  c.header("x-mesh-node", response.node);
  c.header("x-mesh-colo", caller.colo);
  c.header("x-mesh-version", String(version.version));
  recordUsage(c, model, version, region, response.node, 200, t, beforeForward);
  return c.json({
    model_name: model.name,
    model_version: String(version.version),
    ...(parsed.id !== undefined ? { id: parsed.id } : {}),
    outputs: response.outputs.map(toJsonTensor),
  });
}

/** Usage is written after the answer is sent (waitUntil), so billing never slows a caller. */
function recordUsage(
  c: AppContext,
  model: ModelInfo,
  version: VersionInfo,
  region: string | null,
  node: string | null,
  status: number,
  t: { queueMs: number; inferMs: number },
  edgeDone = Date.now(),
): void {
  const key = c.get("key");
  const requestId = c.get("requestId");
  const write = c
    .get("db")
    .insert(usageEvents)
    .values({
      requestId,
      accountId: key.accountId,
      keyId: key.id,
      modelId: model.id,
      version: version.version,
      region,
      node,
      status,
      edgeMs: Math.round(edgeDone - c.get("startedAt")),
      queueMs: Math.round(t.queueMs),
      inferMs: Math.round(t.inferMs),
    })
    .run()
    .catch((err: unknown) => log("warn", requestId, "usage event not recorded", { error: String(err) }));
  c.executionCtx.waitUntil(write);
}

export function registerV2Models(app: Hono<AppEnv>): void {
  const auth = requireKey("infer");
  for (const base of ["/v2/models/:m", "/v2/models/:m/versions/:v"]) {
    app.get(base, auth, metadata);
    app.get(`${base}/ready`, auth, ready);
    app.post(`${base}/infer`, auth, limitBody(MAX_INFER_BODY), infer);
  }
}
