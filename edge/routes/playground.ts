// GET /playground: the page to try a generative model by hand (edge/playground-page.ts). No key
// to load it; the page asks for one and uses it on the stream route.

import type { Hono } from "hono";
import type { AppEnv } from "../context.js";
import { describeRoute } from "../openapi.js";
import { htmlPage } from "../page-security.js";
import { playgroundPageHtml } from "../playground-page.js";

export function registerPlayground(app: Hono<AppEnv>): void {
  app.get("/playground", () => htmlPage(playgroundPageHtml));
  describeRoute({
    method: "get",
    path: "/playground",
    tag: "Reference",
    auth: "none",
    summary: "Playground: watch a generative model's tokens arrive (asks for a key)",
    responses: { 200: { description: "The page.", contentType: "text/html" } },
  });
}
