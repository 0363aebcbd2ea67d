// What serving the browser pages from the Worker's static assets costs, and what it saves.
//
// Latency, in one run, one workerd (Miniflare) per variant, sequential over one keep-alive
// connection each, interleaved call by call so both see the same machine:
//
//   baseline   the edge Worker bundle without [assets] (how it ran before the pages moved):
//              GET /v2/health/live
//   assets     the same bundle with [assets] as local/edge-server.ts runs it (the assets
//              router in front, the Worker first): GET /v2/health/live, GET /status (the page
//              read through ASSETS), GET /pages/status-<hash>.js (its script)
//
// Figures are ratios to the baseline no-op. Bytes: what a browser downloads for /status, first
// visit (HTML + script + stylesheet) and repeat visit (HTML only: the files are named by content
// hash and cacheable for good), gzip'd, against the same page with its script and stylesheet
// inlined (one file, not cacheable, as the pages were before), built in the same run.
//
// Run: npx tsx bench/page-assets.ts [--quick]
// Prints a table and writes bench/results/page-assets-<timestamp>.json and -latest.json.

import { spawnSync } from "node:child_process";
import { readFile } from "node:fs/promises";
import http from "node:http";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { Log, LogLevel, Miniflare } from "miniflare";
import { EDGE_ASSETS } from "../local/edge-assets.js";
import { freePort } from "../local/free-port.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { fmt, printTable, ratio, round, rounded, summarize } from "./stats.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const N = QUICK ? { calls: 300, warmup: 30 } : { calls: 2000, warmup: 200 };

const VARS = {
  ADMIN_TOKEN: "admin-token-for-the-page-bench-0123456789",
  REGION_SECRETS: JSON.stringify({ "us-west": "mesh-secret-for-the-page-bench-0123456789" }),
  PUBLIC_ORIGIN: "http://127.0.0.1",
  REGIONS: JSON.stringify([{ name: "us-west", url: "http://127.0.0.1:9", lat: 37, lon: -122 }]),
};

function get(agent: http.Agent, base: string, path: string): Promise<{ ms: number; status: number; body: Buffer }> {
  return new Promise((res, rej) => {
    const url = new URL(path, base);
    const s = performance.now();
    const req = http.request({ agent, host: url.hostname, port: url.port, path: url.pathname, method: "GET" }, (r) => {
      const chunks: Buffer[] = [];
      r.on("data", (c: Buffer) => chunks.push(c));
      r.on("end", () => res({ ms: performance.now() - s, status: r.statusCode ?? 0, body: Buffer.concat(chunks) }));
      r.on("error", rej);
    });
    req.setTimeout(30_000, () => req.destroy(new Error("timed out")));
    req.on("error", rej);
    req.end();
  });
}

async function miniflare(bundle: string, withAssets: boolean): Promise<{ mf: Miniflare; base: string }> {
  const mf = new Miniflare({
    host: "127.0.0.1",
    port: await freePort(),
    log: new Log(LogLevel.WARN),
    // Offline: no lookup of a real `request.cf` (as local/edge-server.ts).
    cf: { colo: "SJC", country: "US", latitude: "37.36", longitude: "-121.93" },
    modules: true,
    scriptPath: bundle,
    modulesRoot: dirname(bundle),
    compatibilityDate: "2026-04-01",
    d1Databases: { DB: "00000000-0000-0000-0000-000000000000" },
    r2Buckets: { ARTIFACTS: "inference-mesh-artifacts" },
    bindings: VARS,
    ...(withAssets ? { assets: EDGE_ASSETS } : {}),
  });
  return { mf, base: (await mf.ready).toString() };
}

