// The edge's tenancy, keys and limits under attack (issue 10 items 8, 11, 15, 16, 17), each
// attack run against the real mesh (startMesh: workerd edge, routers, nodes, redis-server):
// five keys sharing one account limit, a lowered account limit reaching a key with its own,
// junk keys costing no cache entry, failed authentications limited per address, the pages'
// security headers (and in Chromium: they work under them, and ignore ?key=), /v1/regions
// showing a key only its own account, and a quota set mid-month counting the calls before it.

import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newApiKey } from "../edge/key-format.js";
import type { RegionsView } from "../edge/regions-view.js";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { Redis } from "ioredis";
import { collectPageErrors, launchBrowser } from "./helpers/browser.js";
import { call, expectError, mlpBody, type Answer } from "./helpers/mesh-client.js";

/** The mesh's failed-authentication limit per address (edge vars below). */
const FAIL_BURST = 20;

let mesh: MeshHandle;
let dir: string;
let E: string;
let E2: string;
let redis: Redis;
let mlpBytes: Uint8Array<ArrayBuffer>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const say = (line: string) => console.log(`[security-edge] ${line}`);

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-security-edge-"));
  mesh = await startMesh({
    stateDir: dir,
    // A second isolate over the same D1 and Redis: the quota's seeding is seen from there.
    extraEdges: 1,
    // Failed authentications refill one per 100 s: the limit test must not see one come back on a slow machine.
    edgeVars: { EXPLORATION_SHARE: "0", AUTH_FAILURES_PER_SECOND: "0.01", AUTH_FAILURES_BURST: String(FAIL_BURST) },
    progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
  });
  E = mesh.edge;
  E2 = mesh.edges[1]!;
  redis = new Redis({ host: "127.0.0.1", port: mesh.redis.port, protocol: 2 });
  mlpBytes = new Uint8Array(await readFile(mesh.models.find((m) => m.name === "demo-mlp")!.file));
});

afterAll(async () => {
  redis?.disconnect();
  await mesh?.stop();
  if (process.env.MESH_TEST_KEEP) say(`kept ${dir} (logs under logs/)`);
  else await rm(dir, { recursive: true, force: true });
});

