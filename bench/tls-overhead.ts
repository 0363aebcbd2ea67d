// What TLS costs on the router's port, against plain HTTP/WS measured in the same run: two real
// router processes (regions/main.ts, no Redis, no nodes) on 127.0.0.1, one plain and one with a
// certificate from a local CA (local/ca.ts). The bench plays the edge:
//
//   warm request    a signed GET /v1/status over a kept-alive connection (concurrency 1): what
//                   TLS adds to every call once the connection is up
//   new connection  the same request on a fresh connection each time (TCP, and for TLS the
//                   handshake and certificate check): what a cold edge-to-router hop pays
//   warm, c=16      16 callers on kept-alive connections: throughput
//   ws frame        a ping/pong round trip on an open stream socket (/v1/streams, signed
//                   opening): what TLS adds to each frame on a WSS socket (node and stream sockets)
//
// Phases are interleaved (plain, tls, tls, plain, ...) so drift on a shared machine does not all
// land on one side. Every figure is also given as a ratio TLS / plain.
//
// Run: npx tsx bench/tls-overhead.ts [--quick]
// Prints a table and writes bench/results/tls-overhead-<ISO>.json and -latest.json.

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { rootCertificates } from "node:tls";
import { Agent, fetch as undiciFetch } from "undici";
import WebSocket from "ws";
import { makeLocalCa } from "../local/ca.js";
import { freePort } from "../local/free-port.js";
import { waitFor } from "../local/mesh.js";
import { signRequest } from "../protocol/signing.js";
import { err, QUICK, runBench, type Bench, type BenchChild } from "./harness.js";
import { fmt, printTable, ratio, round, runPhase, type PhaseResult } from "./stats.js";

const ROUNDS = QUICK ? 1 : 3;
const PHASE = { warmup: QUICK ? 20 : 100, maxCalls: QUICK ? 200 : 2_000, maxMs: QUICK ? 2_000 : 8_000 };
const NEW_CONN = { warmup: 5, maxCalls: QUICK ? 50 : 400, maxMs: QUICK ? 2_000 : 8_000 };
const SECRET = randomBytes(24).toString("base64url");
const TOKEN = randomBytes(24).toString("base64url");

function spawnRouter(b: Bench, name: string, port: number, env: Record<string, string>): BenchChild {
  return b.spawnTsx(`router-${name}`, "regions/main.ts", [], { MESH_REGION: "bench", HOST: "127.0.0.1", PORT: String(port), MESH_SECRET: SECRET, NODE_TOKEN: TOKEN, DRAIN_TIMEOUT_MS: "0", ...env });
}

interface Side {
  name: "plain" | "tls";
  base: string;
  ca: string | undefined;
  agent: Agent;
}

async function status(side: Side, agent: Agent): Promise<void> {
  const headers = await signRequest(SECRET, "GET", "/v1/status");
  const res = await undiciFetch(`${side.base}/v1/status`, { headers, dispatcher: agent });
  await res.arrayBuffer();
  if (res.status !== 200) throw new Error(`status ${res.status}`);
}

async function openStreamSocket(side: Side): Promise<WebSocket> {
  const headers = await signRequest(SECRET, "GET", "/v1/streams");
  const ws = new WebSocket(`${side.base.replace(/^http/, "ws")}/v1/streams`, { headers, ...(side.ca ? { ca: [...rootCertificates, side.ca] } : {}) });
  await new Promise<void>((res, rej) => {
    ws.once("open", () => res());
    ws.once("error", rej);
  });
  return ws;
}

const pingPong = (ws: WebSocket) =>
  new Promise<void>((res) => {
    ws.once("pong", () => res());
    ws.ping();
  });

