// The status page (edge/pages/status/) in real headless Chromium, without the real edge: the
// page as built (scripts/build-pages.ts) and served through the Worker's page code with its CSP
// (test/helpers/page-server.ts), and a canned GET /v1/regions (edge/regions-view.ts shape) that
// wants the bearer key `test-key`, so the page is proven to work under its headers. The
// end-to-end version runs against the mesh (security-edge.test.ts).
import { mkdir } from "node:fs/promises";
import type { IncomingMessage } from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Browser } from "playwright-core";
import type { MinutePoint, RegionsView } from "../edge/regions-view.js";
import { collectPageErrors, launchBrowser } from "./helpers/browser.js";
import { startPageServer, type PageServer } from "./helpers/page-server.js";

const KEY = "test-key";
const ARTIFACTS = join(process.cwd(), "test-artifacts");

function history(now: number, base: number, tail: number, skip: (minute: number) => boolean): MinutePoint[] {
  const first = Math.floor(now / 60_000) * 60_000 - 59 * 60_000;
  const out: MinutePoint[] = [];
  for (let i = 0; i < 60; i++) {
    if (skip(i)) continue;
    const wave = Math.sin(i / 6) * 0.15 + 1;
    const p50 = +(base * wave).toFixed(2);
    const spike = i === 41 ? 2.2 : 1;
    out.push({
      t: first + i * 60_000,
      p50,
      p95: +(p50 * 1.8 * spike).toFixed(2),
      p99: +(p50 * tail * spike + (i % 7)).toFixed(2),
      count: 80 + ((i * 37) % 40),
      errors: i === 41 ? 3 : i % 17 === 5 ? 1 : 0,
    });
  }
  return out;
}

function cannedView(): RegionsView {
  const now = Date.now();
  return {
    generatedAt: now,
    scope: "operator",
    stale: true,
    redis: "ok",
    regions: [
      {
        name: "us-west",
        lat: 37.4,
        lon: -122.1,
        health: "healthy",
        measuredAt: now - 800,
        nodes: 2,
        capacity: { slots: 16, freeSlots: 12, memoryMb: 81_920, memoryUsedMb: 12_288 },
        // Mid-upgrade: one node on wire 2 with batch, one from before versions.
        wire: {
          byVersion: { "1": 1, "2": 1 },
          unreported: 0,
          nodes: [
            { id: "west-a", min: 1, max: 2, features: ["batch"], version: 2, agreed: ["batch"] },
            { id: "west-b", min: 1, max: 1, features: [], version: 1, agreed: [] },
          ],
        },
        queue: 0,
        inflight: 4,
        warmModels: [
          { model: "demo-mlp", version: 1, replicas: 2 },
          { model: "demo-types", version: 1, replicas: 1 },
        ],
        warmModelCount: 5,
        latency: {
          p50: 8.2,
          p95: 14.6,
          p99: 23.4,
          count: 5_920,
          errors: 6,
          byColo: {
            SJC: { p50: 6.1, p95: 10.2, p99: 18.9, count: 5_100, errors: 4 },
            ICN: { p50: 142.7, p95: 158.3, p99: 171.0, count: 820, errors: 2 },
          },
        },
        rttMs: { SJC: 2.3, ICN: 131.4 },
        history: history(now, 8, 2.8, () => false),
      },
      {
        name: "ap-seoul",
        lat: 37.57,
        lon: 126.98,
        health: "stale",
        measuredAt: now - 42_000,
        nodes: 1,
        capacity: { slots: 8, freeSlots: 8, memoryMb: 16_384, memoryUsedMb: 2_100 },
        wire: { byVersion: { "2": 1 }, unreported: 0, nodes: [{ id: "seoul-a", min: 1, max: 2, features: ["batch"], version: 2, agreed: ["batch"] }] },
        queue: 2,
        inflight: 0,
        warmModels: [{ model: "demo-mlp", version: 1, replicas: 1 }],
        warmModelCount: 1,
        latency: {
          p50: 11.7,
          p95: 21.9,
          p99: 38.5,
          count: 2_410,
          errors: 31,
          byColo: {
            ICN: { p50: 9.8, p95: 17.5, p99: 30.2, count: 2_200, errors: 29 },
            SJC: { p50: 139.9, p95: 151.0, p99: 166.4, count: 210, errors: 2 },
          },
        },
        rttMs: { ICN: 1.9, SJC: 128.8 },
        // Reports stopped about a minute ago, and there was a gap earlier on.
        history: history(now, 11, 3.2, (i) => (i >= 20 && i < 26) || i >= 58),
      },
    ],
  };
}

