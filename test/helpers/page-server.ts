// The browser pages without the edge: builds them (scripts/build-pages.ts) into a fresh temp
// folder and serves them from a node:http server through the Worker's own page code
// (edge/page-assets.ts: same paths, same files, same security headers), with the files read from
// that folder where the Worker reads its ASSETS binding. Every other path goes to `api`, the
// test's stand-in for the JSON API the page draws.

import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join, normalize } from "node:path";
import { PAGE_NAMES, pageFileResponse, pageResponse, type AssetReader } from "../../edge/page-assets.js";
import { freePort } from "../../local/free-port.js";
import { buildPages, type BuiltPages } from "../../scripts/build-pages.js";

export interface PageServer {
  base: string;
  built: BuiltPages;
  /** The node:http server, for a test that also answers WebSocket upgrades. */
  server: Server;
  close(): Promise<void>;
}

export async function startPageServer(api: (req: IncomingMessage) => Promise<Response> | Response): Promise<PageServer> {
  const dir = await mkdtemp(join(tmpdir(), "mesh-pages-"));
  const built = await buildPages(dir);
  const assets: AssetReader = {
    async fetch(url) {
      const path = normalize(new URL(url).pathname);
      try {
        return new Response(await readFile(join(dir, path)));
      } catch {
        return new Response(null, { status: 404 });
      }
    },
  };
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const answer = async (req: IncomingMessage): Promise<Response> => {
    const url = new URL(req.url ?? "/", origin);
    const page = PAGE_NAMES.find((p) => `/${p}` === url.pathname);
    if (req.method === "GET" && page) return pageResponse(assets, origin, page);
    if (req.method === "GET" && url.pathname.startsWith("/pages/")) {
      return (await pageFileResponse(assets, origin, url.pathname.slice("/pages/".length))) ?? new Response("{}", { status: 404 });
    }
    return api(req);
  };
  const server: Server = createServer((req, res) => {
    answer(req)
      .then(async (r) => {
        res.writeHead(r.status, Object.fromEntries(r.headers));
        res.end(Buffer.from(await r.arrayBuffer()));
      })
      .catch((e: unknown) => {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(String(e));
      });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve());
  });
  return {
    base: origin,
    built,
    server,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
