// The three browser pages (edge/pages/) as built (scripts/build-pages.ts) and served through the
// Worker's page code (test/helpers/page-server.ts): static HTML with no inline script, style or
// handler, files named by content hash, the CSP that allows nothing inline, and, in real
// headless Chromium, each page doing its job under that CSP with no console error and no CSP
// violation, while an injected inline script or HTML string is refused. Behind the pages: a
// canned /v1/regions and /v1/models, /openapi.json from the edge app itself (in-process), and a
// canned stream socket for the playground. The status page's own behaviour is in
// status-page.test.ts; the pages against the real mesh in security-edge and streaming-e2e.

import type { IncomingMessage } from "node:http";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WebSocketServer } from "ws";
import { PAGE_NAMES } from "../edge/page-assets.js";
import { PAGE_CSP } from "../edge/page-security.js";
import { ERROR_STATUS } from "../protocol/errors.js";
import { collectPageErrors, launchBrowser } from "./helpers/browser.js";
import { startPageServer, type PageServer } from "./helpers/page-server.js";

const KEY = "test-key";
// Imported by path at run time, as in edge-app.test.ts: the Worker's files are type-checked
// against workers-types (edge/tsconfig.json), which this Node project does not load.
const EDGE = "../edge/index.js";
type App = { request(path: string, init?: RequestInit, env?: unknown): Promise<Response> };
const ENV = {
  ADMIN_TOKEN: "admin-token-for-tests-0123456789",
  REGION_SECRETS: JSON.stringify({ "us-west": "mesh-secret-for-tests-0123456789" }),
  PUBLIC_ORIGIN: "https://edge.test",
  REGIONS: JSON.stringify([{ name: "us-west", url: "http://127.0.0.1:9", lat: 37, lon: -122 }]),
};

let app: App;
let server: PageServer;
let browser: Browser;
const calls: { path: string; auth: string | undefined }[] = [];

const json = (status: number, body: unknown): Response => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

async function api(req: IncomingMessage): Promise<Response> {
  const url = new URL(req.url ?? "/", "http://localhost");
  calls.push({ path: url.pathname, auth: req.headers.authorization });
  if (url.pathname === "/openapi.json") return app.request("/openapi.json", {}, ENV);
  const authorized = req.headers.authorization === `Bearer ${KEY}`;
  if (!authorized) return json(401, { error: "missing or unknown API key", code: "unauthorized", requestId: "req_test" });
  if (url.pathname === "/v1/models") return json(200, { models: [{ name: "demo-chat" }, { name: "demo-mlp" }] });
  if (url.pathname === "/v1/regions") return json(200, { generatedAt: Date.now(), scope: "account", stale: false, redis: "ok", regions: [] });
  return json(404, { error: "not found", code: "not_found", requestId: "req_test" });
}

/** The playground's stream route, canned: a key in the subprotocols, then per generate a few events. */
function cannedStream(s: PageServer): void {
  const wss = new WebSocketServer({ noServer: true, handleProtocols: () => "mesh.v1" });
  s.server.on("upgrade", (req, socket, head) => {
    const protocols = String(req.headers["sec-websocket-protocol"] ?? "").split(/,\s*/);
    if (req.url !== "/v2/models/demo-chat/stream" || !protocols.includes(`mesh.key.${KEY}`)) return socket.destroy();
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on("message", (data) => {
        const msg = JSON.parse(String(data)) as { type: string; id: string; text_input: string; parameters: Record<string, number> };
        if (msg.type !== "generate") return;
        const send = (ev: object) => ws.send(JSON.stringify({ id: msg.id, ...ev }));
        send({ type: "progress", stage: "queued", position: 1 });
        send({ type: "progress", stage: "loading", bytes: 50, total: 100, percent: 50 });
        send({ type: "progress", stage: "running" });
        const words = [" flows", " to", " the sea"];
        words.forEach((w, i) => send({ type: "token", index: i, text_output: w, token_id: i }));
        send({ type: "done", model_name: "demo-chat", model_version: "1", finish_reason: "length", prompt_tokens: 2, tokens: words.length, region: "us-west", node: "n1", timing: {} });
      });
    });
  });
}

/** Every CSP violation the page reports (Chromium also logs each as a console error). */
async function watchViolations(page: Page): Promise<() => Promise<string[]>> {
  await page.addInitScript(() => {
    const w = window as unknown as { violations: string[] };
    w.violations = [];
    document.addEventListener("securitypolicyviolation", (e) => w.violations.push(`${e.effectiveDirective} ${e.blockedURI}`));
  });
  return () => page.evaluate(() => (window as unknown as { violations: string[] }).violations);
}

