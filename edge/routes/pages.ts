// The browser pages' files (edge/page-assets.ts): GET /pages/<page>-<hash>.js|css, and the
// route each page (/status, /playground, /docs, registered beside the API they draw) is
// declared with. Both read the Worker's static assets (ASSETS binding, wrangler.toml [assets]).

import type { AppContext } from "../context.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { pageFileResponse, pageResponse, type AssetReader, type PageName } from "../page-assets.js";

function assets(c: AppContext): AssetReader {
  const binding = c.env.ASSETS;
  if (!binding) throw new Error("the Worker has no ASSETS binding (wrangler.toml [assets])");
  return { fetch: (url) => binding.fetch(url) };
}

/** Declares a page's route (an HTML page that needs no key; what it asks for, it asks in the browser). */
export function registerPage(app: MeshApp, page: PageName, doc: { path: string; tag: string; summary: string }): void {
  app.openapi(
    meshRoute({ ...doc, method: "get", auth: "none", responses: { 200: { description: "HTML.", contentType: "text/html" } } }),
    (c) => pageResponse(assets(c), c.req.url, page),
  );
}

export function registerPageFiles(app: MeshApp): void {
  app.openapi(
    meshRoute({
      method: "get",
      path: "/pages/{file}",
      tag: "Reference",
      auth: "none",
      internal: true,
      summary: "A page's script or stylesheet (named by content hash)",
      params: { file: "`<page>-<hash>.js` or `.css`." },
      responses: { 200: { description: "JavaScript or CSS." } },
    }),
    async (c) => (await pageFileResponse(assets(c), c.req.url, c.req.param("file"))) ?? c.notFound(),
  );
}
