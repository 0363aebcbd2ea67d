// Boots the whole mesh on one machine: redis-server with the Upstash REST stand-in in front of
// it, the edge in workerd (wrangler dev, local D1 with migrations, local R2), a router per
// region with its node agents, then a demo account, key and models. `npm start` and the
// end-to-end tests both use this, so what the tests prove is what a user runs.

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { signRequest } from "../protocol/signing.js";
import type { RegionReport } from "../protocol/region-report.js";
import { makeCharModel, DEMO_CHAT_NAME } from "../scripts/make-char-model.js";
import { TINY_GPT_NAME, tinyGptBundle } from "../scripts/make-demo-models.js";
import { makeDemoModels } from "../scripts/make-demo-models.js";
import { makeLocalCa } from "./ca.js";
import { localAgent } from "./keep-alive.js";
import { killGroupOnExit, signalGroup } from "./process-group.js";
import { freePort } from "./free-port.js";
import { REDIS_INSTALL_HINT, redisServerOnPath, startRedisServer, type RedisServerHandle } from "./redis-server.js";
import { startUpstashRestServer, type UpstashRestServer } from "./upstash-rest-server.js";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");

export interface RegionSpec {
  name: string;
  lat: number;
  lon: number;
  nodes: number;
}

export const DEFAULT_REGIONS: RegionSpec[] = [
  { name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 },
  { name: "ap-seoul", lat: 37.57, lon: 126.98, nodes: 1 },
];

export interface MeshOptions {
  /** Where state, logs, models and local.json go (default .mesh/). Wiped at start. */
  stateDir?: string;
  regions?: RegionSpec[];
  /** Preferred edge port (a free one is used when taken). */
  edgePort?: number;
  /** Progress lines; tests pass a no-op. */
  progress?: (line: string) => void;
  /** Extra environment for node agents (e.g. MEMORY_BUDGET_MB). */
  nodeEnv?: Record<string, string>;
  /** Extra environment for routers. */
  routerEnv?: Record<string, string>;
  /** Extra environment for the node agents of one region (e.g. MESH_SIMULATED_LOAD_MS). */
  regionNodeEnv?: Record<string, Record<string, string>>;
  /** Deploy the demo account and models (default true). */
  demo?: boolean;
  /**
   * With the demo: hold demo-mlp warm in every region (keep-warm floor 1) and wait until it is,
   * so a first call from any colo goes by distance rather than to wherever a cold start was
   * already paid (npm start sets it; default false).
   */
  demoWarm?: boolean;
  /** With the demo: the character bigram demo-chat (default true; tests compare against it). */
  demoChat?: boolean;
  /**
   * With the demo: the tiny-gpt bundle (graph plus Hugging Face files) from this directory;
   * default models/tiny-gpt/ when it is there, false for none.
   */
  tinyGpt?: string | false;
  /** Extra vars for the edge Worker (e.g. SIMULATED_RTT, EXPLORATION_SHARE). */
  edgeVars?: Record<string, string>;
  /**
   * More copies of the edge, each in its own isolate over the same D1, R2 and Redis (like two
   * colos of one deployment); their URLs are in `edges` after the first. Default 0.
   */
  extraEdges?: number;
  /** Vars for each extra edge on top of the first's, in order (a bench's baseline setting in one isolate). */
  extraEdgeVars?: Record<string, string>[];
  /**
   * Tests: a stand-in for Cloudflare's front line in front of the edge (local/edge-server.ts
   * FRONT_LINE), at `front`: a caller that disconnects there reaches the edge as request.signal.
   */
  frontLine?: boolean;
  /**
   * Artifacts through presigned R2 URLs served by the edge's local stand-in (default true, what
   * `npm start` runs); false: the region-signed /internal/artifacts route, as without R2 credentials.
   */
  r2Presign?: boolean;
  /**
   * Routers on HTTPS/WSS with certificates from a CA made at start (local/ca.ts, in
   * <stateDir>/tls); nodes and the edge trust that CA only (besides public CAs). `MESH_TLS=1 npm start`.
   */
  tls?: boolean;
  /**
   * Multi-host mode (local/topology.ts): each region's router and nodes, and an edge per colo,
   * run on hosts of their own (network namespaces), the edge reaching each region over its
   * colo's link. Absent: everything on this host, over loopback.
   */
  hosts?: HostLayout;
}

