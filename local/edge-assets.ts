// Miniflare's options for the Worker's static assets, as wrangler.toml [assets] declares them:
// the browser pages that wrangler's [build] step (scripts/build-pages.ts) wrote into
// build/assets, behind the Worker (it runs first for every path and reads them through the
// ASSETS binding), paths taken literally. Shared by the local edge server and the page bench.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const EDGE_ASSETS = {
  directory: join(dirname(fileURLToPath(import.meta.url)), "..", "build", "assets"),
  binding: "ASSETS",
  routerConfig: { has_user_worker: true, invoke_user_worker_ahead_of_assets: true },
  assetConfig: { html_handling: "none" as const, not_found_handling: "none" as const },
};