await runBench("tls-overhead", async (b) => {
  const ca = await makeLocalCa(join(b.tmpDir, "ca"), [{ name: "router", hosts: ["127.0.0.1"] }]);
  const caPem = readFileSync(ca.caFile, "utf8");
  const [plainPort, tlsPort] = [await freePort(), await freePort()];
  const routers = {
    plain: spawnRouter(b, "plain", plainPort, {}),
    tls: spawnRouter(b, "tls", tlsPort, { ROUTER_TLS_CERT: ca.certs.router!.certFile, ROUTER_TLS_KEY: ca.certs.router!.keyFile }),
  };
  const sides: Side[] = [
    { name: "plain", base: `http://127.0.0.1:${plainPort}`, ca: undefined, agent: new Agent({ connections: 32 }) },
    { name: "tls", base: `https://127.0.0.1:${tlsPort}`, ca: caPem, agent: new Agent({ connections: 32, connect: { ca: caPem } }) },
  ];
  b.defer(() => Promise.all(sides.map((s) => s.agent.close())));
  for (const s of sides) await waitFor(`router ${s.name}`, 30_000, () => status(s, s.agent).then(() => true), routers[s.name]);
  err(`[bench] routers up: ${sides.map((s) => s.base).join(", ")}`);

  type PhaseName = "warm request" | "new connection" | "warm, c=16" | "ws frame";
  const results: Record<PhaseName, Record<Side["name"], PhaseResult[]>> = {
    "warm request": { plain: [], tls: [] },
    "new connection": { plain: [], tls: [] },
    "warm, c=16": { plain: [], tls: [] },
    "ws frame": { plain: [], tls: [] },
  };
  const sockets = new Map<Side["name"], WebSocket>();
  for (const s of sides) sockets.set(s.name, await openStreamSocket(s));
  for (let round_ = 0; round_ < ROUNDS; round_++) {
    const order = round_ % 2 === 0 ? sides : [...sides].reverse();
    for (const s of order) {
      results["warm request"][s.name].push(await runPhase(() => status(s, s.agent), { ...PHASE, concurrency: 1 }));
      results["new connection"][s.name].push(
        await runPhase(async () => {
          // A pool of one that is closed after the call: every request opens its own connection.
          const fresh = new Agent({ connect: s.ca ? { ca: s.ca } : {}, pipelining: 0 });
          try {
            await status(s, fresh);
          } finally {
            await fresh.close();
          }
        }, { ...NEW_CONN, concurrency: 1 }),
      );
      results["warm, c=16"][s.name].push(await runPhase(() => status(s, s.agent), { ...PHASE, concurrency: 16 }));
      const ws = sockets.get(s.name)!;
      results["ws frame"][s.name].push(await runPhase(() => pingPong(ws), { ...PHASE, concurrency: 1 }));
      err(`[bench] round ${round_ + 1}/${ROUNDS} ${s.name} done`);
    }
  }
  for (const ws of sockets.values()) ws.close();

  // Per phase: the median over rounds of each round's p50 / p99 / calls per second.
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const rows: string[][] = [];
  const json: Record<string, unknown> = {};
  for (const [phase, bySide] of Object.entries(results)) {
    const p = (side: Side["name"], f: (r: PhaseResult) => number) => med(bySide[side as Side["name"]].map(f));
    const errors = bySide.plain.concat(bySide.tls).reduce((n, r) => n + r.errors, 0);
    const v = {
      plainP50: p("plain", (r) => r.latency.p50),
      tlsP50: p("tls", (r) => r.latency.p50),
      plainP99: p("plain", (r) => r.latency.p99),
      tlsP99: p("tls", (r) => r.latency.p99),
      plainPerSec: p("plain", (r) => r.okPerSec),
      tlsPerSec: p("tls", (r) => r.okPerSec),
    };
    json[phase] = {
      ...Object.fromEntries(Object.entries(v).map(([k, x]) => [k, round(x)])),
      p50Ratio: round(ratio(v.tlsP50, v.plainP50)),
      p99Ratio: round(ratio(v.tlsP99, v.plainP99)),
      throughputRatio: round(ratio(v.tlsPerSec, v.plainPerSec)),
      addedP50Ms: round(v.tlsP50 - v.plainP50),
      errors,
    };
    rows.push([
      phase,
      fmt(v.plainP50, 3),
      fmt(v.tlsP50, 3),
      fmt(ratio(v.tlsP50, v.plainP50)),
      fmt(v.tlsP50 - v.plainP50, 3),
      fmt(ratio(v.tlsP99, v.plainP99)),
      fmt(v.plainPerSec, 0),
      fmt(v.tlsPerSec, 0),
      fmt(ratio(v.tlsPerSec, v.plainPerSec)),
      String(errors),
    ]);
  }
  printTable(
    ["phase", "plain p50 ms", "tls p50 ms", "tls/plain p50", "added p50 ms", "tls/plain p99", "plain /s", "tls /s", "tls/plain /s", "errors"],
    rows,
    ["left", "right", "right", "right", "right", "right", "right", "right", "right", "right"],
  );
  await b.saveResults({ rounds: ROUNDS, phases: json });
});
