// TLS between the mesh's parts (docs/deploy.md, TLS): a router with a certificate serves HTTPS
// and WSS, a node trusts only the CAs it is given and keeps retrying a router it does not trust,
// plain HTTP is refused off loopback outside local mode, and the edge in workerd reaches an
// https/wss router signed by the local CA and refuses one signed by another CA.
//
// Real parts: certificates from the openssl CLI (local/ca.ts), router and node agent processes,
// a whole mesh with MESH_TLS (`startMesh({ tls: true })`: workerd, redis-server, onnxruntime).
// A refusal is seen on the router's side: it counts the handshakes a node aborted
// (mesh_router_tls_handshake_failures_total) and never lists that node; the edge answers
// region_error for a router it would not talk to, and that router never saw the call.

import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError as NodeConfigError, nodeConfigFromEnv } from "../gpu-node/config.js";
import { makeLocalCa, type LocalCa } from "../local/ca.js";
import { freePort } from "../local/free-port.js";
import { startMesh, ROOT, type MeshHandle } from "../local/mesh.js";
import { signRequest } from "../protocol/signing.js";
import type { RegionReport } from "../protocol/region-report.js";
import { ConfigError as RouterConfigError, routerConfigFromEnv } from "../regions/config.js";
import { call, mlpBody } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";

const SECRET = "tls-test-secret-0123456789";
const TOKEN = "tls-test-node-token-0123456789";
const METRICS = "tls-test-metrics-0123456789";
const HOSTS = ["127.0.0.1", "localhost"];

let dir: string;
/** The CA the router's certificate comes from, and one nobody in the mesh trusts. */
let trusted: LocalCa;
let foreign: LocalCa;
const children: ChildProcess[] = [];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-tls-"));
  trusted = await makeLocalCa(join(dir, "trusted"), [{ name: "router", hosts: HOSTS }]);
  foreign = await makeLocalCa(join(dir, "foreign"), [{ name: "router", hosts: HOSTS }]);
});

afterAll(async () => {
  await Promise.all(children.map((c) => stopChild(c)));
  await Promise.all([...agents.values()].map((a) => a.close()));
  await rm(dir, { recursive: true, force: true });
});

function spawnTsx(script: string, env: Record<string, string>): ChildProcess {
  const c = spawn(process.execPath, ["--import", "tsx", join(ROOT, script)], {
    cwd: ROOT,
    env: { ...process.env, MESH_PARENT_PID: String(process.pid), LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "ignore", "ignore"],
  });
  children.push(c);
  return c;
}

async function stopChild(c: ChildProcess): Promise<void> {
  if (c.exitCode !== null || c.signalCode !== null) return;
  const gone = new Promise<void>((r) => c.once("exit", () => r()));
  c.kill("SIGKILL");
  await gone;
}

const exitOf = (c: ChildProcess) =>
  c.exitCode !== null ? Promise.resolve(c.exitCode) : new Promise<number | null>((r) => c.once("exit", (code) => r(code)));

/** Fetch options that trust `ca` only (one connection pool per CA). */
const agents = new Map<string, Agent>();
function trusting(ca: LocalCa): RequestInit {
  let agent = agents.get(ca.caFile);
  if (!agent) agents.set(ca.caFile, (agent = new Agent({ connect: { ca: readFileSync(ca.caFile, "utf8") } })));
  return { dispatcher: agent } as unknown as RequestInit;
}

async function tlsFailures(url: string, ca: LocalCa): Promise<number> {
  const res = await fetch(`${url}/metrics`, { headers: { authorization: `Bearer ${METRICS}` }, ...trusting(ca) });
  const m = /^mesh_router_tls_handshake_failures_total(?:\{[^}]*\})? (\d+)/m.exec(await res.text());
  return m ? Number(m[1]) : 0;
}

async function routerStatus(url: string, ca: LocalCa, secret = SECRET): Promise<RegionReport> {
  const headers = await signRequest(secret, "GET", "/v1/status");
  const res = await fetch(`${url}/v1/status`, { headers, ...trusting(ca) });
  if (!res.ok) throw new Error(`status ${res.status}`);
  return (await res.json()) as RegionReport;
}

