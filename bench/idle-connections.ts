// What an idle gap costs the next call to a region, across real links (local/topology.ts: a
// colo namespace, region namespaces, the link table's delay), by who keeps the connection:
//
//   router   KEEP_ALIVE_TIMEOUT_MS 5000 (Node's default, the router before) or 120000 (now).
//   client   a Node keep-alive agent (node:https; stands for any pool that keeps connections:
//            Cloudflare's in front of a deployed Worker, a scraper), or workerd (Miniflare, the
//            local edge's runtime: a Worker's fetch, whose pool is workerd's own).
//   link     ICN -> ap-seoul (8 ms, near) and ICN -> us-west (130 ms, far).
//
// Each round, per combination at once: GET /healthz after IDLE_GAP_MS of silence on that
// connection, then one more right after (the warm baseline, same run, same link). Figures: p50
// of each, their ratio, and how many new TCP connections the idle calls opened (the router's
// mesh_router_http_connections_total). Routers serve HTTPS with a throwaway CA, as in the
// multi-host mode; no nodes (the call is the router's /healthz, the edge's RTT probe).
//
// Needs root, iproute2, /dev/net/tun (or netem). Run: npx tsx bench/idle-connections.ts [--quick]
// The bench also runs as its own prober inside the colo's namespace (`--probe <json>`).

import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { Agent, request } from "node:https";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeLocalCa } from "../local/ca.js";
import { localAgent } from "../local/keep-alive.js";
import { ROOT } from "../local/mesh.js";
import { createTopology, multiHostUnavailable } from "../local/topology.js";
import { QUICK, err, runBench, say } from "./harness.js";
import { fmt, formatTable, ratio, round, summarize } from "./stats.js";

const SELF = fileURLToPath(import.meta.url);
const IDLE_GAP_MS = 10_000;
const ROUNDS = QUICK ? 3 : 8;
const COLO = "ICN";
const REGIONS = ["ap-seoul", "us-west"] as const;
const KEEP_ALIVE = { before: 5_000, after: 120_000 } as const;
const CLIENTS = ["node", "workerd"] as const;

interface Target {
  id: string;
  url: string;
  client: (typeof CLIENTS)[number];
}
interface ProbeResult {
  id: string;
  idle: number[];
  warm: number[];
}

// --- the prober, inside the colo's namespace ----------------------------------------------------
if (process.argv[2] === "--probe") {
  const { targets, ca, rounds, gapMs } = JSON.parse(process.argv[3]!) as { targets: Target[]; ca: string; rounds: number; gapMs: number };
  const { Miniflare } = await import("miniflare");
  // A Worker that times one fetch of ?u= (workerd's clock moves with I/O, so it spans the fetch).
  const mf = new Miniflare({
    modules: true,
    script: `export default { async fetch(req) { const u = new URL(req.url).searchParams.get("u"); const t = Date.now(); const r = await fetch(u); await r.arrayBuffer(); return Response.json({ ms: Date.now() - t, status: r.status }); } }`,
    compatibilityDate: "2024-09-23",
    outboundService: { network: { allow: ["public", "private"], deny: [], tlsOptions: { trustBrowserCas: true, trustedCertificates: [ca] } } },
  } as ConstructorParameters<typeof Miniflare>[0]);
  const viaNode = (agent: Agent, url: string) =>
    new Promise<number>((resolve, reject) => {
      const t = performance.now();
      const req = request(url, { agent, ca, timeout: 10_000 }, (res) => {
        res.resume();
        res.on("end", () => (res.statusCode === 200 ? resolve(performance.now() - t) : reject(new Error(`${url}: ${res.statusCode}`))));
      });
      req.on("timeout", () => req.destroy(new Error(`${url}: no answer`)));
      req.on("error", reject);
      req.end();
    });
  const viaWorkerd = async (url: string) => {
    const res = await mf.dispatchFetch(`http://probe/?u=${encodeURIComponent(url)}`);
    const body = (await res.json()) as { ms: number; status: number };
    if (body.status !== 200) throw new Error(`${url}: ${body.status}`);
    return body.ms;
  };
  const results = await Promise.all(
    targets.map(async (t): Promise<ProbeResult> => {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      const once = () => (t.client === "node" ? viaNode(agent, t.url) : viaWorkerd(t.url));
      const r: ProbeResult = { id: t.id, idle: [], warm: [] };
      await once(); // the connection's first handshake, not counted
      for (let i = 0; i < rounds; i++) {
        await new Promise((res) => setTimeout(res, gapMs));
        r.idle.push(await once());
        r.warm.push(await once());
      }
      agent.destroy();
      return r;
    }),
  );
  await mf.dispose();
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exit(0);
}

// --- the bench ------------------------------------------------------------------------------------
const why = multiHostUnavailable();
if (why) {
  say(`[idle-connections] cannot run here: ${why}`);
  process.exit(0);
}

