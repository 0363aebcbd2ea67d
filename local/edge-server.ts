// Runs the edge Worker in workerd through Miniflare, without wrangler dev's proxy in front
// (that proxy added about 7 ms to every call). The bundle is what `wrangler deploy` would
// upload, and D1/R2 persist where `wrangler d1 migrations apply --local` wrote them, so this is
// the same Worker, database and bucket, served directly.
//
// Env: EDGE_BUNDLE (built index.js), EDGE_PORT, EDGE_PERSIST (wrangler's --persist-to folder),
// EDGE_VARS (path to a JSON file of the Worker's vars and secrets), and optionally
// EDGE_EXTRA_PORTS (comma-separated): one more copy of the Worker per port, each in its own
// isolate (its own memory, caches and limiters) over the same D1, R2 and Redis, the way two
// Cloudflare colos see one deployment. Tests use it to prove bounds across isolates.
// EDGE_EXTRA_VARS (optional, JSON array): vars that override EDGE_VARS in the extra copies, one
// object per copy in order (a bench runs a baseline setting in one isolate beside the default).
// MESH_CA_FILE (optional, PEM): a CA the Worker's outbound fetches and WebSockets trust besides
// the public ones (workerd's network service `trustedCertificates`), so https/wss region URLs
// signed by a local CA (local/ca.ts) work here the way public certificates work at Cloudflare;
// a router certificate from any other CA is refused, as in production.
// The multi-host mode (local/topology.ts) runs one per colo, each on the colo's own network
// namespace: EDGE_HOST (default 127.0.0.1) is the address to listen on there, and EDGE_CF (JSON)
// the `request.cf` its callers get (their colo and coordinates).
// EDGE_FRONT_PORT (optional, tests only): a stand-in for Cloudflare's front line on that port
// (FRONT_LINE below), for what local workerd cannot show: a caller that disconnects while the
// edge gathers a whole answer reaching the edge as request.signal.
// EDGE_INSPECTOR_PORT (optional, benches only): the first isolate's V8 inspector on that port,
// path /edge, so bench/mesh-overhead.ts --profile can take its CPU profile (the extra copies'
// at /edge-2, /edge-3, ...).

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { Log, LogLevel, Miniflare } from "miniflare";
import { EDGE_ASSETS } from "./edge-assets.js";
import { exitWhenParentDies } from "../runtime/parent-watch.js";

// Must match wrangler.toml: wrangler keys local D1 state by database_id (and the date and flags are the Worker's).
const D1_DATABASE_ID = "00000000-0000-0000-0000-000000000000";
const R2_BUCKET = "inference-mesh-artifacts";
const COMPATIBILITY_DATE = "2026-04-01";
const COMPATIBILITY_FLAGS = ["enable_request_signal"];

const need = (name: string): string => {
  const v = process.env[name];
  if (!v) {
    console.error(`edge-server: ${name} must be set`);
    process.exit(2);
  }
  return v;
};

const persist = need("EDGE_PERSIST");
const vars = JSON.parse(readFileSync(need("EDGE_VARS"), "utf8")) as Record<string, string>;
const extraPorts = (process.env.EDGE_EXTRA_PORTS ?? "")
  .split(",")
  .filter(Boolean)
  .map((p) => Number(p));
const extraVars = JSON.parse(process.env.EDGE_EXTRA_VARS || "[]") as Record<string, string>[];
const caFile = process.env.MESH_CA_FILE;
// Miniflare's own default outbound, with the local CA added: public and private addresses
// (routers listen on loopback or a namespace's address), browser CAs still trusted.
const outbound = caFile
  ? {
      outboundService: {
        network: {
          allow: ["public", "private", "240.0.0.0/4"],
          deny: [],
          tlsOptions: { trustBrowserCas: true, trustedCertificates: [readFileSync(caFile, "utf8")] },
        },
      },
    }
  : {};
