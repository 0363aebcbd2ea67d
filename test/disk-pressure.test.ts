// Disk pressure: a node reports its model cache's budget, use and pinned bytes and the disk's free
// space in its heartbeat; the region report carries them; placement passes over a node whose disk
// cannot take a model's files; a model larger than every node's cache fails at once, clearly.
// Pure parts (diskRoom, planLoad) with plain objects, then a real router with two real nodes,
// one with a small MODEL_CACHE_BYTES.

import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ModelCache } from "../gpu-node/model-cache.js";
import { parseNodeMessage } from "../protocol/messages.js";
import { diskRoom, planLoad } from "../regions/placement.js";
import { fp32, RegionHarness, rowsOf, waitUntil } from "./helpers/region-harness.js";
import { weightModel } from "./helpers/weight-models.js";
import { fakeNode } from "./helpers/fakes.js";

const MiB = 1024 * 1024;

const node = fakeNode;

describe("diskRoom and planLoad", () => {
  it("room is what the budget leaves beside pinned versions, and no more than free space plus what eviction frees", () => {
    expect(diskRoom({ cacheBudgetBytes: 10 * MiB, cacheUsedBytes: 4 * MiB, cachePinnedBytes: 1 * MiB, freeBytes: 100 * MiB })).toBe(9 * MiB);
    // A nearly full filesystem: free space plus the 3 MiB eviction can free.
    expect(diskRoom({ cacheBudgetBytes: 10 * MiB, cacheUsedBytes: 4 * MiB, cachePinnedBytes: 1 * MiB, freeBytes: 2 * MiB })).toBe(5 * MiB);
    expect(diskRoom({ cacheBudgetBytes: 1 * MiB, cacheUsedBytes: 2 * MiB, cachePinnedBytes: 2 * MiB, freeBytes: 0 })).toBe(0);
  });

  it("a load goes past a node without disk room, even one placement would otherwise prefer; unknown room is not checked", () => {
    const roomy = node("roomy", { memoryBudgetMb: 20, diskRoomBytes: 50 * MiB });
    const cramped = node("cramped", { memoryBudgetMb: 10_000, diskRoomBytes: 1 * MiB });
    expect(planLoad([cramped, roomy], "m", 1, () => 0)?.node.id).toBe("cramped");
    expect(planLoad([cramped, roomy], "m", 1, () => 0, undefined, undefined, Infinity, 2 * MiB)?.node.id).toBe("roomy");
    expect(planLoad([cramped], "m", 1, () => 0, undefined, undefined, Infinity, 2 * MiB)).toBeUndefined();
    expect(planLoad([node("old", {})], "m", 1, () => 0, undefined, undefined, Infinity, 2 * MiB)?.node.id).toBe("old");
  });
});

describe("the heartbeat's disk figures on the wire", () => {
  const beat = { t: "heartbeat", inflight: 0, queued: 0, utilisation: 0, warm: [] };
  it("are kept when whole numbers of bytes, absent from older nodes, and refused otherwise", () => {
    const disk = { cacheBudgetBytes: 10, cacheUsedBytes: 4, cachePinnedBytes: 1, freeBytes: 2 ** 40 };
    expect(parseNodeMessage({ ...beat, disk })).toMatchObject({ disk });
    expect(parseNodeMessage(beat)).not.toHaveProperty("disk");
    expect(() => parseNodeMessage({ ...beat, disk: { ...disk, freeBytes: -1 } })).toThrow();
    expect(() => parseNodeMessage({ ...beat, disk: { ...disk, cacheUsedBytes: "4" } })).toThrow();
  });
});

describe("ModelCache.diskUsage", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "disk-usage-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("reports the budget, the bytes on disk, those in use, and the filesystem's free space", async () => {
    const sha = "ab".repeat(32);
    const cd = "cd".repeat(32);
    for (const s of [sha, cd]) {
      await rm(join(dir, s), { recursive: true, force: true });
      await mkdir(join(dir, s), { recursive: true });
      await writeFile(join(dir, s, "model.onnx"), Buffer.alloc(1000));
    }
    const cache = new ModelCache(dir, { budgetBytes: 5000, inUse: (s) => s === sha });
    await cache.ready;
    const d = await cache.diskUsage();
    expect(d).toMatchObject({ cacheBudgetBytes: 5000, cacheUsedBytes: 2000, cachePinnedBytes: 1000 });
    expect(d.freeBytes).toBeGreaterThan(0);
  });
});

describe("a region with a node whose disk cache is small", () => {
  let h: RegionHarness;
  beforeAll(async () => {
    h = await RegionHarness.create("disk-region");
    await h.startRouter();
    // Memory would send loads to "small" (more room); only its 1 MiB disk cache keeps them off it.
    await h.startNode("small", { MODEL_CACHE_BYTES: "1MiB", MEMORY_BUDGET_MB: "8192" });
    await h.startNode("large", { MODEL_CACHE_BYTES: "16MiB", MEMORY_BUDGET_MB: "256" });
  }, 120_000);
  afterAll(async () => {
    await h?.close();
  });

  it("the region report carries each node's cache budget, use and free disk", async () => {
    const nodes = await waitUntil("disk figures in the report", 15_000, async () => {
      const s = await h.status();
      return s.nodes.length === 2 && s.nodes.every((n) => n.disk) ? s.nodes : undefined;
    });
    const byId = Object.fromEntries(nodes.map((n) => [n.id, n.disk!]));
    expect(byId.small!.cacheBudgetBytes).toBe(MiB);
    expect(byId.large!.cacheBudgetBytes).toBe(16 * MiB);
    for (const d of Object.values(byId)) {
      expect(d.freeBytes).toBeGreaterThan(0);
      expect(d.cachePinnedBytes).toBeLessThanOrEqual(d.cacheUsedBytes);
    }
  });

  it("a model that does not fit the small node's disk is loaded on the other, and used bytes show it", async () => {
    // About 2 MB: more than "small" can hold on disk.
    const ref = await h.addModel("two-mib", 1, weightModel(520_000, 7));
    const r = await h.infer(ref, [fp32("x", [[1]])], { deadlineMs: 60_000 });
    expect(r.response.ok, JSON.stringify(r.response)).toBe(true);
    if (r.response.ok) expect(rowsOf(r.response.outputs[0]!)).toEqual([[8]]);
    const s = await h.status();
    expect(s.nodes.find((n) => n.id === "large")!.warm.length).toBe(1);
    expect(s.nodes.find((n) => n.id === "small")!.warm.length).toBe(0);
    await waitUntil("the large node's cache counts the model", 15_000, async () => {
      const d = (await h.status()).nodes.find((n) => n.id === "large")!.disk!;
      return d.cacheUsedBytes >= 2_000_000 && d.cachePinnedBytes >= 2_000_000 ? true : undefined;
    });
  });

  it("a model larger than every node's cache fails at once with why, not at its deadline", async () => {
    const ref = await h.addModel("too-big", 1, weightModel(4_500_000, 1)); // about 17 MiB
    const r = await h.infer(ref, [fp32("x", [[1]])], { deadlineMs: 120_000 });
    expect(r.response.ok).toBe(false);
    if (!r.response.ok) {
      expect(r.response.code).toBe("inference_failed");
      expect(r.response.message).toMatch(/more than the model cache of any node in this region \(MODEL_CACHE_BYTES, 16\.0 MiB at most\)/);
    }
  });
});