await runBench("page-assets", async (b) => {
  const { machine } = b;
  const tmp = b.tmpDir;
  err("[bench] bundling the edge (wrangler deploy --dry-run, which runs the page build first)");
  const w = spawnSync(process.execPath, [join(ROOT, "node_modules/wrangler/bin/wrangler.js"), "deploy", "--dry-run", "--outdir", tmp], {
    cwd: ROOT,
    env: { ...process.env, WRANGLER_SEND_METRICS: "false", CI: "1", NO_COLOR: "1" },
    encoding: "utf8",
  });
  if (w.status !== 0) throw new Error(`wrangler deploy --dry-run failed: ${w.stdout}${w.stderr}`);
  const bundle = join(tmp, "index.js");
  const plain = await miniflare(bundle, false);
  b.defer(() => plain.mf.dispose());
  const assets = await miniflare(bundle, true);
  b.defer(() => assets.mf.dispose());

  const html = (await readFile(join(EDGE_ASSETS.directory, "status.html"), "utf8"));
  const script = /src="(\/pages\/[^"]+\.js)"/.exec(html)?.[1];
  const style = /href="(\/pages\/[^"]+\.css)"/.exec(html)?.[1];
  if (!script || !style) throw new Error("status.html names no script or stylesheet");

  const agents = [new http.Agent({ keepAlive: true, maxSockets: 1 }), new http.Agent({ keepAlive: true, maxSockets: 1 })] as const;
  b.defer(() => agents.forEach((a) => a.destroy()));
  const calls: [name: string, agent: http.Agent, base: string, path: string][] = [
    ["baseline: GET /v2/health/live, no [assets]", agents[0], plain.base, "/v2/health/live"],
    ["GET /v2/health/live, [assets] in front", agents[1], assets.base, "/v2/health/live"],
    ["GET /status (page through ASSETS)", agents[1], assets.base, "/status"],
    ["GET /pages/status-<hash>.js", agents[1], assets.base, script],
  ];
  const samples = calls.map(() => [] as number[]);
  for (let i = 0; i < N.warmup + N.calls; i++) {
    for (const [j, [, agent, base, path]] of calls.entries()) {
      const r = await get(agent, base, path);
      if (r.status !== 200) throw new Error(`${path}: HTTP ${r.status} ${r.body.toString("utf8").slice(0, 200)}`);
      if (i >= N.warmup) samples[j]!.push(r.ms);
    }
  }
  const s = samples.map(summarize);
  const base = s[0]!;

  // Bytes of /status: as served now, and with the same script and stylesheet inlined.
  const bodies = await Promise.all([html, script, style].map(async (p, i) => (i === 0 ? Buffer.from(p) : (await get(agents[1], assets.base, p)).body)));
  const [htmlB, jsB, cssB] = bodies as [Buffer, Buffer, Buffer];
  const inlined = Buffer.from(
    htmlB
      .toString("utf8")
      .replace(/<link rel="stylesheet" href="[^"]+">/, () => `<style>${cssB.toString("utf8")}</style>`)
      .replace(/<script src="[^"]+" defer><\/script>/, "")
      .replace("</body>", () => `<script>${jsB.toString("utf8")}</script></body>`),
  );
  const gz = (b: Buffer) => gzipSync(b).length;
  const bytes = {
    inlined: gz(inlined),
    firstVisit: gz(htmlB) + gz(jsB) + gz(cssB),
    repeatVisit: gz(htmlB),
  };

  say();
  say(`page-assets${QUICK ? " (--quick)" : ""}: sequential, one keep-alive connection per workerd, ${machine.cpus} CPUs (${machine.cpuModel}), node ${machine.node}`);
  say();
  printTable(
    ["request", "n", "p50 ms", "p99 ms", "p50 / baseline", "p99 / baseline"],
    calls.map(([name], i) => [name, String(s[i]!.count), fmt(s[i]!.p50, 3), fmt(s[i]!.p99, 3), fmt(ratio(s[i]!.p50, base.p50), 2), fmt(ratio(s[i]!.p99, base.p99), 2)]),
    ["left", "right", "right", "right", "right", "right"],
  );
  say();
  printTable(
    ["/status download, gzip", "bytes", "/ inlined page"],
    [
      ["baseline: one page, script and style inlined (no-store)", String(bytes.inlined), "1.00"],
      ["first visit: HTML + script + stylesheet", String(bytes.firstVisit), fmt(ratio(bytes.firstVisit, bytes.inlined), 2)],
      ["repeat visit: HTML only (files cached, immutable)", String(bytes.repeatVisit), fmt(ratio(bytes.repeatVisit, bytes.inlined), 2)],
    ],
    ["left", "right", "right"],
  );

  await b.saveResults({
    method: "client-side timing, sequential, interleaved per call across two Miniflare instances of the same bundle (without and with [assets])",
    counts: N,
    ms: Object.fromEntries(calls.map(([name], i) => [name, rounded(s[i]!, ["count", "p50", "p90", "p99", "mean", "max"], 4)])),
    p50OverBaseline: Object.fromEntries(calls.map(([name], i) => [name, round(ratio(s[i]!.p50, base.p50), 3)])),
    statusPageGzipBytes: { ...bytes, firstOverInlined: round(ratio(bytes.firstVisit, bytes.inlined), 3), repeatOverInlined: round(ratio(bytes.repeatVisit, bytes.inlined), 3) },
  });
});
