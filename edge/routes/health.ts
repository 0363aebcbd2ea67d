// Open Inference Protocol server endpoints that need no key: liveness, readiness, metadata.

import type { Hono } from "hono";
import type { AppEnv } from "../context.js";

export const SERVER_NAME = "inference-mesh";
export const SERVER_VERSION = "0.1.0";

export function registerHealth(app: Hono<AppEnv>): void {
  app.get("/v2/health/live", (c) => c.json({ live: true }));
  app.get("/v2/health/ready", (c) => c.json({ ready: true }));
  app.get("/v2", (c) => c.json({ name: SERVER_NAME, version: SERVER_VERSION, extensions: [] }));
}
