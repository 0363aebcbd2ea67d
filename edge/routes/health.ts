// Open Inference Protocol server endpoints that need no key: liveness, readiness, metadata.

import { z } from "zod";
import { waitUntilOf } from "../context.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { readyRegions } from "../readiness.js";
import { regionState } from "../region-state.js";

export const SERVER_NAME = "inference-mesh";
export const SERVER_VERSION = "0.1.0";
/**
 * The OIP/Triton extensions the mesh speaks, as `GET /v2` reports them: only what is true end
 * to end (Triton clients switch to binary tensors on seeing `binary_tensor_data`).
 */
export const SERVER_EXTENSIONS = ["binary_tensor_data"] as const;

export function registerHealth(app: MeshApp): void {
  const server = { method: "get", tag: "Server", auth: "none" } as const;
  app.openapi(
    meshRoute({ ...server, path: "/v2/health/live", summary: "Liveness", responses: { 200: { description: "Live.", schema: z.object({ live: z.boolean() }) } } }),
    (c) => c.json({ live: true }),
  );
  // OIP: the status says it (200 ready, 503 not); the body says it too, for humans.
  app.openapi(
    meshRoute({ ...server, path: "/v2/health/ready", summary: "Readiness", responses: { 200: { description: "Ready.", schema: z.object({ ready: z.boolean() }) } } }),
    async (c) => {
      const config = c.get("config");
      const ready = readyRegions(config, await regionState(config, waitUntilOf(c))).length > 0;
      return c.json({ ready }, ready ? 200 : 503);
    },
  );
  app.openapi(
    meshRoute({
      ...server,
      path: "/v2",
      summary: "Server metadata",
      responses: {
        200: {
          description: `name '${SERVER_NAME}', version, and the extensions the mesh speaks: ${SERVER_EXTENSIONS.map((e) => `\`${e}\``).join(", ")}.`,
          schema: z.object({ name: z.string(), version: z.string(), extensions: z.array(z.string()) }),
        },
      },
    }),
    (c) => c.json({ name: SERVER_NAME, version: SERVER_VERSION, extensions: SERVER_EXTENSIONS }),
  );
}
