// Metrics and traces on one real router and one real node (issue 15, "Metrics and traces"):
// after traffic, the router's and the node's GET /metrics hold the counts the calls produced
// (read from the exposition text), and refuse a scrape without the token; a call that carries a
// traceparent gets the router's and the node's spans back in the same trace. Unit parts: the
// credential check, and per-model series leaving with their model.

import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../local/free-port.js";
import { nodeConfigFromEnv } from "../gpu-node/config.js";
import { NodeMetrics, type NodeMetricsSource } from "../gpu-node/metrics.js";
import { routerConfigFromEnv } from "../regions/config.js";
import { startRouter } from "../regions/server.js";
import { MAX_MODEL_SERIES, ModelLabels, OTHER_MODEL, refuseMetrics } from "../protocol/metrics-endpoint.js";
import type { ModelRef, WarmModel } from "../protocol/messages.js";
import { sample, scrape as scrapeWith } from "./helpers/metrics-text.js";
import { fp32, RegionHarness } from "./helpers/region-harness.js";

const TOKEN = randomBytes(24).toString("base64url");
const NODE = "obs-1";

const scrape = (url: string, token: string | null = TOKEN) => scrapeWith(url, token);

let h: RegionHarness;
let mlp: ModelRef;
let nodeMetricsUrl = "";

beforeAll(async () => {
  h = await RegionHarness.create("obs-region");
  await h.startRouter({ METRICS_TOKEN: TOKEN });
  const port = await freePort();
  nodeMetricsUrl = `http://127.0.0.1:${port}/metrics`;
  await h.startNode(NODE, { NODE_METRICS_PORT: String(port), METRICS_TOKEN: TOKEN, NODE_THREADS_PER_WORKER: "1" });
  mlp = await h.model("demo-mlp", 1);
}, 120_000);

afterAll(async () => {
  await h?.close();
});

