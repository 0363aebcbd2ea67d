// How many concurrent streams one router, and one edge isolate, carry before p99 inter-token
// latency doubles (issue 14: goals >= 1,000 per router and >= 256 per edge isolate).
//
// The tokens come from synthetic nodes (bench/synthetic-node.ts: BENCH ONLY, no model, one token
// per stream every STEP_MS from one timer per node, like a batched decoder's step), so what is
// measured is the relay, not a decoder's CPU: NODES of them hold 4,096 stream slots each. One
// region (us-west), its one real node agent given no stream slots (NODE_STREAMS=0) so every
// stream lands on a synthetic node.
//
//   router   straight to the router's stream socket (signed generate frames, as the edge sends
//            them), 256 streams per socket
//   edge     WebSocket callers to the edge (workerd, one isolate) -> router, 32 streams per socket
//   edge wsb the same callers with `?batch=true` (each message an array of a turn's events)
//   edge sse Server-Sent Events callers, one HTTP request per stream (edge -> router as one
//            streamed POST each)
//
// At each level N, N streams of TOKENS tokens start spread over one step (a burst: every start,
// with its signature and hash checks, lands inside the first step); the 1-stream level runs
// several streams one after another. A level "carries" when every stream's text is the
// synthetic text for its seed and p99 ITL is under twice the 1-stream p99. Real traffic does
// not arrive in one instant, so the router is also swept with its starts ramped over RAMP_MS
// ("router ramp"): each of those streams is RAMP_MS longer, so every stream still overlaps
// every other one for TOKENS steps (N at once at the peak). Both sweeps are reported.
//
// Run: npx tsx bench/stream-capacity.ts           (a few minutes)
//      npx tsx bench/stream-capacity.ts --quick   (smoke run)
//      --paths=router,ramp,ws,wsb,sse   only those sweeps (default all; --router-only = router,ramp)
//      --levels=1,128               only those levels (1, the yardstick, is always run)
// Each level also gives the CPU ms per stream of the edge's workerd and of the router (/proc,
// the level's whole use over its streams; no profiler in the way).
// Prints a table and writes bench/results/stream-capacity-<timestamp>.json and -latest.json.

import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { makeCharModel } from "../scripts/make-char-model.js";
import { err, QUICK, runBench, say } from "./harness.js";
import { fmt, formatTable, ratio, round, rounded } from "./stats.js";
import { edgeApi, EdgeSocket, edgeSse, routerModelRef, RouterSocket, socketsFor, sweep, sweepVerdict, terminateStreamSockets, type Sweep } from "./stream-load.js";
import { syntheticText } from "./synthetic-node.js";
import { cpuByPart, InspectorProfiler, selfTimes, type CpuProfile } from "./process-profile.js";
import { freePort } from "../local/free-port.js";

/** The value of `--name=value`, if given. */
const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
/** --paths=...: the sweeps to run (router, ramp, ws, wsb, sse); --router-only: the router's two. */
const PATHS = new Set((arg("paths") ?? (process.argv.includes("--router-only") ? "router,ramp" : "router,ramp,ws,wsb,sse")).split(","));
/** --levels=...: only these levels, in every sweep run (for a profile of one level). */
const ONLY_LEVELS = arg("levels")?.split(",").map(Number);
const levelsOf = (path: string, defaults: number[]) => (!PATHS.has(path) ? [] : ONLY_LEVELS ? [...new Set([1, ...ONLY_LEVELS])].sort((a, b) => a - b) : defaults);
/** --all-levels: go on past the level where p99 doubled (the whole curve, not just the knee). */
const ALL_LEVELS = process.argv.includes("--all-levels");
/**
 * BENCH_CPU_PROF_DIR: the router writes a V8 CPU profile there at the end (bench/cpu-profile.mjs),
 * and so does the edge's isolate (over its inspector, EDGE_INSPECTOR_PORT); both are summarised
 * (self time per function) after the table.
 */
