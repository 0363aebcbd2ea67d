// GET /openapi.json (the whole public API as OpenAPI 3.1, built from the zod schemas each route
// file keeps beside its handlers) and GET /docs (the reference page, drawn in the browser from /openapi.json: edge/pages/docs/). Also the
// descriptions of routes whose files describe nothing themselves (health, regions, status).

import type { Hono } from "hono";
import { z } from "zod";
import type { AppEnv } from "../context.js";
import { describeRoute, openApiDocument } from "../openapi.js";
import { pageHandler } from "./pages.js";
import { SERVER_EXTENSIONS, SERVER_NAME, SERVER_VERSION } from "./health.js";

const INFO = {
  title: "inference mesh",
  version: SERVER_VERSION,
  description:
    "Upload an ONNX model, get an API key, call it through one endpoint. The data plane (`/v2`) is the Open Inference Protocol (KServe v2); " +
    "the control plane (`/v1`) manages keys, models, versions, aliases, traffic rules and usage. " +
    "A revoked key, a switched alias and a changed split reach every edge within 2 s.",
};

let cached: Record<string, unknown> | null = null;
function spec(): Record<string, unknown> {
  // Routes are all described at start-up; the document is built once per isolate.
  cached ??= openApiDocument(INFO);
  return cached;
}

export function registerDocs(app: Hono<AppEnv>): void {
  app.get("/openapi.json", (c) => c.json(spec()));
  app.get("/docs", pageHandler("docs"));

  describeRoute({
    method: "get",
    path: "/openapi.json",
    tag: "Reference",
    auth: "none",
    summary: "This API as an OpenAPI 3.1 document",
    responses: { 200: { description: "The document.", contentType: "application/json" } },
  });
  describeRoute({
    method: "get",
    path: "/docs",
    tag: "Reference",
    auth: "none",
    summary: "The API reference page (HTML; draws /openapi.json)",
    responses: { 200: { description: "HTML.", contentType: "text/html" } },
  });

  // health.ts
  describeRoute({
    method: "get",
    path: "/v2/health/live",
    tag: "Server",
    auth: "none",
    summary: "Liveness",
    responses: { 200: { description: "Live.", schema: z.object({ live: z.boolean() }) } },
  });
  describeRoute({
    method: "get",
    path: "/v2/health/ready",
    tag: "Server",
    auth: "none",
    summary: "Readiness",
    responses: { 200: { description: "Ready.", schema: z.object({ ready: z.boolean() }) } },
  });
  describeRoute({
    method: "get",
    path: "/v2",
    tag: "Server",
    auth: "none",
    summary: "Server metadata",
    responses: {
      200: {
        description: `name '${SERVER_NAME}', version, and the extensions the mesh speaks: ${SERVER_EXTENSIONS.map((e) => `\`${e}\``).join(", ")}.`,
        schema: z.object({ name: z.string(), version: z.string(), extensions: z.array(z.string()) }),
      },
    },
  });
  // internal_artifacts.ts: for nodes only, through URLs the edge signed.
  describeRoute({
    method: "get",
    path: "/internal/artifacts/{sha256}",
    tag: "Internal",
    auth: "signed",
    summary: "Model bytes for nodes (signed, time-limited URL)",
    params: { sha256: "The artifact's sha256." },
    responses: { 200: { description: "The .onnx bytes.", contentType: "application/octet-stream" } },
    errors: ["not_found"],
    internal: true,
  });
  // internal_artifacts.ts: the local stand-in for R2's S3 endpoint (local mode only), presigned URLs.
  describeRoute({
    method: "get",
    path: "/r2/*",
    tag: "Internal",
    auth: "signed",
    summary: "Local stand-in for R2's S3 endpoint: /r2/{bucket}/{key} through a SigV4 presigned URL",
    responses: { 200: { description: "The object's bytes (206 for a Range).", contentType: "application/octet-stream" } },
    errors: ["forbidden", "not_found"],
    internal: true,
  });
  // v1_regions.ts
  describeRoute({
    method: "get",
    path: "/v1/regions",
    tag: "Regions",
    auth: "infer",
    summary: "Per region: health, warm models and the latency callers got (a key: its own account's; the admin token: everyone's)",
    description:
      "With an API key, the account's own view (`scope: account`): its own warm models, the latency of its own calls per colo, its own queued calls; " +
      "nothing counted over every account (`capacity` and `inflight` are null). With the operator's admin token, the global view (`scope: operator`).",
    responses: {
      200: {
        description: "See edge/regions-view.ts for every field.",
        schema: z.object({
          generatedAt: z.number(),
          scope: z.enum(["account", "operator"]),
          stale: z.boolean(),
          redis: z.enum(["ok", "unreachable", "not_configured"]),
          regions: z.array(z.object({ name: z.string(), health: z.enum(["healthy", "unhealthy", "stale", "unknown"]) }).loose()),
        }),
      },
    },
  });
  describeRoute({
    method: "get",
    path: "/status",
    tag: "Regions",
    auth: "none",
    summary: "The status page (asks /v1/regions with a key the reader types in; never from the URL)",
    responses: { 200: { description: "HTML.", contentType: "text/html" } },
  });
}