describe("the local CA (local/ca.ts)", () => {
  it("writes the CA and a certificate per host, keys readable by the owner only", async () => {
    for (const f of [trusted.caKeyFile, trusted.certs.router!.keyFile]) expect((await stat(f)).mode & 0o777).toBe(0o600);
    expect(await readFile(trusted.certs.router!.certFile, "utf8")).toMatch(/BEGIN CERTIFICATE/);
    await expect(makeLocalCa(join(dir, "bad"), [{ name: "x", hosts: ["a b,DNS:evil"] }])).rejects.toThrow(/neither an IP address nor a host name/);
  });
});

describe("plain HTTP only on loopback or in local mode (config, validated once)", () => {
  const router = { MESH_REGION: "tls-r", MESH_SECRET: SECRET, NODE_TOKEN: TOKEN };
  it("router: a non-loopback address needs a certificate; the key must match it", () => {
    expect(() => routerConfigFromEnv({ ...router, HOST: "0.0.0.0" })).toThrow(RouterConfigError);
    expect(() => routerConfigFromEnv({ ...router, HOST: "0.0.0.0" })).toThrow(/ROUTER_TLS_CERT/);
    expect(routerConfigFromEnv({ ...router, HOST: "0.0.0.0", MESH_LOCAL: "1" }).tls).toBeNull();
    expect(routerConfigFromEnv({ ...router, HOST: "127.0.0.1" }).tls).toBeNull();
    const tls = { ROUTER_TLS_CERT: trusted.certs.router!.certFile, ROUTER_TLS_KEY: trusted.certs.router!.keyFile };
    expect(routerConfigFromEnv({ ...router, HOST: "0.0.0.0", ...tls }).tls?.certFile).toBe(tls.ROUTER_TLS_CERT);
    expect(() => routerConfigFromEnv({ ...router, ROUTER_TLS_CERT: tls.ROUTER_TLS_CERT })).toThrow(/go together/);
    expect(() => routerConfigFromEnv({ ...router, ...tls, ROUTER_TLS_KEY: foreign.certs.router!.keyFile })).toThrow(RouterConfigError);
    expect(() => routerConfigFromEnv({ ...router, ...tls, ROUTER_TLS_KEY: join(dir, "missing.key") })).toThrow(/cannot read/);
  });

  it("node: ws:// only to a loopback router or in local mode; MESH_CA_FILE must be a readable PEM", () => {
    const node = { NODE_TOKEN: TOKEN };
    expect(() => nodeConfigFromEnv({ ...node, ROUTER_URL: "ws://10.1.2.3:8701/v1/nodes" })).toThrow(NodeConfigError);
    expect(nodeConfigFromEnv({ ...node, ROUTER_URL: "ws://10.1.2.3:8701/v1/nodes", MESH_LOCAL: "1" }).localMode).toBe(true);
    expect(nodeConfigFromEnv({ ...node, ROUTER_URL: "ws://[::1]:8701/v1/nodes" }).ca).toBeNull();
    expect(nodeConfigFromEnv({ ...node, ROUTER_URL: "wss://router.example:8701/v1/nodes", MESH_CA_FILE: trusted.caFile }).ca?.file).toBe(trusted.caFile);
    expect(() => nodeConfigFromEnv({ ...node, ROUTER_URL: "wss://router.example/v1/nodes", MESH_CA_FILE: join(dir, "none.crt") })).toThrow(/MESH_CA_FILE/);
    expect(() => nodeConfigFromEnv({ ...node, ROUTER_URL: "wss://router.example/v1/nodes", MESH_CA_FILE: trusted.caKeyFile })).toThrow(/no PEM certificate/);
  });

  it("edge: a region URL is https:// unless the router is on this machine or the edge is in local mode", async () => {
    // Imported by path at run time: the Worker's files are type-checked against workers-types
    // (edge/tsconfig.json), which this Node project does not load.
    const path = "../edge/env.js";
    const { loadConfig } = (await import(path)) as { loadConfig: (env: Record<string, string>) => { regions: { url: string }[] } };
    const env = (url: string, local?: string) =>
      ({
        ADMIN_TOKEN: "admin-token-0123456789",
        REGIONS: JSON.stringify([{ name: "us-west", url }]),
        REGION_SECRETS: JSON.stringify({ "us-west": SECRET }),
        PUBLIC_ORIGIN: "https://api.example.com",
        ...(local ? { MESH_LOCAL: local } : {}),
      }) as Record<string, string>;
    expect(() => loadConfig(env("http://router.example:8701"))).toThrow(/must be https/);
    expect(loadConfig(env("https://router.example:8701")).regions[0]!.url).toBe("https://router.example:8701");
    expect(loadConfig(env("http://10.1.2.3:8701", "1")).regions).toHaveLength(1);
    expect(loadConfig(env("http://127.0.0.1:8701")).regions).toHaveLength(1);
  });

  it("a router process without certificates on a non-loopback address exits 2 at start", { timeout: 120_000 }, async () => {
    const c = spawnTsx("regions/main.ts", { MESH_REGION: "tls-r", MESH_SECRET: SECRET, NODE_TOKEN: TOKEN, HOST: "0.0.0.0", PORT: "0" });
    expect(await exitOf(c)).toBe(2);
  });
});

