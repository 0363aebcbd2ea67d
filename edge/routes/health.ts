// Open Inference Protocol server endpoints that need no key: liveness, readiness, metadata.

import type { Hono } from "hono";
import { waitUntilOf, type AppEnv } from "../context.js";
import { readyRegions } from "../readiness.js";
import { regionState } from "../region-state.js";

export const SERVER_NAME = "inference-mesh";
export const SERVER_VERSION = "0.1.0";
/**
 * The OIP/Triton extensions the mesh speaks, as `GET /v2` reports them: only what is true end
 * to end (Triton clients switch to binary tensors on seeing `binary_tensor_data`).
 */
export const SERVER_EXTENSIONS = ["binary_tensor_data"] as const;

export function registerHealth(app: Hono<AppEnv>): void {
  app.get("/v2/health/live", (c) => c.json({ live: true }));
  // OIP: the status says it (200 ready, 503 not); the body says it too, for humans.
  app.get("/v2/health/ready", async (c) => {
    const config = c.get("config");
    const ready = readyRegions(config, await regionState(config, waitUntilOf(c))).length > 0;
    return c.json({ ready }, ready ? 200 : 503);
  });
  app.get("/v2", (c) => c.json({ name: SERVER_NAME, version: SERVER_VERSION, extensions: SERVER_EXTENSIONS }));
}
