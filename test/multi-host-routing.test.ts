// Routing on the multi-host topology (local/topology.ts): every colo and region on a network
// namespace of its own, joined by links with the link table's delay. A caller's colo is the
// host it calls from (the edge there); which region it lands in follows what the edge measured
// over the links, not a table: a link made slow at run time moves that colo's traffic away,
// and restoring it brings the traffic back. Every router's and node's /metrics, read from
// another host (the root namespace) as Prometheus would, holds the calls those hosts served.
//
// Needs root, iproute2 and /dev/net/tun (or netem): skipped with the reason otherwise.

import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { localAgent } from "../local/keep-alive.js";
import { nearestRegion } from "../local/link-table.js";
import { multiHostUnavailable, startHostsMesh, type HostsMesh } from "../local/topology.js";
import type { RegionsView } from "../edge/regions-view.js";
import { call, mlpBody } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";

const unavailable = multiHostUnavailable();
if (unavailable) console.warn(`[multi-host-routing] skipped: ${unavailable}`);
const suite = unavailable ? describe.skip : describe;

const REGIONS = ["us-west", "ap-seoul"];
const CALLS = 40;
const say = (line: string) => process.stdout.write(`[multi-host-routing] ${line}\n`);

let h: HostsMesh;
let dir: string;

/** Calls this file saw answered (the metrics test expects at least these). */
let served = 0;
const infer = async (colo: string) => {
  const a = await call(`${h.mesh.colos[colo]}/v2/models/demo-mlp/infer`, { key: h.mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]) });
  if (a.status === 200) served++;
  return a;
};
const rttSeen = async (colo: string, region: string) => {
  const view = (await call(`${h.mesh.colos[colo]}/v1/regions`, { key: h.mesh.apiKey })).body as RegionsView;
  return view.regions.find((r) => r.name === region)?.rttMs[colo];
};

