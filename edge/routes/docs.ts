// GET /openapi.json (the whole public API as OpenAPI 3.1, built from the zod schemas each route
// file declares its routes with) and GET /docs (the reference page, drawn in the browser from
// /openapi.json: edge/pages/docs/).

import { meshRoute, openApiDocument, type MeshApp } from "../openapi.js";
import { registerPage } from "./pages.js";
import { SERVER_VERSION } from "./health.js";

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
  // Routes are all declared at start-up; the document is built once per isolate.
  cached ??= openApiDocument(INFO);
  return cached;
}

export function registerDocs(app: MeshApp): void {
  app.openapi(
    meshRoute({
      method: "get",
      path: "/openapi.json",
      tag: "Reference",
      auth: "none",
      summary: "This API as an OpenAPI 3.1 document",
      responses: { 200: { description: "The document.", contentType: "application/json" } },
    }),
    (c) => c.json(spec()),
  );
  registerPage(app, "docs", { path: "/docs", tag: "Reference", summary: "The API reference page (HTML; draws /openapi.json)" });
}
