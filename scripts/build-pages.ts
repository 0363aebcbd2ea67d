// Builds the browser pages (edge/pages/<page>/) into the static assets the Worker serves
// (wrangler.toml [assets], build/assets): per page, main.ts bundled by esbuild into one browser
// script and style.css into one stylesheet, both named by a hash of their content
// (pages/status-<hash>.js) so a browser may keep them for good, and index.html with those names
// put in, as <page>.html. No inline script or style is left, so the pages' CSP allows scripts
// and styles from this origin only (edge/page-security.ts).
//
// Wrangler runs it before every bundle ([build] in wrangler.toml): npm start and the end-to-end
// tests (local/mesh.ts bundles with `wrangler deploy --dry-run`), `npm run deploy:edge --
// --dry-run` in CI, and `wrangler deploy`. The page tests call buildPages() into a folder of
// their own. Run by hand: npx tsx scripts/build-pages.ts [outdir].

import { build } from "esbuild";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { PAGE_NAMES, type PageName } from "../edge/page-assets.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SOURCES = join(ROOT, "edge", "pages");
/** wrangler.toml's [assets] directory. */
export const ASSETS_DIR = join(ROOT, "build", "assets");

export interface BuiltPages {
  outdir: string;
  /** Per page, the URL paths of its script and stylesheet. */
  files: Record<PageName, { script: string; style: string }>;
}

/** Writes whole or not at all: a Worker or test reading the folder while another build runs never sees half a file. */
function writeAtomically(file: string, data: string | Uint8Array): void {
  const tmp = `${file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  writeFileSync(tmp, data);
  renameSync(tmp, file);
}

export async function buildPages(outdir: string = ASSETS_DIR): Promise<BuiltPages> {
  const fileDir = join(outdir, "pages");
  mkdirSync(fileDir, { recursive: true });
  const result = await build({
    entryPoints: PAGE_NAMES.flatMap((p) => [
      { in: join(SOURCES, p, "main.ts"), out: p },
      { in: join(SOURCES, p, "style.css"), out: p },
    ]),
    outdir: fileDir,
    entryNames: "[name]-[hash]",
    bundle: true,
    format: "iife",
    platform: "browser",
    target: ["chrome120", "firefox120", "safari17"],
    minify: true,
    legalComments: "none",
    metafile: true,
    write: false,
    logLevel: "silent",
  });
  const files = {} as BuiltPages["files"];
  const written = new Set<string>();
  for (const out of result.outputFiles) {
    const meta = result.metafile.outputs[relative(process.cwd(), out.path)] ?? result.metafile.outputs[out.path];
    const entry = meta?.entryPoint ? resolve(process.cwd(), meta.entryPoint) : null;
    const page = PAGE_NAMES.find((p) => entry !== null && dirname(entry) === join(SOURCES, p));
    if (!page) throw new Error(`build-pages: esbuild wrote ${out.path}, which belongs to no page`);
    const url = `/pages/${relative(fileDir, out.path)}`;
    files[page] ??= { script: "", style: "" };
    if (out.path.endsWith(".js")) files[page].script = url;
    else if (out.path.endsWith(".css")) files[page].style = url;
    writeAtomically(out.path, out.contents);
    written.add(out.path);
  }
  for (const page of PAGE_NAMES) {
    const f = files[page];
    if (!f?.script || !f.style) throw new Error(`build-pages: ${page} is missing its script or stylesheet`);
    const template = readFileSync(join(SOURCES, page, "index.html"), "utf8");
    for (const marker of ["%SCRIPT%", "%STYLE%"]) {
      if (template.split(marker).length !== 2) throw new Error(`build-pages: ${page}/index.html must hold ${marker} exactly once`);
    }
    writeAtomically(join(outdir, `${page}.html`), template.replace("%SCRIPT%", f.script).replace("%STYLE%", f.style));
  }
  // Earlier builds' files (other hashes) would otherwise pile up in the deployed assets.
  for (const name of readdirSync(fileDir)) {
    const path = join(fileDir, name);
    if (!written.has(path) && !name.endsWith(".tmp")) rmSync(path, { force: true });
  }
  return { outdir, files };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const outdir = resolve(process.argv[2] ?? ASSETS_DIR);
  const built = await buildPages(outdir);
  console.log(`[build-pages] ${PAGE_NAMES.length} pages into ${relative(process.cwd(), outdir) || "."}: ${PAGE_NAMES.map((p) => `${built.files[p].script}, ${built.files[p].style}`).join("; ")}`);
}