/** Where the parts of the mesh run when they do not all share this host (MeshOptions.hosts). */
export interface HostLayout {
  /** The argv prefix that runs a command on a host (e.g. ["ip", "netns", "exec", ns]). */
  exec(host: string): string[];
  /** Address every host reaches this host at: Redis's REST endpoint listens there. */
  servicesAddress: string;
  /** Each region's host, and its address from this host (the launcher's probes, metrics). */
  regions: Record<string, { host: string; address: string }>;
  /** One edge per colo, on its own host; `regionAddress`: each region as that colo reaches it (its own link). */
  colos: { colo: string; lat: number; lon: number; host: string; address: string; regionAddress: Record<string, string> }[];
}

export interface DemoModel {
  name: string;
  version: number;
  file: string;
}

export interface ProcessInfo {
  name: string;
  child: ChildProcess;
  log: string;
}

export interface MeshHandle {
  edge: string;
  /** Every edge isolate's URL: `edge` first, then the extra copies (see MeshOptions.extraEdges). */
  edges: string[];
  /** With MeshOptions.frontLine: the front line's URL (200 at once, then the edge's body); else null. */
  front: string | null;
  /** Multi-host mode: each colo's edge, as this host reaches it (`edge` is the first colo's). */
  colos: Record<string, string>;
  regions: Record<string, string>;
  redis: { url: string; token: string; port: number };
  adminToken: string;
  /** Each region's own secret (its router holds only that one; the edge holds them all). */
  regionSecrets: Record<string, string>;
  nodeToken: string;
  /**
   * Prometheus scraping (docs/observability.md): the bearer token every router and node asks
   * for, and each one's /metrics URL by process name (router-<region>, node-<id>).
   */
  metrics: { token: string; targets: Record<string, string> };
  apiKey: string;
  accountId: string;
  models: DemoModel[];
  stateDir: string;
  processes: ProcessInfo[];
  /** Starts one more node agent in a region (tests use this for kill/replace). */
  startNode(region: string, id: string, env?: Record<string, string>): Promise<ProcessInfo>;
  regionStatus(region: string): Promise<RegionReport>;
  /** The stand-in's R2 S3 settings (the edge's and routers' R2_* variables); null with r2Presign false. */
  r2: { endpoint: string; bucket: string; accessKeyId: string; secretAccessKey: string } | null;
  /** With MeshOptions.tls: the local CA's certificate (PEM file) that signed every router's; else null. */
  caFile: string | null;
  /** Stops a region's router (SIGTERM drains it; SIGKILL kills it). */
  stopRouter(region: string, signal?: NodeJS.Signals): Promise<void>;
  /** Starts a region's router again on its port; its nodes reconnect by themselves. */
  startRouter(region: string): Promise<void>;
  /** Stops and restarts redis-server (the Upstash REST endpoint stays up). */
  stopRedis(): Promise<void>;
  startRedis(): Promise<void>;
  /**
   * Freezes redis-server (SIGSTOP) and thaws it (SIGCONT): while frozen it still accepts
   * connections and answers nothing, the way a hung Redis looks to its clients.
   */
  pauseRedis(): void;
  resumeRedis(): void;
  stop(): Promise<void>;
}

const TSX = ["--import", "tsx"];

async function portOr(preferred: number | undefined): Promise<number> {
  if (preferred) {
    const net = await import("node:net");
    const free = await new Promise<boolean>((res) => {
      const s = net.createServer();
      s.once("error", () => res(false));
      s.listen(preferred, "127.0.0.1", () => s.close(() => res(true)));
    });
    if (free) return preferred;
  }
  return freePort();
}