let server: PageServer;
let base = "";
let browser: Browser;
const authHeaders: (string | undefined)[] = [];

function api(req: IncomingMessage): Response {
  const url = new URL(req.url ?? "/", "http://localhost");
  const json = (status: number, body: unknown): Response =>
    new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", "cache-control": "no-store" } });
  if (req.method === "GET" && url.pathname === "/v1/regions") {
    authHeaders.push(req.headers.authorization);
    if (req.headers.authorization !== `Bearer ${KEY}`) return json(401, { error: "missing or unknown API key", code: "unauthorized", requestId: "req_test" });
    return json(200, cannedView());
  }
  return json(404, { error: "not found", code: "not_found", requestId: "req_test" });
}

beforeAll(async () => {
  await mkdir(ARTIFACTS, { recursive: true });
  server = await startPageServer(api);
  base = server.base;
  browser = await launchBrowser();
});

afterAll(async () => {
  await browser?.close();
  await server?.close();
});

describe("status page", () => {
  it("draws regions, map, chart and stale state from /v1/regions", async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    const before = authHeaders.length;
    await page.goto(`${base}/status`);
    await page.getByTestId("key-input").fill(KEY);
    await page.getByRole("button", { name: "Use key" }).click();

    const west = page.getByTestId("region-row-us-west");
    const seoul = page.getByTestId("region-row-ap-seoul");
    await west.waitFor();
    await seoul.waitFor();
    expect(authHeaders[before]).toBe(`Bearer ${KEY}`);
    // The key stays for this tab only (sessionStorage), never in localStorage or the URL.
    expect(page.url()).not.toContain(KEY);
    expect(await page.evaluate(() => sessionStorage.getItem("mesh.status.apiKey"))).toBe(KEY);
    expect(await page.evaluate(() => localStorage.getItem("mesh.status.apiKey"))).toBeNull();

    expect(await page.getByTestId("health-us-west").textContent()).toBe("Healthy");
    expect(await page.getByTestId("health-ap-seoul").textContent()).toBe("Stale");
    expect(await seoul.getAttribute("data-health")).toBe("stale");
    expect(await page.getByTestId("age-ap-seoul").textContent()).toBe("last report 42 s ago");
    expect(await west.textContent()).toContain("12 / 16");
    expect(await west.textContent()).toContain("demo-types v1");
    expect(await west.textContent()).toContain("demo-mlp v1 ×2");
    // Which wire the nodes use, newest first, each node's announcement in the title.
    expect(await page.getByTestId("wire-us-west").textContent()).toBe("wire 2 ×1 · 1 ×1");
    expect(await page.getByTestId("wire-us-west").getAttribute("title")).toContain("west-b: announces 1, uses 1");
    expect(await page.getByTestId("wire-ap-seoul").textContent()).toBe("wire 2");
    expect(await page.getByTestId("stale-banner").isVisible()).toBe(true);
    expect(await page.getByTestId("stale-banner").textContent()).toContain("ap-seoul: last report 42 s ago");

    const overall = page.getByTestId("overall-status");
    expect(await overall.getAttribute("data-state")).toBe("degraded");
    expect(await overall.textContent()).toContain("Degraded");
    expect(await overall.textContent()).toContain("1 stale");
    expect(await page.getByTestId("redis-state").textContent()).toBe("ok");
    expect(await page.getByTestId("data-state").textContent()).toBe("stale");

    const chart = page.getByTestId("latency-chart");
    for (const region of ["us-west", "ap-seoul"]) {
      for (const series of ["p50", "p99"]) {
        const path = chart.locator(`path[data-region="${region}"][data-series="${series}"]`);
        expect(await path.count(), `${region} ${series}`).toBe(1);
        const d = (await path.getAttribute("d")) ?? "";
        expect(d).toMatch(/^M\d/);
        expect(d.split("L").length, `${region} ${series} points`).toBeGreaterThan(20);
      }
    }
    // ap-seoul's history has a gap, so its lines restart there.
    expect(((await chart.locator('path[data-region="ap-seoul"][data-series="p50"]').getAttribute("d")) ?? "").match(/M/g)).toHaveLength(2);
    expect(await page.locator("#chart-legend li").count()).toBe(2);

    const map = page.getByTestId("region-map");
    expect(await map.locator(".region-dot").count()).toBe(2);
    expect(await map.getByTestId("region-dot-us-west").getAttribute("data-health")).toBe("healthy");
    expect(await map.getByTestId("region-dot-ap-seoul").getAttribute("data-health")).toBe("stale");
    expect(await map.textContent()).toContain("us-west");
    expect(await map.textContent()).toContain("ap-seoul");

    expect(await page.getByTestId("colo-table").locator("tbody tr").count()).toBe(4);
    expect(await page.getByTestId("errors-row-ap-seoul").textContent()).toContain("31");
    expect(await page.getByTestId("error-banner").isHidden()).toBe(true);

    // It refreshes on its own (every 5 s).
    const seen = authHeaders.length;
    await expect.poll(() => authHeaders.length, { timeout: 9_000, interval: 250 }).toBeGreaterThan(seen);

    await page.screenshot({ path: join(ARTIFACTS, "status-page.png"), fullPage: true });
    expect(errors).toEqual([]);
    await context.close();
  });

  it("says so when the key is refused (401)", async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    await page.goto(`${base}/status`);
    await page.getByTestId("key-input").fill("wrong-key");
    await page.getByRole("button", { name: "Use key" }).click();
    const banner = page.getByTestId("error-banner");
    await banner.waitFor();
    expect(await banner.getAttribute("data-kind")).toBe("auth");
    expect(await banner.textContent()).toContain("401 Unauthorized");
    expect(await page.locator('[data-testid^="region-row-"]').count()).toBe(0);
    expect(await page.getByTestId("overall-status").getAttribute("data-state")).toBe("unknown");
    expect(await page.getByTestId("overall-status").textContent()).toContain("Key refused (401)");
    await page.screenshot({ path: join(ARTIFACTS, "status-page-401.png") });
    // Chromium reports the refused fetch itself; nothing else may fail.
    expect(errors.filter((e) => !/status of 401/.test(e))).toEqual([]);

    // A good key typed into the box recovers.
    await page.getByTestId("key-input").fill(KEY);
    await page.getByRole("button", { name: "Use key" }).click();
    await page.getByTestId("region-row-us-west").waitFor();
    expect(await banner.isHidden()).toBe(true);
    await context.close();
  });

  it("says so when the edge cannot be reached", async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    await page.route("**/v1/regions", (route) => route.abort("connectionrefused"));
    await page.goto(`${base}/status`);
    await page.getByTestId("key-input").fill(KEY);
    await page.getByRole("button", { name: "Use key" }).click();
    const banner = page.getByTestId("error-banner");
    await banner.waitFor();
    expect(await banner.getAttribute("data-kind")).toBe("network");
    expect(await banner.textContent()).toContain("network error");
    expect(await banner.textContent()).toContain("Retrying every 5 s");
    await context.close();
  });

  it("does not take a key from the URL: ?key= is scrubbed from the address bar and never sent", async () => {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await context.newPage();
    const errors = collectPageErrors(page);
    const before = authHeaders.length;
    await page.goto(`${base}/status?key=${KEY}&x=1`);
    await expect.poll(() => page.url()).not.toContain(KEY);
    expect(page.url()).toContain("x=1");
    await expect.poll(async () => (await page.getByTestId("error-banner").textContent()) ?? "").toContain("Enter an API key");
    expect(authHeaders.slice(before)).toEqual([]);
    expect(await page.evaluate(() => [sessionStorage.length, localStorage.getItem("mesh.status.apiKey")])).toEqual([0, null]);
    expect(errors).toEqual([]);
    await context.close();
  });
});