/** Polls until `probe` gives a value (not undefined/false). */
async function until<T>(what: string, probe: () => Promise<T | undefined | false>, limitMs = 10_000, everyMs = 50): Promise<T> {
  const end = Date.now() + limitMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${limitMs} ms`);
    await sleep(everyMs);
  }
}

async function newAccount(name: string, limits: Record<string, unknown> = {}): Promise<{ id: string; key: string }> {
  const a = await call(`${E}/v1/accounts`, { key: mesh.adminToken, json: { name, ...limits } });
  expect(a.status, JSON.stringify(a.body)).toBe(201);
  return { id: a.body.accountId, key: a.body.apiKey.key };
}

const patchAccount = async (id: string, body: unknown) => {
  const a = await call(`${E}/v1/accounts/${id}`, { method: "PATCH", key: mesh.adminToken, json: body });
  expect(a.status, JSON.stringify(a.body)).toBe(200);
};

async function newKey(manageKey: string, body: Record<string, unknown> = {}): Promise<string> {
  const k = await call(`${E}/v1/keys`, { key: manageKey, json: { scopes: ["infer"], ...body } });
  expect(k.status, JSON.stringify(k.body)).toBe(201);
  return k.body.key;
}

async function deployMlp(key: string, name: string): Promise<void> {
  expect((await call(`${E}/v1/models`, { key, json: { name } })).status).toBe(201);
  const up = await call(`${E}/v1/models/${name}/versions`, { key, body: mlpBytes, headers: { "content-type": "application/octet-stream" } });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
}

/** A cheap call behind the key check and the rate limit (404: no such model). */
const probe = (key: string, headers: Record<string, string> = {}) => call(`${E}/v2/models/no-such-model`, { key, headers });

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");
const cached = async (key: string) => (await redis.exists(`mesh:key:${sha256(key)}`)) === 1;

function expect429(a: Answer, code = "rate_limited"): void {
  expectError(a, 429, code);
  expect(Number(a.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
}

describe("rate limits are the account's (item 8)", () => {
  it("five keys of one account share one limit", async () => {
    const acc = await newAccount("five-keys", { rateLimit: { perSecond: 1, burst: 10 } });
    const keys = [acc.key];
    for (let i = 0; i < 4; i++) keys.push(await newKey(acc.key)); // 4 calls of the account's 10
    const t0 = Date.now();
    const byKey: number[][] = [];
    for (const k of keys) {
      const statuses: number[] = [];
      for (let i = 0; i < 4; i++) {
        const a = await probe(k);
        if (a.status === 429) expect429(a);
        else expect(a.status, JSON.stringify(a.body)).toBe(404);
        statuses.push(a.status);
      }
      byKey.push(statuses);
    }
    const passed = byKey.flat().filter((s) => s !== 429).length;
    const bound = 10 - 4 + Math.ceil((Date.now() - t0) / 1000);
    say(`five keys, account limit 1/s burst 10: ${passed} of 20 calls passed (bound ${bound}); per key ${JSON.stringify(byKey)}`);
    expect(passed).toBeLessThanOrEqual(bound);
    // Each key alone would have had a full burst; the last ones found the account's spent.
    expect(byKey.at(-1)![0]).toBe(429);
  });

  it("lowering the account's limit reaches a key that carries its own", async () => {
    const acc = await newAccount("lowered", { rateLimit: { perSecond: 100, burst: 100 } });
    const own = await newKey(acc.key, { rateLimit: { perSecond: 50, burst: 50 } });
    expect((await probe(own)).status).toBe(404);
    await patchAccount(acc.id, { rateLimit: { perSecond: 1, burst: 3 } });
    // ~20 calls/s: far under the key's own 50/s, far over the account's new 1/s. The new limit
    // reaches the key within the revocation bound (it rides on the key record).
    const refused = await until("the lowered account limit refuses the key", async () => {
      const a = await probe(own);
      return a.status === 429 ? a : undefined;
    }, 8_000);
    expect429(refused);
  });
});

describe("made-up keys and failed authentications (item 11)", () => {
  it("junk keys (bad checksum, the dropped 37-character form) cost no cache entry, and a made-up key with a valid checksum is looked up once", async () => {
    const junk: string[] = [];
    for (let i = 0; i < 150; i++) {
      const { key } = await newApiKey();
      junk.push(key.slice(0, -1) + (key.endsWith("a") ? "b" : "a")); // checksum off by one character
      junk.push(key.slice(0, 37)); // the dropped legacy form: prefix + 32 characters, no checksum
    }
    // Each from its own address, so this measures the lookups, not the address limit.
    for (let i = 0; i < junk.length; i += 25) {
      const batch = junk.slice(i, i + 25).map((k, j) => probe(k, { "x-mesh-client-ip": `10.1.${(i + j) >> 8}.${(i + j) & 255}` }));
      for (const a of await Promise.all(batch)) expectError(a, 401, "unauthorized");
    }
    // The observation works: a well-formed unknown key is looked up and cached as "no".
    const plausible = (await newApiKey()).key;
    expectError(await probe(plausible, { "x-mesh-client-ip": "10.2.0.1" }), 401, "unauthorized");
    await until("the well-formed unknown key's negative entry in Redis", () => cached(plausible));
    const found = (await Promise.all(junk.map((k) => redis.exists(`mesh:key:${sha256(k)}`)))).filter((v) => v === 1).length;
    say(`${junk.length} junk keys: ${found} cache entries in Redis (a well-formed unknown key: 1)`);
    expect(found).toBe(0);
  });

  it("failed authentications are limited per client address: 429 with Retry-After, before any lookup", async () => {
    const addr = { "x-mesh-client-ip": "198.51.100.7" };
    const statuses: number[] = [];
    let refused: Answer | undefined;
    for (let i = 0; i < FAIL_BURST + 10 && !refused; i++) {
      const a = await probe((await newApiKey()).key, addr);
      statuses.push(a.status);
      if (a.status === 429) refused = a;
      else expectError(a, 401, "unauthorized");
    }
    say(`failed authentications from one address: ${statuses.join(",")}`);
    expect(statuses.slice(0, FAIL_BURST).every((s) => s === 401)).toBe(true);
    expect(refused, "a 429 once the address spent its failures").toBeDefined();
    expect429(refused!);
    // Past the limit, a new made-up key from that address is refused before any lookup.
    const late = (await newApiKey()).key;
    expect429(await probe(late, addr));
    await sleep(300); // a lookup would have written its negative entry by now (waitUntil)
    expect(await cached(late)).toBe(false);
    // Wrong admin tokens count too.
    expect429(await call(`${E}/v1/accounts`, { key: "not-the-admin-token-at-all", json: { name: "x" }, headers: addr }));
    // Another address is unaffected, and so are keys that work from elsewhere.
    expectError(await probe((await newApiKey()).key, { "x-mesh-client-ip": "198.51.100.8" }), 401, "unauthorized");
    expect((await probe(mesh.apiKey, { "x-mesh-client-ip": "198.51.100.9" })).status).toBe(404);
  });
});

describe("pages and headers (item 15)", () => {
  const pages = ["/status", "/playground", "/docs"];

  it("the three pages send a CSP with nothing inline, no framing, nosniff and no-referrer; API answers nosniff and no-referrer", async () => {
    for (const path of pages) {
      const a = await call(`${E}${path}`);
      expect(a.status, path).toBe(200);
      const csp = a.headers.get("content-security-policy") ?? "";
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).toContain("style-src 'self'");
      expect(csp).toContain("require-trusted-types-for 'script'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).toContain("form-action 'none'");
      expect(csp).not.toMatch(/unsafe|nonce/);
      expect(a.headers.get("x-frame-options")).toBe("DENY");
      expect(a.headers.get("x-content-type-options")).toBe("nosniff");
      expect(a.headers.get("referrer-policy")).toBe("no-referrer");
      // Scripts and styles only as files from this origin, served from the Worker's static assets.
      const html = String(a.body);
      const scripts = [...html.matchAll(/<script\b([^>]*)>([^]*?)<\/script>/g)];
      expect(scripts.length, path).toBeGreaterThan(0);
      for (const [, attrs, body] of scripts) {
        expect(body, path).toBe("");
        const src = /src="(\/pages\/[^"]+\.js)"/.exec(attrs ?? "")?.[1];
        expect(src, path).toBeDefined();
        const file = await call(`${E}${src}`);
        expect(file.status, src).toBe(200);
        expect(file.headers.get("content-type"), src).toContain("text/javascript");
        expect(file.headers.get("x-content-type-options"), src).toBe("nosniff");
      }
      expect(html, path).not.toMatch(/<style/);
    }
    expect((await call(`${E}/pages/status.html`)).status).toBe(404);
    for (const a of [await call(`${E}/v1/models`, { key: mesh.apiKey }), await call(`${E}/v1/models`)]) {
      expect(a.headers.get("x-content-type-options")).toBe("nosniff");
      expect(a.headers.get("referrer-policy")).toBe("no-referrer");
    }
  });

  it("in Chromium: the pages work under their CSP, take no key from the URL and keep none in localStorage", async () => {
    const browser = await launchBrowser();
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      const errors = collectPageErrors(page);
      const regionCalls: (string | undefined)[] = [];
      page.on("request", (r) => {
        if (r.url().includes("/v1/regions")) regionCalls.push(r.headers().authorization);
      });

      // /status?key=...: not used, scrubbed from the address bar.
      await page.goto(`${E}/status?key=${mesh.apiKey}`);
      await until("the status page scrubs the key from the URL", async () => !page.url().includes(mesh.apiKey));
      expect(await page.getByTestId("key-input").inputValue()).toBe("");
      expect(regionCalls).toEqual([]);
      // Typed in, it works (the page's script and fetch run under the CSP) and stays in this tab only.
      await page.getByTestId("key-input").fill(mesh.apiKey);
      await page.getByRole("button", { name: "Use key" }).click();
      await page.locator('[data-testid^="region-row-"]').first().waitFor({ timeout: 15_000 });
      expect(await page.evaluate(() => sessionStorage.getItem("mesh.status.apiKey"))).toBe(mesh.apiKey);
      expect(await page.evaluate(() => localStorage.length)).toBeLessThanOrEqual(1); // the log-scale preference at most
      expect(await page.evaluate(() => JSON.stringify(localStorage))).not.toContain(mesh.apiKey);

      // /playground?key=...: not used either; a typed key reads the model list and opens the
      // stream socket (connect-src 'self' covers ws: to this origin).
      await page.goto(`${E}/playground?key=${mesh.apiKey}&model=demo-chat`);
      expect(page.url()).not.toContain(mesh.apiKey);
      expect(await page.inputValue("#key")).toBe("");
      expect(await page.inputValue("#model")).toBe("demo-chat");
      await page.fill("#key", mesh.apiKey);
      await page.dispatchEvent("#key", "change");
      await page.waitForFunction(() => [...document.querySelectorAll("#models option")].some((o) => (o as HTMLOptionElement).value === "demo-chat"), null, { timeout: 10_000 });
      const opened = await page.evaluate(
        (key) =>
          new Promise<string>((resolve) => {
            const ws = new WebSocket(`ws://${location.host}/v2/models/demo-chat/stream`, ["mesh.v1", `mesh.key.${key}`]);
            ws.onopen = () => (ws.close(), resolve("open"));
            ws.onerror = () => resolve("error");
          }),
        mesh.apiKey,
      );
      expect(opened).toBe("open");
      expect(await page.evaluate(() => JSON.stringify(localStorage))).not.toContain(mesh.apiKey);

      // /docs renders its reference under the CSP.
      await page.goto(`${E}/docs`);
      await page.waitForFunction(() => document.querySelectorAll("details.op").length > 10, null, { timeout: 10_000 });

      // No CSP violation (Chromium reports each as a console error) and no script error anywhere.
      expect(errors).toEqual([]);
      await context.close();
    } finally {
      await browser.close();
    }
  });
});

