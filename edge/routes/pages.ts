// The browser pages' files (edge/page-assets.ts): GET /pages/<page>-<hash>.js|css, and the
// handler each page route (/status, /playground, /docs, registered beside the API they draw)
// answers with. Both read the Worker's static assets (ASSETS binding, wrangler.toml [assets]).

import type { Hono } from "hono";
import type { AppContext, AppEnv } from "../context.js";
import { describeRoute } from "../openapi.js";
import { pageFileResponse, pageResponse, type AssetReader, type PageName } from "../page-assets.js";

function assets(c: AppContext): AssetReader {
  const binding = c.env.ASSETS;
  if (!binding) throw new Error("the Worker has no ASSETS binding (wrangler.toml [assets])");
  return { fetch: (url) => binding.fetch(url) };
}

/** The handler of a page's route. */
export function pageHandler(page: PageName): (c: AppContext) => Promise<Response> {
  return (c) => pageResponse(assets(c), c.req.url, page);
}

export function registerPageFiles(app: Hono<AppEnv>): void {
  app.get("/pages/:file", async (c) => (await pageFileResponse(assets(c), c.req.url, c.req.param("file"))) ?? c.notFound());
  describeRoute({
    method: "get",
    path: "/pages/{file}",
    tag: "Reference",
    auth: "none",
    internal: true,
    summary: "A page's script or stylesheet (named by content hash)",
    responses: { 200: { description: "JavaScript or CSS." } },
  });
}
