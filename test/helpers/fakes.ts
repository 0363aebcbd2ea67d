// Plain-data fakes for unit tests of pure logic: a router's view of a node (placement) and a
// region's report (the edge's ranking); and the hello a hand-made node socket sends a real
// router. Each test overrides only the fields it is about.
import type { RegionReport } from "../../protocol/region-report.js";
import type { NodeState } from "../../regions/placement.js";

/** An idle node with 4 slots and 100 MB, nothing warm or loading. */
export function fakeNode(id: string, over: Partial<NodeState> = {}): NodeState {
  return { id, available: true, inflight: 0, slots: 4, memoryBudgetMb: 100, maxModels: 0, warm: new Map(), loading: new Map(), modelInflight: new Map(), ...over };
}

/** A node's hello frame (before encoding): one CPU slot, 1 GB, nothing warm, no wire announcement. */
export function nodeHello(nodeId: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    t: "hello",
    nodeId,
    accelerator: { kind: "cpu", name: "cpu", memoryMb: 1024 },
    executionProvider: "cpu",
    memoryBudgetMb: 1024,
    slots: 1,
    maxModels: 0,
    warm: [],
    ...over,
  };
}

/** A healthy, fresh, idle region report with one CPU node; `warm` models are warm on it. */
export function fakeReport(region: string, over: Partial<RegionReport> = {}, warm: string[] = []): RegionReport {
  return {
    region,
    updatedAt: Date.now(),
    healthy: true,
    nodes: [{ id: `${region}-1`, accelerator: "cpu", executionProvider: "cpu", inflight: 0, slots: 8, memoryBudgetMb: 1000, memoryUsedMb: 0, utilisation: 0, draining: false, warm }],
    warm,
    inflight: 0,
    queued: 0,
    capacity: { slots: 8, freeSlots: 8, memoryMb: 1000, memoryUsedMb: 0 },
    models: [],
    served: 0,
    failed: 0,
    loads: 0,
    evictions: 0,
    coldStartMs: null,
    ...over,
  };
}