describe("/v1/regions is the caller's account's view (item 16)", () => {
  it("a key sees its own warm models and calls only; the global view is the operator's", async () => {
    const a = await newAccount("regions-a");
    const b = await newAccount("regions-b");
    await deployMlp(b.key, "b-secret-model");
    for (let i = 0; i < 3; i++) {
      const r = await call(`${E}/v2/models/b-secret-model/infer`, { key: b.key, json: mlpBody([[1, 2, 3, 4]]) });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    const view = async (token: string) => {
      const r = await call(`${E}/v1/regions`, { key: token });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      return r.body as RegionsView;
    };
    // B sees its own model warm and its own calls (once the edge has flushed them to Redis).
    const bView = await until("B's calls and warm model in B's view", async () => {
      const v = await view(b.key);
      const calls = v.regions.reduce((n, r) => n + r.latency.count, 0);
      return calls >= 3 && v.regions.some((r) => r.warmModels.some((m) => m.model === "b-secret-model")) ? v : undefined;
    });
    expect(bView.scope).toBe("account");
    // The operator sees everything counted.
    const global = await view(mesh.adminToken);
    expect(global.scope).toBe("operator");
    expect(global.regions.reduce((n, r) => n + r.warmModelCount, 0)).toBeGreaterThanOrEqual(1);
    expect(global.regions.reduce((n, r) => n + r.latency.count, 0)).toBeGreaterThanOrEqual(3);
    expect(global.regions.some((r) => r.capacity !== null)).toBe(true);
    // A, which has no models and made no calls, sees none of B's (nor anyone's) figures.
    const aView = await view(a.key);
    expect(aView.scope).toBe("account");
    expect(JSON.stringify(aView)).not.toContain("b-secret-model");
    for (const r of aView.regions) {
      expect({ region: r.name, warm: r.warmModels, count: r.warmModelCount, calls: r.latency.count, colos: r.latency.byColo, history: r.history, rtt: r.rttMs, queue: r.queue, inflight: r.inflight, capacity: r.capacity }).toEqual({
        region: r.name,
        warm: [],
        count: 0,
        calls: 0,
        colos: {},
        history: [],
        rtt: {},
        queue: 0,
        inflight: null,
        capacity: null,
      });
    }
  });
});

describe("monthly quota (item 17)", () => {
  it("calls made before a quota was set count toward it: 2 calls, then a quota of 5, allow 3 more", async () => {
    const acc = await newAccount("late-quota");
    await deployMlp(acc.key, "q-mlp");
    const dry = (key: string) => call(`${E}/v2/models/q-mlp/infer`, { key, json: mlpBody([[1, 2, 3, 4]]), headers: { "x-mesh-dry-run": "1" } });
    for (let i = 0; i < 2; i++) expect((await dry(acc.key)).status).toBe(200);
    await patchAccount(acc.id, { monthlyRequests: 5 });
    // A key made after the change reads the quota from D1 on its first call (no cached record),
    // so every call below is checked against it; the count is the account's.
    const fresh = await newKey(acc.key);
    let passed = 2;
    let refused: Answer | undefined;
    for (let i = 0; i < 20 && !refused; i++) {
      const a = await dry(fresh);
      if (a.status === 429) refused = a;
      else {
        expect(a.status, JSON.stringify(a.body)).toBe(200);
        passed++;
      }
    }
    say(`late quota: ${passed} calls passed in all, quota 5`);
    expect(refused).toBeDefined();
    expect429(refused!, "quota_exceeded");
    expect(passed).toBe(5);
  });

  it("a quota set after the shared count was lost still counts the month's recorded calls", async () => {
    const acc = await newAccount("lost-count");
    await deployMlp(acc.key, "lost-mlp");
    for (let i = 0; i < 2; i++) {
      const r = await call(`${E}/v2/models/lost-mlp/infer`, { key: acc.key, json: mlpBody([[1, 2, 3, 4]]) });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
    }
    const now = new Date();
    const counter = `mesh:quota:${acc.id}:${now.getUTCFullYear()}${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
    await until("both calls in the shared count", async () => (await redis.get(counter)) === "2");
    await until("both calls in the usage rows", async () => {
      const u = await call(`${E}/v1/usage?model=lost-mlp`, { key: acc.key });
      return u.body?.models?.[0]?.calls === 2;
    });
    // Redis loses the count (a restart, a flush); the other isolate never saw these calls.
    await redis.del(counter);
    const patched = await call(`${E2}/v1/accounts/${acc.id}`, { method: "PATCH", key: mesh.adminToken, json: { monthlyRequests: 5 } });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    const fresh = await newKey(acc.key);
    let passed = 2;
    let refused: Answer | undefined;
    for (let i = 0; i < 20 && !refused; i++) {
      const a = await call(`${E2}/v2/models/lost-mlp/infer`, { key: fresh, json: mlpBody([[1, 2, 3, 4]]), headers: { "x-mesh-dry-run": "1" } });
      if (a.status === 429) refused = a;
      else {
        expect(a.status, JSON.stringify(a.body)).toBe(200);
        passed++;
      }
    }
    say(`lost count: ${passed} calls passed in all, quota 5`);
    expect429(refused!, "quota_exceeded");
    expect(passed).toBe(5);
  });
});