suite("multi-host routing", () => {
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "mesh-hosts-"));
    // demoWarm: demo-mlp warm in both regions, so routing weighs the links and not a cold start.
    h = await startHostsMesh({ stateDir: dir, tinyGpt: false, demoChat: false, demoWarm: true, progress: (l) => process.env.MESH_TEST_VERBOSE && console.log(l) });
  }, 240_000);

  afterAll(async () => {
    await h?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("a caller in a colo's namespace reaches that colo's edge", () => {
    const ns = h.topology.colos.ICN!.ns;
    const port = new URL(h.mesh.edge).port;
    const out = execFileSync(
      "ip",
      ["netns", "exec", ns, "curl", "-s", "-D", "-", "-o", "/dev/null", "-H", `authorization: Bearer ${h.mesh.apiKey}`, "-H", "content-type: application/json", "-d", JSON.stringify(mlpBody([[1, 2, 3, 4]])), `http://127.0.0.1:${port}/v2/models/demo-mlp/infer`],
      { encoding: "utf8", timeout: 30_000 },
    );
    expect(out).toMatch(/^HTTP\/1\.1 200/);
    served++;
    expect(out.toLowerCase()).toMatch(/x-mesh-region: ap-seoul/);
  });

  for (const colo of ["ICN", "SJC"]) {
    it(`calls from ${colo} land in ${nearestRegion(colo, REGIONS)}, at the round trip measured over its link`, async () => {
      const expected = nearestRegion(colo, REGIONS)!;
      const landed: Record<string, number> = {};
      for (let i = 0; i < CALLS; i++) {
        const a = await infer(colo);
        expect(a.status, JSON.stringify(a.body)).toBe(200);
        const r = a.headers.get("x-mesh-region")!;
        landed[r] = (landed[r] ?? 0) + 1;
      }
      say(`${colo}: ${JSON.stringify(landed)}`);
      expect(landed[expected] ?? 0, JSON.stringify(landed)).toBeGreaterThanOrEqual(CALLS - 4);
      // The edge measured the link: at least its round trip (less its jitter), and far below
      // the other region's link.
      const link = h.topology.link(colo, expected);
      const other = h.topology.link(colo, REGIONS.find((r) => r !== expected)!);
      // The edge shares its measurements through Redis in the background: polled, not read once.
      const rtt = await waitUntil(`${colo}'s round trip to ${expected}`, 10_000, () => rttSeen(colo, expected), 200);
      say(`${colo} -> ${expected}: measured ${rtt} ms over a ${link.rttMs} ms link`);
      expect(rtt).toBeGreaterThanOrEqual(link.rttMs - 2 * link.jitterMs);
      expect(rtt).toBeLessThan(other.rttMs);
    });
  }

  it("/metrics on every router and node, scraped over TLS from another host, holds the calls those hosts served", async () => {
    const { token, targets } = h.mesh.metrics;
    const ca = h.mesh.caFile ? { dispatcher: localAgent({ ca: await readFile(h.mesh.caFile, "utf8") }) } : {};
    const sum = (text: string, name: string, labels = "") =>
      text
        .split("\n")
        .filter((l) => l.startsWith(name) && (l[name.length] === " " || l[name.length] === "{") && l.includes(labels))
        .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(" ") + 1)), 0);
    let routerCalls = 0;
    let nodeCalls = 0;
    for (const [name, url] of Object.entries(targets)) {
      let text: string;
      if (name.startsWith("router-")) {
        // Routers serve HTTPS on their host's address, with a certificate from the mesh's CA.
        expect(url.startsWith(h.mesh.caFile ? "https://" : "http://"), url).toBe(true);
        const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, ...ca } as RequestInit);
        expect(res.status, name).toBe(200);
        const refused = await fetch(url, ca as RequestInit);
        expect(refused.status, `${name} without the token`).toBe(401);
        text = await res.text();
        routerCalls += sum(text, "mesh_router_calls_total", 'kind="infer"');
        expect(sum(text, "mesh_router_http_connections_total"), name).toBeGreaterThan(0);
      } else {
        // A node serves /metrics on its region host's address, over HTTPS: read from this
        // (root) namespace, another host, as Prometheus would.
        const id = name.slice("node-".length);
        const region = REGIONS.find((r) => id.startsWith(r))!;
        expect(new URL(url).hostname, name).toBe(h.topology.regions[region]!.address);
        expect(url.startsWith(h.mesh.caFile ? "https://" : "http://"), url).toBe(true);
        const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, ...ca } as RequestInit);
        expect(res.status, name).toBe(200);
        const refused = await fetch(url, ca as RequestInit);
        expect(refused.status, `${name} without the token`).toBe(401);
        expect(((await refused.json()) as { code: string }).code).toBe("unauthorized");
        text = await res.text();
        nodeCalls += sum(text, "mesh_node_calls_total");
      }
    }
    say(`metrics: routers counted ${routerCalls} infer calls, nodes ${nodeCalls}`);
    // Every call this file saw answered so far (the launcher's warm-up calls come on top).
    expect(served).toBeGreaterThan(0);
    expect(routerCalls).toBeGreaterThanOrEqual(served);
    expect(nodeCalls).toBeGreaterThanOrEqual(served);
  });

  it("a link made slow moves its colo's traffic to the other region, and back when it recovers", async () => {
    const before = h.topology.link("ICN", "ap-seoul");
    try {
      // 600 ms: far worse than ICN's 130 ms link to us-west, even when a call to us-west pays a
      // new connection (two round trips: the edge's idle connections there close between the
      // rare exploration calls). Only packets can tell the edge.
      await h.topology.setLink("ICN", "ap-seoul", { rttMs: 600 });
      const t0 = Date.now();
      let inARow = 0;
      await waitUntil("ICN traffic to move to us-west", 120_000, async () => {
        const a = await infer("ICN");
        expect(a.status, JSON.stringify(a.body)).toBe(200);
        inARow = a.headers.get("x-mesh-region") === "us-west" ? inARow + 1 : 0;
        return inARow >= 5 ? true : undefined;
      }, 0);
      say(`slow ICN<->ap-seoul link: traffic moved in ${Date.now() - t0} ms`);
      expect((await rttSeen("ICN", "ap-seoul"))!).toBeGreaterThan(130);
    } finally {
      await h.topology.setLink("ICN", "ap-seoul", before);
    }
    // Back: the edge probes ap-seoul while it looks slower than its distance (edge/rtt-probe.ts), and
    // exploration calls (2%) re-measure it too; traffic returns.
    const t1 = Date.now();
    let inARow = 0;
    await waitUntil("ICN traffic to return to ap-seoul", 240_000, async () => {
      const a = await infer("ICN");
      inARow = a.headers.get("x-mesh-region") === "ap-seoul" ? inARow + 1 : 0;
      return inARow >= 5 ? true : undefined;
    }, 0);
    say(`ICN<->ap-seoul restored: traffic returned in ${Date.now() - t1} ms`);
  }, 420_000);
});
