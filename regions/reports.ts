// What the router says about itself, built from the scheduler's live state: the region report
// (published to Redis every second and soon after a node or model change, for the edges'
// routing, and served on GET /v1/status) and the stream stats (GET /v1/streams/stats: what
// streams cost where). Reads only; nothing here changes the scheduler.

import type { RegionReport } from "../protocol/region-report.js";
import { reportedWire } from "../protocol/wire-version.js";
import { regionConversations, usedMb } from "./placement.js";
import type { Scheduler } from "./scheduler.js";
import type { StreamHub } from "./streams.js";

/** The region report as of now; a draining router says it is unhealthy, so edges stop sending. */
export function regionReport(region: string, scheduler: Scheduler, draining: boolean): RegionReport {
  const nodes = [...scheduler.nodes.values()].filter((n) => n.open);
  const usable = nodes.filter((n) => n.available);
  const slots = usable.reduce((s, n) => s + n.slots, 0);
  return {
    region,
    updatedAt: Date.now(),
    healthy: !draining && usable.length > 0,
    nodes: nodes.map((n) => ({
      id: n.id,
      accelerator: n.accelerator.name,
      executionProvider: n.executionProvider,
      inflight: n.inflight,
      slots: n.slots,
      memoryBudgetMb: n.memoryBudgetMb,
      memoryUsedMb: usedMb(n),
      utilisation: Math.round(n.utilisation * 1000) / 1000,
      draining: n.draining,
      warm: [...n.warm.keys()],
      disk: n.disk,
      wire: reportedWire(n.wire),
    })),
    warm: [...new Set(usable.flatMap((n) => [...n.warm.keys()]))],
    inflight: scheduler.inflight,
    queued: scheduler.queued,
    capacity: {
      slots,
      freeSlots: Math.max(0, slots - usable.reduce((s, n) => s + n.inflight, 0)),
      memoryMb: usable.reduce((s, n) => s + n.memoryBudgetMb, 0),
      memoryUsedMb: usable.reduce((s, n) => s + usedMb(n), 0),
    },
    models: scheduler.knownModels().map((key) => {
      const st = scheduler.stats.get(key);
      const pct = st?.percentiles() ?? { queueMs: { p50: 0, p95: 0, p99: 0 }, inferMs: { p50: 0, p95: 0, p99: 0 } };
      return {
        key,
        replicas: usable.filter((n) => n.warm.has(key)).length,
        loading: usable.filter((n) => n.loading.has(key)).length,
        queued: scheduler.queueDepth(key),
        rate: Math.round((st?.rate ?? 0) * 100) / 100,
        trend: Math.round((st?.trend() ?? 0) * 100) / 100,
        ...pct,
      };
    }),
    served: scheduler.served,
    failed: scheduler.failed,
    loads: scheduler.loads,
    evictions: scheduler.evictions,
    coldStartMs: scheduler.coldStartMs === null ? null : Math.round(scheduler.coldStartMs),
    affinity: regionConversations(usable),
  };
}

const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;

/**
 * What streams cost where: the router's own memory and relay state, and each node's memory and
 * generation counters from its heartbeats (tests use it to see a stalled reader stop the
 * producer without memory growing anywhere).
 */
export function streamStats(region: string, scheduler: Scheduler, hub: StreamHub) {
  const m = process.memoryUsage();
  return {
    region,
    router: { rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed), streaming: scheduler.streaming, ...hub.stats() },
    nodes: [...scheduler.nodes.values()]
      .filter((n) => n.open)
      .map((n) => ({
        id: n.id,
        streams: n.streams,
        streamSlots: n.streamSlots,
        active: n.gen?.active ?? 0,
        tokens: n.gen?.tokens ?? 0,
        rssMb: n.mem?.rssMb ?? null,
        heapUsedMb: n.mem?.heapUsedMb ?? null,
        runs: n.runs,
        heartbeats: n.heartbeats,
      })),
  };
}