const worker = {
  modules: true,
  scriptPath: need("EDGE_BUNDLE"),
  modulesRoot: dirname(need("EDGE_BUNDLE")),
  compatibilityDate: COMPATIBILITY_DATE,
  compatibilityFlags: COMPATIBILITY_FLAGS,
  d1Databases: { DB: D1_DATABASE_ID },
  r2Buckets: { ARTIFACTS: R2_BUCKET },
  bindings: vars,
  // wrangler.toml [assets]: the browser pages, read by the Worker through ASSETS.
  assets: EDGE_ASSETS,
  ...outbound,
};
// At Cloudflare the front line sees a caller's connection close and cancels the Worker's
// request, which the Worker sees as request.signal (enable_request_signal). workerd's own HTTP
// server notices a closed connection only when it next writes to it, and a gathered answer
// writes nothing until it is whole, so locally a caller that leaves mid-generation goes unseen.
// This Worker stands in for the front line: it relays each request to the edge over a service
// binding, answers 200 at once and writes a space every 100 ms until the edge's body follows
// (leading whitespace is still valid JSON), and when a write fails (its caller is gone) aborts
// the relayed request, which reaches the edge as a cancelled request, as at Cloudflare. Its
// status and headers are not the edge's: tests use it only to leave mid-answer.
const FRONT_LINE = `export default {
  async fetch(request, env, ctx) {
    const relayed = new AbortController();
    const { readable, writable } = new TransformStream();
    const writer = writable.getWriter();
    const gone = () => relayed.abort(new Error("the caller disconnected"));
    request.signal.addEventListener("abort", gone);
    const beat = setInterval(() => writer.write(new Uint8Array([32])).catch(gone), 100);
    ctx.waitUntil((async () => {
      try {
        const res = await env.EDGE.fetch(request, { signal: relayed.signal });
        clearInterval(beat);
        if (res.body) for await (const chunk of res.body) await writer.write(chunk);
        await writer.close();
      } catch (err) {
        clearInterval(beat);
        gone();
        await writer.abort(err).catch(() => {});
      }
    })());
    return new Response(readable, { headers: { "content-type": "application/json" } });
  },
};`;
const frontPort = process.env.EDGE_FRONT_PORT ? Number(process.env.EDGE_FRONT_PORT) : undefined;
const inspectorPort = process.env.EDGE_INSPECTOR_PORT ? Number(process.env.EDGE_INSPECTOR_PORT) : undefined;
const mf = new Miniflare({
  host: process.env.EDGE_HOST || "127.0.0.1",
  ...(inspectorPort ? { inspectorPort } : {}),
  port: Number(need("EDGE_PORT")),
  // Offline: no lookup of a real `request.cf`; a local caller looks like it is in San Jose
  // (in local mode callers may name another colo with x-mesh-colo).
  cf: process.env.EDGE_CF ? (JSON.parse(process.env.EDGE_CF) as Record<string, string>) : { colo: "SJC", country: "US", latitude: "37.36", longitude: "-121.93" },
  d1Persist: join(persist, "v3", "d1"),
  r2Persist: join(persist, "v3", "r2"),
  log: new Log(LogLevel.WARN),
  workers: [
    { name: "edge", ...worker, ...(inspectorPort ? { unsafeInspectorProxy: true } : {}) },
    // Extra copies answer on their own sockets, straight to their isolate.
    ...extraPorts.map((port, i) => ({
      name: `edge-${i + 2}`,
      ...worker,
      bindings: { ...vars, ...extraVars[i] },
      unsafeDirectSockets: [{ host: "127.0.0.1", port }],
      ...(inspectorPort ? { unsafeInspectorProxy: true } : {}),
    })),
    ...(frontPort
      ? [
          {
            name: "front-line",
            modules: true,
            script: FRONT_LINE,
            compatibilityDate: COMPATIBILITY_DATE,
            compatibilityFlags: COMPATIBILITY_FLAGS,
            serviceBindings: { EDGE: "edge" },
            unsafeDirectSockets: [{ host: "127.0.0.1", port: frontPort }],
          },
        ]
      : []),
  ],
});
const url = await mf.ready;
console.log(JSON.stringify({ t: new Date().toISOString(), level: "info", part: "edge-server", msg: "edge ready", url: url.toString() }));

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  await mf.dispose().catch(() => undefined);
  process.exit(0);
};
process.on("SIGTERM", () => void stop());
process.on("SIGINT", () => void stop());
exitWhenParentDies(() => void stop());