describe("node <-> router over WSS (real processes)", () => {
  let url: string;

  beforeAll(async () => {
    const port = await freePort();
    url = `https://127.0.0.1:${port}`;
    spawnTsx("regions/main.ts", {
      MESH_REGION: "tls-r",
      MESH_SECRET: SECRET,
      NODE_TOKEN: TOKEN,
      METRICS_TOKEN: METRICS,
      PORT: String(port),
      ROUTER_TLS_CERT: trusted.certs.router!.certFile,
      ROUTER_TLS_KEY: trusted.certs.router!.keyFile,
      DRAIN_TIMEOUT_MS: "0",
    });
    await waitUntil("router on https", 90_000, async () => ((await fetch(`${url}/healthz`, trusting(trusted))).ok ? true : undefined), 100);
  });

  const startNode = (id: string, ca: LocalCa) =>
    spawnTsx("gpu-node/main.ts", {
      NODE_ID: id,
      ROUTER_URL: `${url.replace(/^https/, "wss")}/v1/nodes`,
      NODE_TOKEN: TOKEN,
      MESH_CA_FILE: ca.caFile,
      MESH_EXECUTION_PROVIDER: "cpu",
      MODEL_CACHE_DIR: join(dir, "cache", id),
      RECONNECT_MIN_MS: "50",
      RECONNECT_MAX_MS: "200",
    });

  it("the router answers HTTPS only: a plain-HTTP client gets no answer", async () => {
    await expect(fetch(url.replace(/^https/, "http") + "/healthz", { signal: AbortSignal.timeout(5_000) })).rejects.toThrow();
  });

  it("a node that does not trust the router's certificate is refused, and keeps retrying without crashing", { timeout: 120_000 }, async () => {
    const before = await tlsFailures(url, trusted);
    const node = startNode("untrusting", foreign);
    // Three aborted handshakes: the node tried, refused, backed off and tried again.
    await waitUntil("the node's handshakes refused", 90_000, async () => ((await tlsFailures(url, trusted)) >= before + 3 ? true : undefined), 100);
    expect(node.exitCode).toBeNull();
    expect((await routerStatus(url, trusted)).nodes.map((n) => n.id)).not.toContain("untrusting");
    await stopChild(node);
  });

  it("a node given the router's CA is served", { timeout: 120_000 }, async () => {
    startNode("trusting", trusted);
    const s = await waitUntil("node connected", 90_000, async () => {
      const st = await routerStatus(url, trusted);
      return st.nodes.some((n) => n.id === "trusting") ? st : undefined;
    }, 100);
    expect(s.nodes.find((n) => n.id === "trusting")?.slots).toBeGreaterThan(0);
  });
});

