// GET /playground: the page to try a generative model by hand (edge/pages/playground/). No key
// to load it; the page asks for one and uses it on the stream route.

import type { Hono } from "hono";
import type { AppEnv } from "../context.js";
import { describeRoute } from "../openapi.js";
import { pageHandler } from "./pages.js";

export function registerPlayground(app: Hono<AppEnv>): void {
  app.get("/playground", pageHandler("playground"));
  describeRoute({
    method: "get",
    path: "/playground",
    tag: "Reference",
    auth: "none",
    summary: "Playground: watch a generative model's tokens arrive (asks for a key)",
    responses: { 200: { description: "The page.", contentType: "text/html" } },
  });
}