const PROFILE_DIR = process.env.BENCH_CPU_PROF_DIR;
const STEP_MS = 20;
const TOKENS = QUICK ? 20 : 40;
/** The ramped router sweep: starts spread over this long instead of one step. */
const RAMP_MS = 1_000;
/** Its streams' length: every stream overlaps every other for TOKENS steps however the ramp placed them. */
const RAMP_TOKENS = TOKENS + RAMP_MS / STEP_MS;
const NODES = 2;
const ROUTER_LEVELS = levelsOf("router", QUICK ? [1, 64, 256] : [1, 128, 256, 512, 1024, 1536]);
const RAMP_LEVELS = levelsOf("ramp", QUICK ? [1, 256] : [1, 512, 1024, 1536]);
const EDGE_LEVELS = levelsOf("ws", QUICK ? [1, 32, 128] : [1, 32, 64, 128, 256, 512]);
const BATCHED_LEVELS = levelsOf("wsb", QUICK ? [1, 32, 128] : [1, 32, 64, 128, 256, 512]);
const SSE_LEVELS = levelsOf("sse", QUICK ? [1, 32] : [1, 32, 64, 128, 256]);
const BASE_RUNS = QUICK ? 3 : 6;
const REGION = "us-west";
/**
 * Accounts the edge's streams are spread over: an isolate lets one account run 128 streams and
 * hold 32 sockets (edge/stream-limits.ts), so the edge levels past that need several tenants.
 */
const ACCOUNTS = 8;

const expectedText = (seed: number, tokens = TOKENS) => Array.from({ length: tokens }, (_, i) => syntheticText(seed, i)).join("");
/** Stream i is seeded with i (its text is then expectedText(i)). */
const message = (seed: number) => ({ text_input: "x", parameters: { max_tokens: TOKENS, seed } });

