// The link table both local modes read (local/link-table.ts): the nearest region per colo, and
// the SIMULATED_RTT the one-machine mode hands the edge (only regions that exist, every colo).

import { describe, expect, it } from "vitest";
import { LINK_TABLE, nearestRegion, simulatedRttVar } from "../local/link-table.js";

describe("link table", () => {
  it("names the nearest region of each colo, among the regions given", () => {
    expect(nearestRegion("ICN")).toBe("ap-seoul");
    expect(nearestRegion("SJC")).toBe("us-west");
    expect(nearestRegion("FRA")).toBe("us-west");
    expect(nearestRegion("ICN", ["us-west"])).toBe("us-west");
    expect(nearestRegion("XXX")).toBeNull();
  });

  it("gives the edge every colo's round trips to the configured regions only", () => {
    const v = JSON.parse(simulatedRttVar(["ap-seoul", "eu-central"]));
    expect(Object.keys(v).sort()).toEqual(Object.keys(LINK_TABLE).sort());
    expect(v.ICN).toEqual({ "ap-seoul": 8 });
  });

  it("every link is a real round trip with a jitter below half of it and a loss share", () => {
    for (const row of Object.values(LINK_TABLE)) {
      for (const l of Object.values(row)) {
        expect(l.rttMs).toBeGreaterThan(0);
        expect(l.jitterMs).toBeLessThan(l.rttMs / 2);
        expect(l.loss).toBeGreaterThanOrEqual(0);
        expect(l.loss).toBeLessThan(1);
      }
    }
  });
});
