// Which URL serves which built page file (scripts/build-pages.ts writes them into the Worker's
// static assets, wrangler.toml [assets]): GET /status, /playground and /docs answer
// <page>.html, and GET /pages/<page>-<hash>.js|css that page's script or stylesheet, each under
// the headers of page-security.ts. Every request reaches the Worker first (run_worker_first), so
// nothing in the assets is served except through here. The Worker reads the files from its
// ASSETS binding; the page tests read them from the build folder through the same code.

import { pageFileHeaders, pageSecurityHeaders } from "./page-security.js";

export const PAGE_NAMES = ["status", "playground", "docs"] as const;
export type PageName = (typeof PAGE_NAMES)[number];

/** What the pages are read from: the ASSETS binding's shape (a fetch by absolute URL). */
export interface AssetReader {
  fetch(url: string): Promise<Response>;
}

/** A page file's name: the page, esbuild's content hash, the kind. Nothing else is served. */
const PAGE_FILE = /^(status|playground|docs)-[A-Z0-9]{8}\.(js|css)$/;

/** The page's HTML; a page missing from the assets is a broken deploy (the build did not run), not a 404. */
export async function pageResponse(assets: AssetReader, origin: string, page: PageName): Promise<Response> {
  const res = await assets.fetch(new URL(`/${page}.html`, origin).toString());
  if (!res.ok) throw new Error(`the static assets have no ${page}.html (${res.status}): was scripts/build-pages.ts run before the bundle?`);
  return new Response(res.body, { headers: pageSecurityHeaders() });
}

/** A page's script or stylesheet, or null when `name` is none (the caller answers 404). */
export async function pageFileResponse(assets: AssetReader, origin: string, name: string): Promise<Response | null> {
  if (!PAGE_FILE.test(name)) return null;
  const res = await assets.fetch(new URL(`/pages/${name}`, origin).toString());
  if (res.status === 404) return null;
  if (!res.ok) throw new Error(`the static assets answered ${res.status} for pages/${name}`);
  return new Response(res.body, { headers: pageFileHeaders(name) });
}
