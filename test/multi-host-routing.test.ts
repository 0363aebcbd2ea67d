// Routing on the multi-host topology (local/topology.ts): every colo and region on a network
// namespace of its own, joined by links with the link table's delay. A caller's colo is the
// host it calls from (the edge there); which region it lands in follows what the edge measured
// over the links, not a table: a link made slow at run time moves that colo's traffic away,
// and restoring it brings the traffic back.
//
// Needs root, iproute2 and /dev/net/tun (or netem): skipped with the reason otherwise.

import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
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

const infer = (colo: string) => call(`${h.mesh.colos[colo]}/v2/models/demo-mlp/infer`, { key: h.mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]) });
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
      const rtt = (await rttSeen(colo, expected))!;
      say(`${colo} -> ${expected}: measured ${rtt} ms over a ${link.rttMs} ms link`);
      expect(rtt).toBeGreaterThanOrEqual(link.rttMs - 2 * link.jitterMs);
      expect(rtt).toBeLessThan(other.rttMs);
    });
  }

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
    // Back: exploration calls (2%) re-measure ap-seoul, and traffic returns.
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