await runBench(
  "idle-connections",
  async (b) => {
    const topology = await createTopology({ colos: [COLO], regions: [...REGIONS], progress: err });
    b.defer(() => topology.destroy());
    err(`[idle-connections] links: ${topology.mode}`);
    const ca = await makeLocalCa(join(b.tmpDir, "ca"), REGIONS.map((r) => ({ name: r, hosts: [topology.regionAddressFrom(COLO, r), topology.regions[r]!.address] })));
    const caPem = readFileSync(ca.caFile, "utf8");
    const token = randomBytes(24).toString("base64url");

    // Two routers per region host: the keep-alive before and after.
    const routers: { region: string; build: keyof typeof KEEP_ALIVE; port: number; child: ChildProcess }[] = [];
    for (const region of REGIONS) {
      for (const build of Object.keys(KEEP_ALIVE) as (keyof typeof KEEP_ALIVE)[]) {
        const port = 19000 + routers.length;
        const env = {
          ...process.env,
          MESH_PARENT_PID: String(process.pid),
          MESH_REGION: region,
          HOST: "0.0.0.0",
          PORT: String(port),
          MESH_SECRET: token,
          NODE_TOKEN: token,
          METRICS_TOKEN: token,
          ROUTER_TLS_CERT: ca.certs[region]!.certFile,
          ROUTER_TLS_KEY: ca.certs[region]!.keyFile,
          KEEP_ALIVE_TIMEOUT_MS: String(KEEP_ALIVE[build]),
          DRAIN_TIMEOUT_MS: "0",
          LOG_LEVEL: "warn",
        };
        const child = spawn("ip", ["netns", "exec", topology.regions[region]!.ns, process.execPath, "--import", "tsx", join(ROOT, "regions/main.ts")], { env, stdio: "ignore" });
        b.defer(() => child.kill("SIGTERM"));
        routers.push({ region, build, port, child });
      }
    }
    // Scrapes from this (root) namespace over the management bridge, one fresh connection each.
    const connections = async (region: string, port: number): Promise<number> => {
      const dispatcher = localAgent({ ca: caPem });
      try {
        const res = await fetch(`https://${topology.regions[region]!.address}:${port}/metrics`, { headers: { authorization: `Bearer ${token}` }, dispatcher } as RequestInit);
        const text = await res.text();
        const line = text.split("\n").find((l) => l.startsWith("mesh_router_http_connections_total"));
        return Number(line?.slice(line.lastIndexOf(" ") + 1));
      } finally {
        await dispatcher.close();
      }
    };
    for (const r of routers) {
      const until = Date.now() + 60_000;
      for (;;) {
        if (await connections(r.region, r.port).then((n) => Number.isFinite(n), () => false)) break;
        if (Date.now() > until) throw new Error(`router ${r.region}/${r.build} did not start`);
        await new Promise((res) => setTimeout(res, 250));
      }
    }

    const targets: Target[] = routers.flatMap((r) => CLIENTS.map((client) => ({ id: `${client}|${r.region}|${r.build}`, client, url: `https://${topology.regionAddressFrom(COLO, r.region)}:${r.port}/healthz` })));
    const before = await Promise.all(routers.map((r) => connections(r.region, r.port)));
    err(`[idle-connections] ${ROUNDS} rounds of a ${IDLE_GAP_MS / 1000} s idle gap, ${targets.length} client/router pairs at once, from ${COLO}`);
    const child = spawn("ip", ["netns", "exec", topology.colos[COLO]!.ns, process.execPath, "--import", "tsx", SELF, "--probe", JSON.stringify({ targets, ca: caPem, rounds: ROUNDS, gapMs: IDLE_GAP_MS })], {
      stdio: ["ignore", "pipe", "inherit"],
      cwd: ROOT,
    });
    b.defer(() => child.kill("SIGTERM"));
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString("utf8")));
    const code = await new Promise<number | null>((res) => child.once("close", res));
    if (code !== 0) throw new Error(`prober exited with ${code}`);
    const results = JSON.parse(out.trim().split("\n").at(-1)!) as ProbeResult[];
    const after = await Promise.all(routers.map((r) => connections(r.region, r.port)));
    // Each router served 2 clients (node, workerd); both counted together: new connections
    // opened by the idle calls, less the first handshakes and the one scrape in between.
    const opened = Object.fromEntries(routers.map((r, i) => [`${r.region}|${r.build}`, after[i]! - before[i]! - CLIENTS.length - 1]));

    const rows = CLIENTS.flatMap((client) =>
      REGIONS.flatMap((region) =>
        (Object.keys(KEEP_ALIVE) as (keyof typeof KEEP_ALIVE)[]).map((build) => {
          const r = results.find((x) => x.id === `${client}|${region}|${build}`)!;
          const idle = summarize(r.idle);
          const warm = summarize(r.warm);
          return { client, region, build, keepAliveMs: KEEP_ALIVE[build], linkRttMs: topology.link(COLO, region).rttMs, idle, warm, idleOverWarm: ratio(idle.p50, warm.p50) };
        }),
      ),
    );
    const afterOverBefore = (client: string, region: string) => {
      const [bf, af] = (["before", "after"] as const).map((build) => rows.find((x) => x.client === client && x.region === region && x.build === build)!.idle.p50);
      return ratio(af!, bf!);
    };
    say("");
    say(`A call after ${IDLE_GAP_MS / 1000} s idle vs one right after it (warm), GET /healthz over HTTPS from ${COLO}, ${ROUNDS} rounds (${topology.mode} links)`);
    say(
      formatTable(
        ["client", "region", "link RTT", "router keep-alive", "warm p50", "after idle p50", "idle / warm", "idle after / before"],
        rows.map((x) => [x.client, x.region, fmt(x.linkRttMs, 0), `${x.keepAliveMs / 1000} s`, fmt(x.warm.p50), fmt(x.idle.p50), fmt(x.idleOverWarm), x.build === "after" ? fmt(afterOverBefore(x.client, x.region)) : ""]),
      ),
    );
    say("");
    say(`New TCP connections the idle calls opened, per router (node + workerd clients, ${ROUNDS} idle calls each): ${JSON.stringify(opened)}`);
    await b.saveResults({
      links: topology.mode,
      idleGapMs: IDLE_GAP_MS,
      rounds: ROUNDS,
      rows: rows.map((x) => ({ ...x, idleOverWarm: round(x.idleOverWarm), idleAfterOverBefore: x.build === "after" ? round(afterOverBefore(x.client, x.region)) : null })),
      newConnections: opened,
    });
  },
  { watchdogMs: 10 * 60_000 },
);