/** Polls `probe` every `everyMs` until it returns something other than undefined; fails early if `child` exits (the benches use it too). */
export async function waitFor<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>, child?: ProcessInfo, everyMs = 150): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    if (child && (child.child.exitCode !== null || child.child.signalCode !== null)) {
      throw new Error(`${what}: ${child.name} exited (${child.child.exitCode ?? child.child.signalCode}); see ${child.log}`);
    }
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms${last ? ` (${String(last)})` : ""}${child ? `; see ${child.log}` : ""}`);
}

function spawnLogged(name: string, cmd: string, args: string[], env: Record<string, string>, logDir: string, on: string[] = []): ProcessInfo {
  const log = join(logDir, `${name}.log`);
  const out = createWriteStream(log, { flags: "a" });
  // `on` runs it on another host (`ip netns exec <ns>` execs the command: the same pid).
  if (on.length) [cmd, args] = [on[0]!, [...on.slice(1), cmd, ...args]];
  // Own process group, so stop() reaches the whole tree (wrangler starts workerd underneath).
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, MESH_PARENT_PID: String(process.pid), ...env },
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  killGroupOnExit(child);
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  return { name, child, log };
}

async function killTree(p: ProcessInfo, signal: NodeJS.Signals = "SIGTERM", graceMs = 8_000): Promise<void> {
  const { child } = p;
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  signalGroup(child, signal);
  const timer = setTimeout(() => signalGroup(child, "SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
  // Grandchildren (workerd) may outlive their parent by a moment.
  signalGroup(child, "SIGKILL");
}

async function runToEnd(name: string, cmd: string, args: string[], env: Record<string, string>, logDir: string): Promise<void> {
  const p = spawnLogged(name, cmd, args, env, logDir);
  const code = await new Promise<number | null>((r) => p.child.once("exit", (c) => r(c)));
  if (code !== 0) throw new Error(`${name} failed (exit ${code}); see ${p.log}`);
}

/** The launcher's own calls into the mesh (local/keep-alive.ts says why not the default). */
const launcherAgent = localAgent();

async function jsonFetch(url: string, init: RequestInit & { token?: string } = {}): Promise<unknown> {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  const res = await fetch(url, { ...init, headers, dispatcher: launcherAgent } as RequestInit);
  const text = await res.text();
  if (!res.ok) throw new Error(`${init.method ?? "GET"} ${url} -> ${res.status}: ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