describe("MESH_TLS mesh: edge -> router over https/wss with the local CA, node -> router over wss", () => {
  let mesh: MeshHandle;
  const REGION = "tls-west";

  beforeAll(async () => {
    mesh = await startMesh({
      stateDir: join(dir, "mesh"),
      tls: true,
      regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
      tinyGpt: false,
      nodeEnv: { MESH_EXECUTION_PROVIDER: "cpu" },
      progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l),
    });
  }, 400_000);

  afterAll(async () => {
    await mesh?.stop();
  });

  it("routers are https, and a real inference call goes edge -> router -> node and back", async () => {
    expect(mesh.regions[REGION]).toMatch(/^https:\/\//);
    expect(mesh.caFile).toBeTruthy();
    const a = await call(`${mesh.edge}/v2/models/demo-mlp/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]) });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(a.headers.get("x-mesh-region")).toBe(REGION);
    expect(a.body.outputs[0].shape).toEqual([1, 3]);
  });

  it("a stream goes over the edge's wss socket to the router", async () => {
    const res = await fetch(`${mesh.edge}/v2/models/demo-chat/generate_stream`, {
      method: "POST",
      headers: { authorization: `Bearer ${mesh.apiKey}`, "content-type": "application/json" },
      body: JSON.stringify({ id: "tls-sse", text_input: "The river", parameters: { max_tokens: 8, seed: 1 } }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toMatch(/"type":"done"/);
    expect((text.match(/"type":"token"/g) ?? []).length).toBe(8);
  });

  it("a router whose certificate comes from another CA is refused by the edge", { timeout: 240_000 }, async () => {
    const url = mesh.regions[REGION]!;
    // The mesh's node goes first (it would be refused too, and count among the handshakes
    // below), then its router, deleting its report.
    for (const p of mesh.processes.filter((x) => x.name.startsWith("node-"))) {
      const gone = new Promise<void>((r) => (p.child.exitCode !== null ? r() : p.child.once("exit", () => r())));
      p.child.kill("SIGKILL");
      await gone;
    }
    await mesh.stopRouter(REGION);
    // An impostor on the same address with the region's secret, publishing its report: only its
    // certificate is wrong. A node that trusts the impostor's CA makes its report say "healthy".
    spawnTsx("regions/main.ts", {
      MESH_REGION: REGION,
      MESH_SECRET: mesh.regionSecrets[REGION]!,
      NODE_TOKEN: mesh.nodeToken,
      METRICS_TOKEN: METRICS,
      REDIS_URL: mesh.redis.url,
      REDIS_TOKEN: mesh.redis.token,
      PORT: new URL(url).port,
      ROUTER_TLS_CERT: foreign.certs.router!.certFile,
      ROUTER_TLS_KEY: foreign.certs.router!.keyFile,
      DRAIN_TIMEOUT_MS: "0",
    });
    await waitUntil("impostor up", 90_000, async () => ((await fetch(`${url}/healthz`, trusting(foreign))).ok ? true : undefined), 100);
    spawnTsx("gpu-node/main.ts", {
      NODE_ID: "impostor-node",
      ROUTER_URL: `${url.replace(/^https/, "wss")}/v1/nodes`,
      NODE_TOKEN: mesh.nodeToken,
      MESH_CA_FILE: foreign.caFile,
      MESH_EXECUTION_PROVIDER: "cpu",
      MODEL_CACHE_DIR: join(dir, "cache", "impostor-node"),
    });
    await waitUntil("impostor's node", 90_000, async () => ((await routerStatus(url, foreign, mesh.regionSecrets[REGION]!)).nodes.length > 0 ? true : undefined), 100);
    // Calls until the edge has seen the impostor's healthy report and tried it: it says the
    // connection failed (workerd refused the certificate), and none of its calls reached the
    // impostor's HTTP layer (an unanswerable call would still count there as failed).
    const refused = await waitUntil("the edge to try the impostor", 60_000, async () => {
      const a = await call(`${mesh.edge}/v2/models/demo-mlp/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]) });
      expect(a.status).not.toBe(200);
      return a.body?.code === "region_error" ? a : undefined;
    }, 200);
    expect(refused.status).toBe(502);
    expect(refused.body).toMatchObject({ error: expect.any(String), requestId: expect.any(String) });
    const seen = await routerStatus(url, foreign, mesh.regionSecrets[REGION]!);
    expect(seen.served + seen.failed).toBe(0);
  });
});
