// The one-machine mode keeps the configured geography: with the edge vars `npm start` sets (the
// link table as SIMULATED_RTT), a caller naming its colo (x-mesh-colo, as the docs' examples do)
// lands in the region the table puts nearest, and the round trip the edge measured includes the
// table's distance instead of ~1 ms of loopback (which used to let ICN land in us-west about
// as often as in ap-seoul).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LINK_TABLE, nearestRegion, simulatedRttVar } from "../local/link-table.js";
import { DEFAULT_REGIONS, startMesh, type MeshHandle } from "../local/mesh.js";
import type { RegionsView } from "../edge/regions-view.js";
import { call, mlpBody } from "./helpers/mesh-client.js";
import { waitUntil } from "./helpers/region-harness.js";

const REGIONS = DEFAULT_REGIONS.map((r) => r.name);
const CALLS = 30;

let mesh: MeshHandle;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "mesh-geo-"));
  // As npm start: the link table as SIMULATED_RTT, demo-mlp warm in both regions.
  mesh = await startMesh({ stateDir: dir, tinyGpt: false, demoChat: false, demoWarm: true, edgeVars: { SIMULATED_RTT: simulatedRttVar(REGIONS) } });
}, 180_000);

afterAll(async () => {
  await mesh?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("one-machine geography", () => {
  for (const colo of ["ICN", "SJC", "NRT", "LAX"]) {
    it(`x-mesh-colo: ${colo} answers from ${nearestRegion(colo, REGIONS)}`, async () => {
      const expected = nearestRegion(colo, REGIONS)!;
      const landed: Record<string, number> = {};
      for (let i = 0; i < CALLS; i++) {
        const a = await call(`${mesh.edge}/v2/models/demo-mlp/infer`, { key: mesh.apiKey, json: mlpBody([[1, 2, 3, 4]]), headers: { "x-mesh-colo": colo } });
        expect(a.status, JSON.stringify(a.body)).toBe(200);
        const r = a.headers.get("x-mesh-region")!;
        landed[r] = (landed[r] ?? 0) + 1;
      }
      // The edge explores the runner-up with 2% of calls; everything else goes to the nearest.
      expect(landed[expected] ?? 0, JSON.stringify(landed)).toBeGreaterThanOrEqual(CALLS - 3);
      // What the edge measured includes the table's distance (it was ~1 ms before).
      // The isolate shares its measurements through Redis in the background: polled, not read once.
      const rtt = await waitUntil(`${colo}'s round trip to ${expected} in /v1/regions`, 10_000, async () => {
        const view = (await call(`${mesh.edge}/v1/regions`, { key: mesh.apiKey })).body as RegionsView;
        return view.regions.find((r) => r.name === expected)?.rttMs[colo];
      }, 200);
      expect(rtt).toBeGreaterThanOrEqual(LINK_TABLE[colo]![expected]!.rttMs);
    });
  }
});
