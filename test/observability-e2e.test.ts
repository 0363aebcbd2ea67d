// Trace context and metrics through every real part (issue 15, "Metrics and traces"): the edge
// in workerd, a router and a node, booted as `npm start` boots them. A caller's traceparent
// comes back as the edge's span in the same trace, and Server-Timing names the edge's, the
// router's and the node's spans (the router names the node's only when the node echoed the same
// trace id); a missing or malformed one starts a new trace. The mesh's routers and nodes serve
// /metrics with the token the launcher gives them, and count the calls that went through.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { startMesh, type MeshHandle } from "../local/mesh.js";
import { parseTraceparent } from "../protocol/trace-context.js";
import { call, mlpBody, type Answer } from "./helpers/mesh-client.js";
import { sample, scrape } from "./helpers/metrics-text.js";

let mesh: MeshHandle;
let dir: string;
const PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "observability-e2e-"));
  mesh = await startMesh({ stateDir: dir, regions: [{ name: "us-west", lat: 37.34, lon: -121.89, nodes: 1 }] });
}, 240_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const infer = (headers: Record<string, string> = {}) =>
  call(`${mesh.edge}/v2/models/demo-mlp/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]), headers });

/** The desc of a Server-Timing entry (the span id that measured it). */
const spanOf = (a: Answer, entry: string) => new RegExp(`(?:^|,\\s*)${entry};dur=[\\d.]+;desc="([0-9a-f]{16})"`).exec(a.headers.get("server-timing") ?? "")?.[1];

describe("trace context through the mesh", () => {
  it("a caller's traceparent: the answer carries the edge's span in the same trace, and Server-Timing names the edge's, router's and node's spans", async () => {
    const a = await infer({ traceparent: PARENT });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    const mine = parseTraceparent(a.headers.get("traceparent"));
    expect(mine?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    expect(mine?.flags).toBe("01");
    expect(mine?.spanId).not.toBe("00f067aa0ba902b7");
    const spans = { edge: spanOf(a, "edge"), region: spanOf(a, "region"), infer: spanOf(a, "infer") };
    expect(spans.edge).toBe(mine?.spanId);
    expect(spans.region).toMatch(/^[0-9a-f]{16}$/);
    expect(spans.infer).toMatch(/^[0-9a-f]{16}$/);
    expect(new Set([...Object.values(spans), "00f067aa0ba902b7"]).size).toBe(4);
    // The figures Server-Timing had before stay, each with its duration.
    for (const part of ["edge", "network", "region", "queue", "load", "infer", "total"]) expect(a.headers.get("server-timing")).toMatch(new RegExp(`${part};dur=`));
  });

  it("no traceparent, or a malformed one: a new trace, still carried to the node", async () => {
    const cases: Record<string, string>[] = [{}, { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01" }];
    for (const headers of cases) {
      const a = await infer(headers);
      expect(a.status).toBe(200);
      const mine = parseTraceparent(a.headers.get("traceparent"));
      expect(mine).not.toBeNull();
      expect(mine!.traceId).not.toBe("4bf92f3577b34da6a3ce929d0e0e4736");
      expect(spanOf(a, "infer")).toMatch(/^[0-9a-f]{16}$/);
    }
  });

  it("an error answer carries the edge's span too", async () => {
    const a = await call(`${mesh.edge}/v2/models/no-such-model/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]), headers: { traceparent: PARENT } });
    expect(a.status).toBe(404);
    expect(parseTraceparent(a.headers.get("traceparent"))?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
  });
});

describe("metrics of the mesh npm start boots", () => {
  it("the router and the node serve /metrics with the launcher's token, counting the calls that reached them", async () => {
    const router = mesh.metrics.targets["router-us-west"]!;
    const node = mesh.metrics.targets["node-us-west-node-1"]!;
    expect((await scrape(router, null)).status).toBe(401);
    const before = sample(await (await scrape(router, mesh.metrics.token)).text(), "mesh_router_calls_total", { kind: "infer" }) ?? 0;
    const nodeBefore = sample(await (await scrape(node, mesh.metrics.token)).text(), "mesh_node_calls_total") ?? 0;
    for (let i = 0; i < 3; i++) expect((await infer()).status).toBe(200);
    const r = await scrape(router, mesh.metrics.token);
    expect(r.status).toBe(200);
    const text = await r.text();
    expect(sample(text, "mesh_router_calls_total", { kind: "infer", region: "us-west" })).toBe(before + 3);
    expect(sample(text, "mesh_router_nodes", { state: "available" })).toBe(1);
    const n = await scrape(node, mesh.metrics.token);
    expect(n.status).toBe(200);
    expect(sample(await n.text(), "mesh_node_calls_total", { node: "us-west-node-1" })).toBe(nodeBefore + 3);
  });

  it("a generation: in the caller's trace, and counted as a stream with its tokens on the router and the node", async () => {
    const router = mesh.metrics.targets["router-us-west"]!;
    const node = mesh.metrics.targets["node-us-west-node-1"]!;
    const read = async (url: string) => (await scrape(url, mesh.metrics.token)).text();
    const [r0, n0] = [await read(router), await read(node)];
    const a = await call(`${mesh.edge}/v2/models/demo-chat/generate`, {
      key: mesh.apiKey,
      json: { text_input: "The river", parameters: { max_tokens: 12, seed: 1 } },
      headers: { traceparent: PARENT },
    });
    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(parseTraceparent(a.headers.get("traceparent"))?.traceId).toBe("4bf92f3577b34da6a3ce929d0e0e4736");
    const tokens = a.body.usage.completion_tokens as number;
    expect(tokens).toBeGreaterThan(0);
    const delta = (before: string, after: string, name: string, labels: Record<string, string> = {}) => (sample(after, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
    const r1 = await read(router);
    // The node's token count comes from its session child's reports (every 50 ms): poll for it.
    let n1 = "";
    await vi.waitFor(async () => {
      n1 = await read(node);
      expect(delta(n0, n1, "mesh_node_tokens_generated_total")).toBeGreaterThanOrEqual(tokens);
    }, { timeout: 5_000, interval: 100 });
    expect(delta(r0, r1, "mesh_router_streams_started_total")).toBe(1);
    expect(delta(r0, r1, "mesh_router_calls_total", { kind: "stream" })).toBe(1);
    expect(delta(r0, r1, "mesh_router_tokens_relayed_total")).toBe(tokens);
    expect(delta(r0, r1, "mesh_router_latency_seconds_count", { phase: "total" })).toBe(1);
    expect(delta(n0, n1, "mesh_node_streams_started_total")).toBe(1);
    // The node may have chosen one token more than it sent (held for credit that never came).
    expect(delta(n0, n1, "mesh_node_tokens_generated_total")).toBeGreaterThanOrEqual(tokens);
  });
});