await runBench("stream-capacity", async (b) => {
  b.defer(terminateStreamSockets);
  // Read by local/edge-server.ts, which the mesh starts with this process's environment.
  if (PROFILE_DIR) process.env.EDGE_INSPECTOR_PORT = String(await freePort());
  const files = await makeCharModel(join(b.tmpDir, "models"));
  err("[bench] starting the mesh (one region; its real node takes no streams)");
  const mesh = await b.startMesh({
    regions: [{ name: REGION, lat: 37.34, lon: -121.89, nodes: 1 }],
    demoChat: false,
    tinyGpt: false,
    nodeEnv: { NODE_STREAMS: "0", MESH_EXECUTION_PROVIDER: "cpu" },
    routerEnv: {
      MAX_STREAMS_PER_SOCKET: "4096",
      MAX_INFLIGHT: "16384",
      MAX_QUEUE_PER_MODEL: "8192",
      ...(PROFILE_DIR ? { NODE_OPTIONS: `--import ${join(process.cwd(), "bench/cpu-profile.mjs")}`, BENCH_CPU_PROF_NAME: "router" } : {}),
    },
    // The per-key request rate would refuse a level's burst of generate requests: not what is measured.
    edgeVars: { EXPLORATION_SHARE: "0", KEY_RATE_PER_SECOND: "100000", KEY_RATE_BURST: "100000" },
  });
  const routerUrl = mesh.regions[REGION]!;
  for (let k = 0; k < NODES; k++) {
    b.spawnTsx(`synth-${k + 1}`, "bench/synthetic-node.ts", [], {
      MESH_SYNTHETIC_NODE: "bench",
      ROUTER_URL: routerUrl.replace(/^http/, "ws") + "/v1/nodes",
      NODE_TOKEN: mesh.nodeToken,
      NODE_ID: `synth-${k + 1}`,
      SYNTH_STEP_MS: String(STEP_MS),
      SYNTH_STREAMS: "4096",
    });
  }
  const api = edgeApi(mesh.edge);
  const modelBytes = await readFile(files.modelPath);
  const tokenizerText = await readFile(files.tokenizerPath, "utf8");
  /** Each account's key, with its own copy of the model (same bytes, so the nodes load it once). */
  const keys: string[] = [];
  let first: { up: Record<string, any>; tok: Record<string, any>; model: Record<string, any> } | null = null;
  for (let a = 0; a < ACCOUNTS; a++) {
    const key = a === 0 ? mesh.apiKey : ((await api(mesh.adminToken, "POST", "/v1/accounts", JSON.stringify({ name: `bench-${a}` }))).apiKey.key as string);
    await api(key, "POST", "/v1/models", JSON.stringify({ name: "synth" }));
    const up = await api(key, "POST", "/v1/models/synth/versions", modelBytes, "application/octet-stream");
    const tok = await api(key, "PUT", "/v1/models/synth/versions/1/tokenizer", tokenizerText);
    const model = await api(key, "PUT", "/v1/models/synth", JSON.stringify({ regions: [REGION] }));
    first ??= { up, tok, model };
    keys.push(key);
  }
  const { up, tok, model } = first!;
  const secret = mesh.regionSecrets[REGION]!;
  const ref = await routerModelRef({ edge: mesh.edge, region: REGION, secret, id: model.id, name: "synth", up, tok });
  // Wait for the synthetic nodes, then warm the model on them (through the edge: a real load).
  for (const key of keys) {
    for (let tries = 0; ; tries++) {
      try {
        const s = await EdgeSocket.open(mesh.edge, "synth", key);
        await s.generate("warm", { ...message(0), window: 256 });
        s.close();
        break;
      } catch (e) {
        if (tries > 50 || b.interrupted) throw e;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  // The edge's profile covers the sweeps only, not the set-up (uploads, model loads).
  let edgeProfiler: InspectorProfiler | null = null;
  if (PROFILE_DIR) {
    try {
      edgeProfiler = await InspectorProfiler.connect(`ws://127.0.0.1:${process.env.EDGE_INSPECTOR_PORT}/edge`);
      await edgeProfiler.start();
    } catch (e) {
      err(`[bench] no CPU profile of the edge: ${String(e)}`);
    }
  }
  let sid = 0;
  // CPU per stream at each level: the edge's workerd (the isolate, and what workerd does for it)
  // and the router, from /proc (no profiler, so BENCH_CPU_PROF_DIR runs read high).
  const roots: Record<string, number> = {};
  for (const p of mesh.processes) if ((p.name === "edge" || p.name === `router-${REGION}`) && p.child.pid !== undefined) roots[p.name] = p.child.pid;
  const cpu = () => {
    const { cpuMs } = cpuByPart(roots, (root, row) => (root !== "edge" ? "router" : row.comm === "workerd" ? "edge" : "edge node"));
    return { edge: cpuMs.edge ?? 0, router: cpuMs.router ?? 0 };
  };
  const opts = { baseRuns: BASE_RUNS, spreadMs: STEP_MS, expected: (i: number) => expectedText(i), allLevels: ALL_LEVELS, cpu };
  err(`[bench] router: straight to its stream socket (${STEP_MS} ms per token at the nodes, ${TOKENS} tokens per stream)`);
  const viaRouter = await sweep(
    "router",
    ROUTER_LEVELS,
    (n) => socketsFor(n, 256, () => RouterSocket.open(routerUrl, secret), (s, i) => s.generate(`r${sid++}`, ref, "x", { maxTokens: TOKENS, temperature: 1, topK: 0, seed: i }, 120_000)),
    opts,
  );
  err(`[bench] router, starts ramped over ${RAMP_MS} ms (${RAMP_TOKENS} tokens per stream: all N overlap for ${TOKENS} steps)`);
  const viaRouterRamp = await sweep(
    "router ramp",
    RAMP_LEVELS,
    (n) =>
      socketsFor(n, 256, () => RouterSocket.open(routerUrl, secret), (s, i) => s.generate(`r${sid++}`, ref, "x", { maxTokens: RAMP_TOKENS, temperature: 1, topK: 0, seed: i }, 120_000)),
    { ...opts, spreadMs: RAMP_MS, expected: (i) => expectedText(i, RAMP_TOKENS) },
  );
  err("[bench] edge: WebSocket callers, 32 streams per socket");
  const viaEdge = await sweep(
    "edge ws",
    EDGE_LEVELS,
    // Socket k belongs to account k % ACCOUNTS: the streams spread evenly over the accounts.
    (n) => socketsFor(n, Math.min(32, Math.ceil(n / ACCOUNTS)), (k) => EdgeSocket.open(mesh.edge, "synth", keys[k % ACCOUNTS]!), (s, i) => s.generate(`e${sid++}`, { ...message(i), window: 256 })),
    opts,
  );
  err("[bench] edge: WebSocket callers with ?batch=true, 32 streams per socket");
  const viaEdgeBatched = await sweep(
    "edge wsb",
    BATCHED_LEVELS,
    (n) =>
      socketsFor(n, Math.min(32, Math.ceil(n / ACCOUNTS)), (k) => EdgeSocket.open(mesh.edge, "synth", keys[k % ACCOUNTS]!, true), (s, i) => s.generate(`b${sid++}`, { ...message(i), window: 256 })),
    opts,
  );
  err("[bench] edge: SSE callers, one request per stream");
  const viaSse = await sweep("edge sse", SSE_LEVELS, async () => ({ run: (i) => edgeSse(mesh.edge, keys[i % ACCOUNTS]!, "synth", message(i)), close: () => undefined }), opts);

  const profiles: Record<string, CpuProfile> = {};
  if (PROFILE_DIR) {
    for (const p of mesh.processes) if (p.name === `router-${REGION}`) p.child.kill("SIGUSR2");
    if (edgeProfiler) {
      profiles.edge = await edgeProfiler.stop();
      await writeFile(join(PROFILE_DIR, "edge.cpuprofile"), JSON.stringify(profiles.edge));
    }
    await new Promise((r) => setTimeout(r, 2_000));
    for (const f of await readdir(PROFILE_DIR)) if (/^router-\d+\.cpuprofile$/.test(f)) profiles.router = JSON.parse(await readFile(join(PROFILE_DIR, f), "utf8")) as CpuProfile;
  }
  say();
  say(`Stream capacity: synthetic nodes (${NODES}, ${STEP_MS} ms per token, no model), ${TOKENS} tokens per stream, every text checked`);
  say();
  const cpuRatio = (s: Sweep, r: Sweep["rows"][number], part: string) => ratio(r.cpuMsPerStream?.[part] ?? NaN, s.rows[0]?.cpuMsPerStream?.[part] ?? NaN);
  const rows = (name: string, s: Sweep) =>
    s.rows.map((r) => [
      name,
      String(r.streams),
      fmt(r.stats.ttft.p50),
      fmt(r.stats.ttft.p99),
      fmt(r.stats.itl.p50),
      fmt(r.stats.itl.p99),
      fmt(r.p99Ratio) + "x",
      fmt(r.stats.last.p99),
      String(r.stats.errors),
      `${fmt(r.cpuMsPerStream?.edge ?? NaN)} (${fmt(cpuRatio(s, r, "edge"))}x)`,
      `${fmt(r.cpuMsPerStream?.router ?? NaN)} (${fmt(cpuRatio(s, r, "router"))}x)`,
    ]);
  // last p99: request sent -> last token. A saturated hop bunches tokens (ITL p50 near 0, so a
  // modest ITL p99) while the whole stream comes late: this column and TTFT show it.
  say(formatTable(["path", "streams", "ttft p50", "ttft p99", "itl p50", "itl p99", "itl p99 / 1 stream", "last p99", "errors", "edge cpu ms/stream (/ 1 stream)", "router cpu ms/stream"], [...rows("router", viaRouter), ...rows("router ramp", viaRouterRamp), ...rows("edge ws", viaEdge), ...rows("edge wsb", viaEdgeBatched), ...rows("edge sse", viaSse)]));
  say();
  say(`Streams carried before p99 ITL doubles: router ${sweepVerdict(viaRouter)} (starts ramped over ${RAMP_MS} ms: ${sweepVerdict(viaRouterRamp)}); edge isolate (WebSocket) ${sweepVerdict(viaEdge)} (?batch=true: ${sweepVerdict(viaEdgeBatched)}); edge isolate (SSE) ${sweepVerdict(viaSse)}.`);
  say("Times in ms, at the client; CPU ms per stream from /proc (workerd; the router), a level's whole use over its streams. Goals (issue 14): >= 1,000 per router, >= 256 per edge isolate.");
  for (const [name, profile] of Object.entries(profiles)) {
    const t = selfTimes([profile], profile.startTime, profile.endTime, 15);
    say();
    say(`${name} CPU profile, whole run: ${fmt(t.busyMs)} ms busy of ${fmt(t.sampledMs)} ms sampled; self time, biggest first:`);
    say(formatTable(["function", "ms", "share of busy"], t.top.map((x) => [x.fn, fmt(x.ms), `${fmt(x.share * 100)}%`])));
  }
  const out = (s: Sweep) => ({
    carried: s.carried,
    levels: s.rows.map((r) => ({
      streams: r.streams,
      tokens: r.stats.tokens,
      errors: r.stats.errors,
      errorSamples: r.stats.errorSamples,
      p99Ratio: round(r.p99Ratio, 2),
      ttftMs: rounded(r.stats.ttft, ["p50", "p99"]),
      itlMs: rounded(r.stats.itl, ["p50", "p90", "p99"]),
      lastMs: rounded(r.stats.last, ["p50", "p99"]),
      ...(r.cpuMsPerStream ? { cpuMsPerStream: Object.fromEntries(Object.entries(r.cpuMsPerStream).map(([k, v]) => [k, round(v, 2)])), cpuPerStreamRatio: { edge: round(cpuRatio(s, r, "edge"), 2), router: round(cpuRatio(s, r, "router"), 2) } } : {}),
    })),
  });
  await b.saveResults({
    stepMs: STEP_MS,
    tokensPerStream: TOKENS,
    syntheticNodes: NODES,
    router: out(viaRouter),
    routerRamp: { rampMs: RAMP_MS, tokensPerStream: RAMP_TOKENS, ...out(viaRouterRamp) },
    edgeWs: out(viaEdge),
    edgeWsBatched: out(viaEdgeBatched),
    edgeSse: out(viaSse),
  });
});