beforeAll(async () => {
  app = ((await import(/* @vite-ignore */ EDGE)) as { createApp(): App }).createApp();
  server = await startPageServer(api);
  cannedStream(server);
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe("the built pages", () => {
  it("are static HTML: no inline script, style or handler, nothing from elsewhere, only their own hashed files", async () => {
    for (const page of PAGE_NAMES) {
      const html = await readFile(join(server.built.outdir, `${page}.html`), "utf8");
      const files = server.built.files[page];
      expect(html.startsWith("<!doctype html>"), page).toBe(true);
      expect(files.script, page).toMatch(new RegExp(`^/pages/${page}-[A-Z0-9]{8}\\.js$`));
      expect(files.style, page).toMatch(new RegExp(`^/pages/${page}-[A-Z0-9]{8}\\.css$`));
      const scripts = [...html.matchAll(/<script\b([^>]*)>([^]*?)<\/script>/gi)];
      expect(scripts.map((m) => [m[1]!.trim(), m[2]]), page).toEqual([[`src="${files.script}" defer`, ""]]);
      expect([...html.matchAll(/<link\b[^>]*rel="stylesheet"[^>]*>/gi)].map((m) => m[0]), page).toEqual([`<link rel="stylesheet" href="${files.style}">`]);
      expect(html, page).not.toMatch(/<style/i);
      expect(html, page).not.toMatch(/\sstyle=/i);
      expect(html, page).not.toMatch(/\son[a-z]+=/i);
      expect(html, page).not.toMatch(/https?:\/\//);
      expect(html, page).not.toContain("%SCRIPT%");
      for (const f of [files.script, files.style]) expect((await readFile(join(server.built.outdir, f))).length, f).toBeGreaterThan(500);
    }
  });

  it("are served under a CSP with nothing inline, and their files with their types, cacheable for good", async () => {
    for (const page of PAGE_NAMES) {
      const res = await fetch(`${server.base}/${page}`);
      expect(res.status, page).toBe(200);
      expect(res.headers.get("content-type")).toBe("text/html; charset=UTF-8");
      const csp = res.headers.get("content-security-policy") ?? "";
      expect(csp).toBe(PAGE_CSP);
      for (const part of ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'none'", "require-trusted-types-for 'script'"]) {
        expect(csp).toContain(part);
      }
      expect(csp).not.toMatch(/unsafe|nonce|sha256/);
      expect(res.headers.get("x-frame-options")).toBe("DENY");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("referrer-policy")).toBe("no-referrer");
      expect(res.headers.get("cache-control")).toBe("no-store");
      const { script, style } = server.built.files[page];
      for (const [path, type] of [[script, "text/javascript; charset=UTF-8"], [style, "text/css; charset=UTF-8"]] as const) {
        const f = await fetch(`${server.base}${path}`);
        expect(f.status, path).toBe(200);
        expect(f.headers.get("content-type")).toBe(type);
        expect(f.headers.get("x-content-type-options")).toBe("nosniff");
        expect(f.headers.get("cache-control")).toContain("immutable");
        expect(await f.text()).toBe(await readFile(join(server.built.outdir, path), "utf8"));
      }
    }
    // Only a page's hashed files are served from /pages/: not the HTML, not another name.
    for (const path of ["/pages/status.html", "/pages/status-AAAAAAAA.js", "/pages/..%2Fstatus.html", "/pages/x-ABCDEFGH.js"]) {
      expect((await fetch(`${server.base}${path}`)).status, path).toBe(404);
    }
  });
});

describe("in Chromium", () => {
  it("each page loads with no console error and no CSP violation", async () => {
    for (const path of ["/status", "/playground", "/docs"]) {
      const context = await browser.newContext();
      const page = await context.newPage();
      const errors = collectPageErrors(page);
      const violations = await watchViolations(page);
      await page.goto(`${server.base}${path}`);
      // Each page's script has run: it drew something only the script draws.
      if (path === "/status") await page.locator("#map .land").first().waitFor({ state: "attached" });
      if (path === "/playground") await page.locator("body[data-state=idle] #stop[disabled]").waitFor({ state: "attached" });
      if (path === "/docs") await page.locator("details.op").first().waitFor({ state: "attached" });
      expect(await violations(), path).toEqual([]);
      expect(errors, path).toEqual([]);
      await context.close();
    }
  });

  it("the CSP refuses an injected inline script and an HTML string", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const violations = await watchViolations(page);
    // The page as served, with its headers, but an inline script put into its HTML on the way.
    await page.route("**/status", async (route) => {
      const res = await route.fetch();
      const body = (await res.text()).replace("</head>", "<script>window.injected = 1</script></head>");
      await route.fulfill({ response: res, body });
    });
    await page.goto(`${server.base}/status`);
    await page.locator("#map .land").first().waitFor({ state: "attached" });
    expect(await page.evaluate(() => (window as unknown as { injected?: number }).injected)).toBeUndefined();
    // Trusted Types with no policy: a string never reaches an HTML sink, not even from the page.
    const sink = await page.evaluate(() => {
      try {
        document.body.insertAdjacentHTML("beforeend", "<img src=x>");
        return "allowed";
      } catch (e) {
        return (e as Error).name;
      }
    });
    expect(sink).toBe("TypeError");
    const seen = await violations();
    expect(seen.some((v) => v.startsWith("script-src-elem inline")), seen.join("; ")).toBe(true);
    expect(seen.some((v) => v.startsWith("require-trusted-types-for")), seen.join("; ")).toBe(true);
    await context.close();
  });

  it("the reference page draws every operation and every error code from /openapi.json, and filters", async () => {
    const spec = (await (await app.request("/openapi.json", {}, ENV)).json()) as { paths: Record<string, Record<string, unknown>> };
    const operations = Object.values(spec.paths).reduce((n, ops) => n + Object.keys(ops).length, 0);
    const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
    const errors = collectPageErrors(page);
    await page.goto(`${server.base}/docs#putV1ModelsMTraffic`);
    await expect.poll(() => page.locator("details.op").count()).toBe(operations);
    expect(await page.locator("#codes tbody tr").count()).toBe(Object.keys(ERROR_STATUS).length);
    // The hash opened that operation.
    expect(await page.locator("details.op[open]").getAttribute("id")).toBe("putV1ModelsMTraffic");
    expect(await page.locator("details.op[open]").textContent()).toContain("weights sum to 100");
    await page.fill("#filter", "aliases");
    const visible = await page.locator("details.op:visible").count();
    expect(visible).toBeGreaterThan(0);
    expect(visible).toBeLessThan(operations);
    expect(errors).toEqual([]);
    await page.close();
  });

  it("the playground takes no key from the URL, lists the key's models and shows a stream's events and tokens", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    const violations = await watchViolations(page);
    const before = calls.length;
    await page.goto(`${server.base}/playground?key=${KEY}&model=demo-chat`);
    await expect.poll(() => page.url()).not.toContain(KEY);
    expect(page.url()).toContain("model=demo-chat");
    expect(await page.inputValue("#key")).toBe("");
    expect(await page.inputValue("#model")).toBe("demo-chat");
    expect(calls.slice(before).filter((c) => c.auth)).toEqual([]);

    await page.fill("#key", KEY);
    await page.dispatchEvent("#key", "change");
    await expect.poll(() => page.$$eval("#models option", (os) => os.map((o) => (o as HTMLOptionElement).value))).toEqual(["demo-chat", "demo-mlp"]);
    expect(calls.find((c) => c.path === "/v1/models")?.auth).toBe(`Bearer ${KEY}`);

    await page.fill("#prompt", "The river");
    await page.click("#go");
    await page.waitForSelector("body[data-state=done]");
    expect(await page.textContent("#output")).toBe("The river flows to the sea");
    expect(await page.$$eval("#output .tok", (s) => s.map((x) => x.textContent))).toEqual([" flows", " to", " the sea"]);
    expect(await page.textContent("#count")).toBe("3");
    expect(await page.textContent("#status")).toBe("done: length, 3 tokens, 2 prompt tokens, region us-west, node n1");
    const notes = await page.$$eval("#events li", (lis) => lis.map((l) => (l.textContent ?? "").replace(/^\d+ ms\s+/, "")));
    expect(notes).toEqual(["queued (position 1)", "loading the model 50% (50 of 100 bytes)", "running", "done (length)"]);
    expect(await page.evaluate(() => sessionStorage.getItem("mesh.playground.key"))).toBe(KEY);
    expect(await page.evaluate(() => JSON.stringify(localStorage))).not.toContain(KEY);
    expect(await violations()).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  });
});