describe("/metrics after traffic", () => {
  it("the router and the node count the calls, errors, loads and latencies the traffic produced", async () => {
    const good = 5;
    const bad = 2;
    for (let i = 0; i < good; i++) {
      const a = await h.infer(mlp, [fp32("x", [[1, 2, 3, 4]])]);
      expect(a.response.ok, JSON.stringify(a.response)).toBe(true);
    }
    const badCodes: string[] = [];
    for (let i = 0; i < bad; i++) {
      // A row of the wrong width: the node runs it and the runtime refuses it.
      const a = await h.infer(mlp, [fp32("x", [[1, 2, 3]])]);
      expect(a.response.ok).toBe(false);
      if (!a.response.ok) badCodes.push(a.response.code);
    }
    const code = badCodes[0]!;
    expect(badCodes).toEqual([code, code]);
    // An unsigned call: refused from its headers, counted as an unauthorized error.
    const unsigned = await fetch(`${h.routerUrl}/v1/infer`, { method: "POST", body: "x", signal: AbortSignal.timeout(10_000) });
    expect(unsigned.status).toBe(401);

    const r = await scrape(`${h.routerUrl}/metrics`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toMatch(/^text\/plain/);
    const router = await r.text();
    const model = { model: mlp.key };
    expect(sample(router, "mesh_router_calls_total", { kind: "infer", region: "obs-region" })).toBe(good + bad + 1);
    expect(sample(router, "mesh_router_errors_total", { kind: "infer", code })).toBe(bad);
    expect(sample(router, "mesh_router_errors_total", { kind: "infer", code: "unauthorized" })).toBe(1);
    expect(sample(router, "mesh_router_latency_seconds_count", { ...model, phase: "total" })).toBe(good);
    expect(sample(router, "mesh_router_latency_seconds_count", { ...model, phase: "queue" })).toBe(good);
    expect(sample(router, "mesh_router_loads_total")).toBe(1);
    expect(sample(router, "mesh_router_load_failures_total")).toBe(0);
    expect(sample(router, "mesh_router_warm_replicas", model)).toBe(1);
    expect(sample(router, "mesh_router_queue_depth", model)).toBe(0);
    expect(sample(router, "mesh_router_nodes", { state: "available" })).toBe(1);
    expect(sample(router, "process_resident_memory_bytes")).toBeGreaterThan(0);

    const n = await scrape(nodeMetricsUrl);
    expect(n.status).toBe(200);
    const node = await n.text();
    expect(sample(node, "mesh_node_calls_total", { node: NODE })).toBe(good + bad);
    expect(sample(node, "mesh_node_errors_total", { code })).toBe(bad);
    expect(sample(node, "mesh_node_latency_seconds_count", { ...model, phase: "compute" })).toBe(good);
    expect(sample(node, "mesh_node_loads_total")).toBe(1);
    expect(sample(node, "mesh_node_load_seconds_count", { phase: "session" })).toBe(1);
    expect(sample(node, "mesh_node_warm_models")).toBe(1);
    expect(sample(node, "mesh_node_model_memory_bytes", model)).toBeGreaterThan(0);
    expect(sample(node, "process_resident_memory_bytes")).toBeGreaterThan(0);
  }, 120_000);

  it("refuses a scrape without the token, or with a wrong one, in the error envelope", async () => {
    for (const url of [`${h.routerUrl}/metrics`, nodeMetricsUrl]) {
      for (const token of [null, "not-the-metrics-token-at-all"]) {
        const res = await scrape(url, token);
        expect(res.status, url).toBe(401);
        expect(res.headers.get("www-authenticate")).toBe("Bearer");
        const body = (await res.json()) as { code: string; error: string; requestId: string };
        expect(body.code).toBe("unauthorized");
        expect(body.requestId).toBe("-");
      }
    }
    // The node's listener serves nothing else.
    const other = await scrape(nodeMetricsUrl.replace("/metrics", "/v1/status"));
    expect(other.status).toBe(404);
    expect(((await other.json()) as { code: string }).code).toBe("not_found");
  });
});

describe("trace context through the region", () => {
  const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

  it("a call with the caller's traceparent: the router's and the node's spans come back, both in that trace", async () => {
    const a = await h.infer(mlp, [fp32("x", [[1, 2, 3, 4]])], { headers: { traceparent: parent } });
    expect(a.response.ok).toBe(true);
    if (!a.response.ok) return;
    const trace = a.response.timing.trace!;
    // The router names the node's span only when the node's echo carries the same trace id.
    expect(trace.router).toMatch(/^[0-9a-f]{16}$/);
    expect(trace.node).toMatch(/^[0-9a-f]{16}$/);
    expect(new Set([trace.router, trace.node, "00f067aa0ba902b7"]).size).toBe(3);
  });

  it("a malformed traceparent is ignored: the call runs in a new trace", async () => {
    const a = await h.infer(mlp, [fp32("x", [[1, 2, 3, 4]])], { headers: { traceparent: "00-not-a-trace-01" } });
    expect(a.response.ok).toBe(true);
    if (a.response.ok) expect(a.response.timing.trace?.node).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe("metrics configuration", () => {
  it("a router without METRICS_TOKEN: /metrics is off (404 in the envelope)", async () => {
    const router = await startRouter(routerConfigFromEnv({ MESH_REGION: "no-metrics", PORT: "0", MESH_SECRET: TOKEN, NODE_TOKEN: TOKEN, DRAIN_TIMEOUT_MS: "0" }));
    try {
      const res = await scrape(`${router.url}/metrics`);
      expect(res.status).toBe(404);
      expect(((await res.json()) as { code: string }).code).toBe("not_found");
    } finally {
      await router.close();
    }
  });

  it("a node with NODE_METRICS_PORT needs METRICS_TOKEN; without the port there is no listener", () => {
    const base = { ROUTER_URL: "ws://127.0.0.1:1/v1/nodes", NODE_TOKEN: TOKEN };
    expect(() => nodeConfigFromEnv({ ...base, NODE_METRICS_PORT: "9464" })).toThrow(/METRICS_TOKEN/);
    expect(() => nodeConfigFromEnv({ ...base, NODE_METRICS_PORT: "x", METRICS_TOKEN: TOKEN })).toThrow(/NODE_METRICS_PORT/);
    expect(nodeConfigFromEnv({ ...base, METRICS_TOKEN: TOKEN }).metrics).toBeNull();
    expect(nodeConfigFromEnv({ ...base, NODE_METRICS_PORT: "0", METRICS_TOKEN: TOKEN }).metrics).toEqual({ host: "127.0.0.1", port: 0, token: TOKEN, tls: null });
    expect(() => routerConfigFromEnv({ MESH_REGION: "r", MESH_SECRET: TOKEN, NODE_TOKEN: TOKEN, METRICS_TOKEN: "short" })).toThrow(/METRICS_TOKEN/);
  });
});

describe("metrics units", () => {
  it("the credential check: off without a token (404), 401 without the right bearer token, else served", async () => {
    expect((await refuseMetrics(`Bearer ${TOKEN}`, null))?.code).toBe("not_found");
    expect((await refuseMetrics(undefined, TOKEN))?.code).toBe("unauthorized");
    expect((await refuseMetrics(`Bearer ${TOKEN}x`, TOKEN))?.code).toBe("unauthorized");
    expect((await refuseMetrics(`Basic ${TOKEN}`, TOKEN))?.code).toBe("unauthorized");
    expect(await refuseMetrics(`bearer ${TOKEN}`, TOKEN)).toBeNull();
  });

  it("model label values are capped; past the cap models share 'other'", () => {
    const removed: string[] = [];
    const labels = new ModelLabels((m) => removed.push(m), 2);
    expect([labels.label("a@1"), labels.label("b@1"), labels.label("c@1"), labels.label("a@1")]).toEqual(["a@1", "b@1", OTHER_MODEL, "a@1"]);
    labels.prune(new Set(["b@1"]));
    expect(removed).toEqual(["a@1"]);
    expect(labels.label("c@1")).toBe("c@1");
    expect(MAX_MODEL_SERIES).toBeGreaterThan(0);
  });

  it("a node's per-model series leave the exposition when the model is unloaded", async () => {
    let warm: WarmModel[] = [{ key: "m@1", memoryMb: 10, lastUsed: 0 }];
    const source: NodeMetricsSource = { warm: () => warm, inflight: () => 0, queued: () => 0, runs: () => 1, streamsActive: () => 0, tokens: () => 0 };
    const m = new NodeMetrics("unit", source);
    m.served("m@1", 12, 10);
    const before = await m.expose();
    expect(sample(before, "mesh_node_latency_seconds_count", { model: "m@1", phase: "total" })).toBe(1);
    expect(sample(before, "mesh_node_model_memory_bytes", { model: "m@1" })).toBe(10 * 2 ** 20);
    warm = [];
    const after = await m.expose();
    expect(after).not.toContain('model="m@1"');
    expect(sample(after, "mesh_node_calls_total")).toBe(1);
  });
});