export async function startMesh(opts: MeshOptions = {}): Promise<MeshHandle> {
  const stateDir = resolve(opts.stateDir ?? join(ROOT, ".mesh"));
  const progress = opts.progress ?? (() => undefined);
  const regions = opts.regions ?? DEFAULT_REGIONS;
  const hosts = opts.hosts;
  // Distance is real there; a simulated delay on top would count it twice.
  if (hosts && opts.edgeVars?.SIMULATED_RTT) throw new Error("SIMULATED_RTT is for the one-machine mode; the multi-host mode's links carry the delay");
  const processes: ProcessInfo[] = [];
  let redis: RedisServerHandle | null = null;
  let rest: UpstashRestServer | null = null;
  const started = Date.now();
  const step = (msg: string) => progress(`[mesh +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);

  const signalRedis = (signal: NodeJS.Signals) => {
    try {
      if (redis) process.kill(redis.pid, signal);
    } catch {
      // already gone (stopRedis)
    }
  };
  const stop = async () => {
    await Promise.all(processes.filter((p) => p.name.startsWith("node-")).map((p) => killTree(p)));
    await Promise.all(processes.filter((p) => !p.name.startsWith("node-")).map((p) => killTree(p)));
    await rest?.close();
    // A frozen redis-server (pauseRedis) would sit out SIGTERM until its kill timer.
    signalRedis("SIGCONT");
    await redis?.stop();
  };

  try {
    if (!redisServerOnPath()) throw new Error(REDIS_INSTALL_HINT);
    await rm(stateDir, { recursive: true, force: true });
    const logDir = join(stateDir, "logs");
    await mkdir(logDir, { recursive: true });

    const secret = () => randomBytes(24).toString("base64url");
    const adminToken = secret();
    // A secret per region: one region's secret signs nothing another region accepts.
    const regionSecrets = Object.fromEntries(regions.map((r) => [r.name, secret()]));
    const nodeToken = secret();
    const redisToken = secret();
    const metricsToken = secret();
    const metricsTargets: Record<string, string> = {};
    // The edge's port is needed now: routers sign keep-warm URLs for its R2 stand-in.
    // Multi-host: every colo's edge has a host of its own, so all of them take the same port.
    const edgePort = hosts ? (opts.edgePort ?? 8787) : await portOr(opts.edgePort);
    const edgeOrigin = `http://${hosts?.colos[0]!.address ?? "127.0.0.1"}:${edgePort}`;
    // What a read-only R2 API token would be in production; the edge stands in for R2's S3 endpoint.
    const r2 =
      opts.r2Presign === false
        ? null
        : { endpoint: `${edgeOrigin}/r2`, bucket: "inference-mesh-artifacts", accessKeyId: `local-${randomBytes(8).toString("hex")}`, secretAccessKey: secret() };
    const r2Env: Record<string, string> = r2
      ? { R2_S3_ENDPOINT: r2.endpoint, R2_BUCKET: r2.bucket, R2_ACCESS_KEY_ID: r2.accessKeyId, R2_SECRET_ACCESS_KEY: r2.secretAccessKey }
      : {};

    step("starting redis-server");
    redis = await startRedisServer({});
    rest = await startUpstashRestServer({ redisHost: redis.host, redisPort: redis.port, token: redisToken, host: hosts?.servicesAddress });
    const redisInfo = { url: rest.url, token: redisToken, port: redis.port };
    step(`redis-server on :${redis.port}, Upstash REST endpoint ${rest.url}`);

    // Regions first: the edge's REGIONS config needs their URLs.
    const regionUrls: Record<string, string> = {};
    const regionPorts = await Promise.all(regions.map(() => freePort()));
    regions.forEach((r, i) => (regionUrls[r.name] = `${opts.tls ? "https" : "http"}://${hosts?.regions[r.name]!.address ?? "127.0.0.1"}:${regionPorts[i]}`));
    // A router's certificate names every address it is reached at: loopback (its nodes, this
    // launcher in the one-machine mode), its host's address, and its end of each colo's link.
    const routerNames = (name: string) => [
      ...new Set(["127.0.0.1", "localhost", ...(hosts ? [hosts.regions[name]!.address, ...hosts.colos.map((c) => c.regionAddress[name]!)] : [])]),
    ];
    const ca = opts.tls ? await makeLocalCa(join(stateDir, "tls"), regions.map((r) => ({ name: `router-${r.name}`, hosts: routerNames(r.name) }))) : null;
    if (ca) step(`local CA ${ca.caFile}: routers serve HTTPS/WSS`);
    // This launcher's own calls to the routers trust the local CA like the nodes and the edge do.
    const regionDispatcher = ca ? { dispatcher: localAgent({ ca: await readFile(ca.caFile, "utf8") }) } : {};
    const caEnv: Record<string, string> = ca ? { MESH_CA_FILE: ca.caFile } : {};
    for (const r of regions) metricsTargets[`router-${r.name}`] = `${regionUrls[r.name]}/metrics`;
    const spawnRouter = (name: string) =>
      spawnLogged(
        `router-${name}`,
        process.execPath,
        [...TSX, join(ROOT, "regions/main.ts")],
        {
          MESH_REGION: name,
          PORT: new URL(regionUrls[name]!).port,
          // On a host of its own it serves its links and its nodes (loopback) alike.
          ...(hosts ? { HOST: "0.0.0.0" } : {}),
          // Across namespaces without TLS (MESH_TLS=0): plain HTTP off loopback is the one-machine mode's only.
          ...(hosts && !ca ? { MESH_LOCAL: "1" } : {}),
          MESH_SECRET: regionSecrets[name]!,
          NODE_TOKEN: nodeToken,
          ...(ca ? { ROUTER_TLS_CERT: ca.certs[`router-${name}`]!.certFile, ROUTER_TLS_KEY: ca.certs[`router-${name}`]!.keyFile } : {}),
          REDIS_URL: redisInfo.url,
          REDIS_TOKEN: redisToken,
          METRICS_TOKEN: metricsToken,
          ...r2Env,
          ...opts.routerEnv,
        },
        logDir,
        hosts?.exec(hosts.regions[name]!.host),
      );
    const waitRouter = (name: string, p: ProcessInfo) =>
      waitFor(`router ${name}`, 30_000, async () => ((await fetch(regionUrls[name] + "/healthz", regionDispatcher as RequestInit)).ok ? true : undefined), p);
    const routerProcs = regions.map((r) => spawnRouter(r.name));
    processes.push(...routerProcs);
    step(`starting routers: ${regions.map((r) => `${r.name} ${regionUrls[r.name]}`).join(", ")}`);

    // The edge: migrations, then wrangler dev. Secrets go through an env file, not argv.
    const wrangler = join(ROOT, "node_modules/wrangler/bin/wrangler.js");
    const persist = join(stateDir, "wrangler");
    const wranglerEnv = { WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" };
    step("applying D1 migrations");
    await runToEnd("d1-migrations", process.execPath, [wrangler, "d1", "migrations", "apply", "DB", "--local", "--persist-to", persist], wranglerEnv, logDir);
    const regionsVar = JSON.stringify(regions.map((r) => ({ name: r.name, url: regionUrls[r.name], lat: r.lat, lon: r.lon })));
    const edgeVars: Record<string, string> = {
      ADMIN_TOKEN: adminToken,
      REGION_SECRETS: JSON.stringify(regionSecrets),
      // Nodes download from the edge's configured origin, never from a caller's Host.
      PUBLIC_ORIGIN: edgeOrigin,
      REDIS_URL: redisInfo.url,
      REDIS_TOKEN: redisToken,
      REGIONS: regionsVar,
      INFER_TIMEOUT_MS: "30000",
      MESH_LOCAL: "1",
      // A generous default per-key rate limit for a development mesh (benches run thousands of
      // calls a second); deployments keep the edge's own default (100/s, burst 200).
      KEY_RATE_PER_SECOND: "100000",
      KEY_RATE_BURST: "100000",
      ...r2Env,
      ...opts.edgeVars,
    };
    const varsFile = join(stateDir, "edge-vars.json");
    await writeFile(varsFile, JSON.stringify(edgeVars), { mode: 0o600 });
    // The same bundle `wrangler deploy` would upload, served by workerd through Miniflare.
    const buildDir = join(stateDir, "edge-build");
    step("bundling the edge Worker");
    await runToEnd("edge-bundle", process.execPath, [wrangler, "deploy", "--dry-run", "--outdir", buildDir], wranglerEnv, logDir);
    const extraPorts = hosts ? [] : await Promise.all(Array.from({ length: opts.extraEdges ?? 0 }, () => freePort()));
    const frontPort = opts.frontLine && !hosts ? await freePort() : null;
    const edgeEnv = {
      EDGE_BUNDLE: join(buildDir, "index.js"),
      EDGE_PORT: String(edgePort),
      EDGE_PERSIST: persist,
      EDGE_VARS: varsFile,
      EDGE_EXTRA_PORTS: extraPorts.join(","),
      EDGE_EXTRA_VARS: JSON.stringify(opts.extraEdgeVars ?? []),
      ...(frontPort ? { EDGE_FRONT_PORT: String(frontPort) } : {}),
      ...caEnv,
    };
    const edgeProcs: ProcessInfo[] = [];
    const colos: Record<string, string> = {};
    if (!hosts) edgeProcs.push(spawnLogged("edge", process.execPath, [...TSX, join(ROOT, "local/edge-server.ts")], edgeEnv, logDir));
    // Multi-host: an edge per colo on the colo's host (as Cloudflare runs the Worker in every
    // colo), each over the same D1, R2 and Redis; its REGIONS name each region at its address on
    // this colo's own link, so every call to a region crosses that link.
    for (const c of hosts?.colos ?? []) {
      const file = join(stateDir, `edge-vars-${c.colo}.json`);
      const vars = { ...edgeVars, REGIONS: JSON.stringify(regions.map((r) => ({ name: r.name, url: `${opts.tls ? "https" : "http"}://${c.regionAddress[r.name]}:${new URL(regionUrls[r.name]!).port}`, lat: r.lat, lon: r.lon }))) };
      await writeFile(file, JSON.stringify(vars), { mode: 0o600 });
      const cf = { colo: c.colo, country: "XX", latitude: String(c.lat), longitude: String(c.lon) };
      edgeProcs.push(
        spawnLogged(`edge-${c.colo}`, process.execPath, [...TSX, join(ROOT, "local/edge-server.ts")], { ...edgeEnv, EDGE_VARS: file, EDGE_HOST: "0.0.0.0", EDGE_CF: JSON.stringify(cf) }, logDir, hosts!.exec(c.host)),
      );
      colos[c.colo] = `http://${c.address}:${edgePort}`;
    }
    processes.push(...edgeProcs);
    const edgeProc = edgeProcs[0]!;
    const edge = edgeOrigin;
    const edges = hosts ? Object.values(colos) : [edge, ...extraPorts.map((p) => `http://127.0.0.1:${p}`)];
    step(`starting the edge (workerd) on ${hosts ? Object.entries(colos).map(([c, u]) => `${c} ${u}`).join(", ") : edge}`);

    const statusOf = async (region: string): Promise<RegionReport> => {
      const headers = await signRequest(regionSecrets[region]!, "GET", "/v1/status");
      const res = await fetch(regionUrls[region] + "/v1/status", { headers, ...regionDispatcher } as RequestInit);
      if (!res.ok) throw new Error(`status ${res.status}`);
      return (await res.json()) as RegionReport;
    };

    const startNode = async (region: string, id: string, env: Record<string, string> = {}): Promise<ProcessInfo> => {
      // Every node serves /metrics on a port of its own (the same token as the routers').
      // Multi-host with TLS: on its host's management address, where a scraper on another host
      // (this launcher's, in the root namespace) reaches it, over HTTPS with its router's
      // certificate (which names that address). Otherwise on loopback (plain HTTP stays there).
      const metricsPort = env.NODE_METRICS_PORT ?? String(await freePort());
      const across = hosts && ca ? { address: hosts.regions[region]!.address, cert: ca.certs[`router-${region}`]! } : null;
      const metricsHost = across?.address ?? "127.0.0.1";
      const metricsTls: Record<string, string> = across ? { NODE_METRICS_TLS_CERT: across.cert.certFile, NODE_METRICS_TLS_KEY: across.cert.keyFile } : {};
      metricsTargets[`node-${id}`] = `${across ? "https" : "http"}://${metricsHost}:${metricsPort}/metrics`;
      const p = spawnLogged(
        `node-${id}`,
        process.execPath,
        [...TSX, join(ROOT, "gpu-node/main.ts")],
        {
          NODE_ID: id,
          // Multi-host: the node shares its router's host and reaches it over that host's loopback.
          ROUTER_URL: (hosts ? `${opts.tls ? "https" : "http"}://127.0.0.1:${new URL(regionUrls[region]!).port}` : regionUrls[region]!).replace(/^http/, "ws") + "/v1/nodes",
          NODE_TOKEN: nodeToken,
          MODEL_CACHE_DIR: join(stateDir, "cache", id),
          ...caEnv,
          METRICS_TOKEN: metricsToken,
          NODE_METRICS_PORT: metricsPort,
          NODE_METRICS_HOST: metricsHost,
          ...metricsTls,
          ...opts.nodeEnv,
          ...opts.regionNodeEnv?.[region],
          ...env,
        },
        logDir,
        hosts?.exec(hosts.regions[region]!.host),
      );
      processes.push(p);
      await waitFor(`node ${id}`, 30_000, async () => ((await statusOf(region)).nodes.some((n) => n.id === id) ? true : undefined), p);
      return p;
    };

    await Promise.all(routerProcs.map((p, i) => waitRouter(regions[i]!.name, p)));
    step("routers up; starting node agents");
    await Promise.all(regions.flatMap((r) => Array.from({ length: r.nodes }, (_, k) => startNode(r.name, `${r.name}-node-${k + 1}`))));
    step(`nodes connected: ${regions.map((r) => `${r.name} x${r.nodes}`).join(", ")}`);

    for (const [i, e] of edges.entries()) await waitFor("edge", 60_000, async () => ((await fetch(e + "/v2/health/ready", { dispatcher: launcherAgent } as RequestInit)).ok ? true : undefined), edgeProcs[i] ?? edgeProc);
    step(`edge ready${edges.length > 1 ? ` (${edges.length} isolates: ${edges.join(", ")})` : ""}`);

    const handle: MeshHandle = {
      edge,
      edges,
      front: frontPort ? `http://127.0.0.1:${frontPort}` : null,
      colos,
      regions: regionUrls,
      redis: redisInfo,
      adminToken,
      regionSecrets,
      nodeToken,
      metrics: { token: metricsToken, targets: metricsTargets },
      apiKey: "",
      accountId: "",
      models: [],
      stateDir,
      processes,
      startNode,
      regionStatus: statusOf,
      r2,
      caFile: ca?.caFile ?? null,
      async stopRouter(region, signal = "SIGTERM") {
        const p = processes.find((x) => x.name === `router-${region}` && x.child.exitCode === null && x.child.signalCode === null);
        if (p) await killTree(p, signal);
      },
      async startRouter(region) {
        const p = spawnRouter(region);
        processes.push(p);
        await waitRouter(region, p);
      },
      async stopRedis() {
        await redis?.stop();
      },
      async startRedis() {
        // Same port, so the REST endpoint (and everything behind it) reconnects by itself.
        redis = await startRedisServer({ port: redisInfo.port });
      },
      pauseRedis: () => signalRedis("SIGSTOP"),
      resumeRedis: () => signalRedis("SIGCONT"),
      stop,
    };

    if (opts.demo !== false) {
      step("creating the demo account and deploying demo models");
      const account = (await jsonFetch(edge + "/v1/accounts", {
        method: "POST",
        token: adminToken,
        body: JSON.stringify({ name: "demo" }),
        headers: { "content-type": "application/json" },
      })) as { accountId: string; apiKey: { key: string } };
      handle.apiKey = account.apiKey.key;
      handle.accountId = account.accountId;
      const files = await makeDemoModels(join(stateDir, "models"));
      for (const f of files.filter((x) => x.version === "1")) {
        await jsonFetch(edge + "/v1/models", {
          method: "POST",
          token: handle.apiKey,
          body: JSON.stringify({ name: f.name }),
          headers: { "content-type": "application/json" },
        });
        const uploaded = (await jsonFetch(`${edge}/v1/models/${f.name}/versions`, {
          method: "POST",
          token: handle.apiKey,
          body: await readFile(f.path),
          headers: { "content-type": "application/octet-stream" },
        })) as { version: number };
        handle.models.push({ name: f.name, version: uploaded.version, file: f.path });
        step(`deployed ${f.name} v${uploaded.version}`);
      }
      // The generative demo: tiny-gpt, a bundle whose Hugging Face files (tokenizer, chat
      // template, configs) go up first and are named by the version (x-mesh-files).
      const tiny = opts.tinyGpt === false ? null : tinyGptBundle(opts.tinyGpt ?? join(ROOT, "models", TINY_GPT_NAME));
      if (tiny) {
        await jsonFetch(edge + "/v1/models", {
          method: "POST",
          token: handle.apiKey,
          body: JSON.stringify({ name: TINY_GPT_NAME }),
          headers: { "content-type": "application/json" },
        });
        const named: Record<string, string> = {};
        for (const f of tiny.files) {
          const up = (await jsonFetch(`${edge}/v1/models/${TINY_GPT_NAME}/files`, {
            method: "POST",
            token: handle.apiKey,
            body: await readFile(f.path),
            headers: { "content-type": "application/octet-stream" },
          })) as { sha256: string };
          named[f.name] = up.sha256;
        }
        const v = (await jsonFetch(`${edge}/v1/models/${TINY_GPT_NAME}/versions`, {
          method: "POST",
          token: handle.apiKey,
          body: await readFile(tiny.graph),
          headers: { "content-type": "application/octet-stream", "x-mesh-files": JSON.stringify(named) },
        })) as { version: number };
        handle.models.push({ name: TINY_GPT_NAME, version: v.version, file: tiny.graph });
        step(`deployed ${TINY_GPT_NAME} v${v.version} with ${tiny.files.map((f) => f.name).join(", ")}`);
      }
    }
    if (opts.demo !== false && opts.demoWarm) {
      await jsonFetch(edge + "/v1/models/demo-mlp", { method: "PUT", token: handle.apiKey, body: JSON.stringify({ keepWarm: 1 }), headers: { "content-type": "application/json" } });
      for (const r of regions) await waitFor(`demo-mlp warm in ${r.name}`, 60_000, async () => ((await statusOf(r.name)).warm.length > 0 ? true : undefined));
      // The edge routes by the regions' reports (through Redis, about once a second): until it
      // has read one saying demo-mlp is warm in a region it counts a cold start there, and a
      // caller's first calls could go to the far region. Ready means the edge sees it too.
      await waitFor("the edge sees demo-mlp warm in every region", 60_000, async () => {
        const view = (await jsonFetch(edge + "/v1/regions", { token: handle.apiKey })) as { regions: { name: string; health: string; warmModels: { model: string }[] }[] };
        const warm = (name: string) => view.regions.some((v) => v.name === name && v.health === "healthy" && v.warmModels.some((m) => m.model === "demo-mlp"));
        return regions.every((r) => warm(r.name)) ? true : undefined;
      });
      step(`demo-mlp warm in ${regions.map((r) => r.name).join(", ")}`);
    }
    if (opts.demo !== false && opts.demoChat !== false) {
      // The older generative demo: a character bigram language model with an uploaded tokenizer.json.
      const chat = await makeCharModel(join(stateDir, "models"));
      await jsonFetch(edge + "/v1/models", {
        method: "POST",
        token: handle.apiKey,
        body: JSON.stringify({ name: DEMO_CHAT_NAME }),
        headers: { "content-type": "application/json" },
      });
      const chatVersion = (await jsonFetch(`${edge}/v1/models/${DEMO_CHAT_NAME}/versions`, {
        method: "POST",
        token: handle.apiKey,
        body: await readFile(chat.modelPath),
        headers: { "content-type": "application/octet-stream" },
      })) as { version: number };
      await jsonFetch(`${edge}/v1/models/${DEMO_CHAT_NAME}/versions/${chatVersion.version}/tokenizer`, {
        method: "PUT",
        token: handle.apiKey,
        body: await readFile(chat.tokenizerPath),
        headers: { "content-type": "application/json" },
      });
      handle.models.push({ name: DEMO_CHAT_NAME, version: chatVersion.version, file: chat.modelPath });
      step(`deployed ${DEMO_CHAT_NAME} v${chatVersion.version} with its tokenizer`);
    }

    await writeFile(
      join(stateDir, "local.json"),
      JSON.stringify(
        {
          edge,
          ...(hosts ? { colos: Object.fromEntries(hosts.colos.map((c) => [c.colo, { namespace: c.host, url: colos[c.colo], fromNamespace: `http://127.0.0.1:${edgePort}` }])) } : {}),
          regions: regionUrls,
          redis: { url: redisInfo.url, token: redisToken },
          adminToken,
          apiKey: handle.apiKey,
          accountId: handle.accountId,
          models: handle.models.map((m) => ({ name: m.name, version: m.version })),
          logs: logDir,
          metrics: { token: metricsToken, targets: metricsTargets },
          ...(ca ? { caFile: ca.caFile } : {}),
          pid: process.pid,
        },
        null,
        2,
      ) + "\n",
      { mode: 0o600 },
    );
    return handle;
  } catch (err) {
    await stop();
    throw err;
  }
}

export function localJsonPath(stateDir = join(ROOT, ".mesh")): string {
  return join(stateDir, "local.json");
}
