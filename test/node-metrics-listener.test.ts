// The node's /metrics listener where Prometheus scrapes from another host (issue 15): bound to
// the address NODE_METRICS_HOST names, over HTTPS (NODE_METRICS_TLS_CERT/KEY) off loopback, and
// refusing a scrape without the bearer token with 401 in the JSON error shape. A real listener
// (serveMetrics, in this process) on all addresses with a certificate from a throwaway CA,
// scraped at this machine's own non-loopback address; the configuration rules as units.

import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeConfigFromEnv, type MetricsListener } from "../gpu-node/config.js";
import { NodeMetrics, serveMetrics } from "../gpu-node/metrics.js";
import { makeLocalCa, type LocalCa } from "../local/ca.js";
import { sample } from "./helpers/metrics-text.js";

const TOKEN = randomBytes(24).toString("base64url");
const BASE = { ROUTER_URL: "ws://127.0.0.1:1/v1/nodes", NODE_TOKEN: TOKEN, METRICS_TOKEN: TOKEN, NODE_METRICS_PORT: "0" };

/** This machine's first non-loopback IPv4 address (what another host would scrape), if any. */
const outside = Object.values(networkInterfaces())
  .flat()
  .find((a) => a && a.family === "IPv4" && !a.internal)?.address;

let dir: string;
let ca: LocalCa;
let dispatcher: Agent;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "node-metrics-"));
  ca = await makeLocalCa(dir, [{ name: "node", hosts: ["127.0.0.1", ...(outside ? [outside] : [])] }]);
  dispatcher = new Agent({ connect: { ca: await readFile(ca.caFile, "utf8") } });
}, 60_000);

afterAll(async () => {
  await dispatcher?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const scrape = (url: string, headers: Record<string, string> = {}) => fetch(url, { headers, dispatcher, signal: AbortSignal.timeout(10_000) } as RequestInit);

describe("node /metrics for a scraper on another host", () => {
  it("served over HTTPS on the configured address with the token; 401 in the error shape without it", async () => {
    const config = nodeConfigFromEnv({ ...BASE, NODE_METRICS_HOST: "0.0.0.0", NODE_METRICS_TLS_CERT: ca.certs.node!.certFile, NODE_METRICS_TLS_KEY: ca.certs.node!.keyFile });
    const listen = config.metrics as MetricsListener;
    expect(listen.host).toBe("0.0.0.0");
    expect(listen.tls?.certFile).toBe(ca.certs.node!.certFile);
    const metrics = new NodeMetrics("scraped-1", { warm: () => [], inflight: () => 0, queued: () => 0, runs: () => 3, streamsActive: () => 0, tokens: () => 0 });
    metrics.served("m@1", 12, 10);
    const server = await serveMetrics(metrics, listen);
    try {
      expect(server.url).toMatch(/^https:\/\/0\.0\.0\.0:\d+\/metrics$/);
      const port = new URL(server.url).port;
      // Another host reaches it at this machine's own address (loopback when there is none).
      const url = `https://${outside ?? "127.0.0.1"}:${port}/metrics`;
      const ok = await scrape(url, { authorization: `Bearer ${TOKEN}` });
      expect(ok.status).toBe(200);
      const text = await ok.text();
      expect(sample(text, "mesh_node_calls_total", { node: "scraped-1" })).toBe(1);
      expect(sample(text, "mesh_node_runs_total")).toBe(3);
      for (const headers of <Record<string, string>[]>[{}, { authorization: `Bearer ${TOKEN}x` }, { authorization: `Basic ${TOKEN}` }]) {
        const refused = await scrape(url, headers);
        expect(refused.status).toBe(401);
        expect(refused.headers.get("www-authenticate")).toBe("Bearer");
        const body = (await refused.json()) as Record<string, unknown>;
        expect(Object.keys(body).sort()).toEqual(["code", "error", "requestId"]);
        expect(body.code).toBe("unauthorized");
      }
      // Plain HTTP to an HTTPS listener gets no metrics.
      await expect(fetch(url.replace("https:", "http:"), { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(10_000) }).then((r) => r.status)).rejects.toThrow();
    } finally {
      await server.close();
    }
  });

  it("off loopback without a certificate: refused at start (unless MESH_LOCAL=1); the pair goes together; loopback stays plain", () => {
    expect(() => nodeConfigFromEnv({ ...BASE, NODE_METRICS_HOST: "0.0.0.0" })).toThrow(/NODE_METRICS_TLS_CERT and NODE_METRICS_TLS_KEY must be set/);
    expect(nodeConfigFromEnv({ ...BASE, NODE_METRICS_HOST: "0.0.0.0", MESH_LOCAL: "1" }).metrics).toMatchObject({ host: "0.0.0.0", tls: null });
    expect(() => nodeConfigFromEnv({ ...BASE, NODE_METRICS_HOST: "0.0.0.0", NODE_METRICS_TLS_CERT: ca.certs.node!.certFile })).toThrow(/go together/);
    expect(() => nodeConfigFromEnv({ ...BASE, NODE_METRICS_TLS_CERT: ca.certs.node!.keyFile, NODE_METRICS_TLS_KEY: ca.certs.node!.keyFile })).toThrow(/not a PEM file of the expected kind/);
    expect(nodeConfigFromEnv(BASE).metrics).toEqual({ host: "127.0.0.1", port: 0, token: TOKEN, tls: null });
    // The token stays required wherever the listener binds.
    expect(() => nodeConfigFromEnv({ ...BASE, METRICS_TOKEN: "" })).toThrow(/METRICS_TOKEN/);
  });
});
