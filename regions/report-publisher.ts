// Publishes the region's state to Redis every interval (through @upstash/redis, so the same
// code talks to Upstash in production and to the local stand-in here). The key expires, so a
// region that stops publishing vanishes from the edge's view by itself. Each request is bounded
// (routerRedis) and a tick is skipped while the last is still in flight (startPeriodic), so a
// Redis that stops answering costs one stuck request at a time, and publishing resumes by itself.
//
// Between ticks, `changed()` publishes soon after what the edges route by changed (a node joined
// or left, a model became warm or was unloaded: Scheduler.onReportChange): without it a restarted
// router's first report (no nodes yet) stood for up to an interval after its nodes rejoined, and
// calls for models allowed only in that region were refused meanwhile. Coalesced (startPeriodic's
// runSoon): a burst of joins costs one publish, at most one such publish per REPORT_COALESCE_MS,
// never two in flight.

import type { Logger } from "../protocol/log.js";
import { REGION_REPORT_TTL_S, regionReportKey, type RegionReport } from "../protocol/region-report.js";
import { routerRedis, startPeriodic, type RedisConfig } from "./redis-client.js";

/** At most one publish for changes per this many ms (besides the interval's). */
export const REPORT_COALESCE_MS = 100;

/** What the publisher needs of a Redis client (tests pass a fake). */
export interface ReportStore {
  set(key: string, value: RegionReport, opts: { ex: number }): Promise<unknown>;
  del(key: string): Promise<unknown>;
}

export function startReportPublisher(
  redis: RedisConfig | ReportStore,
  region: string,
  intervalMs: number,
  build: () => RegionReport,
  log: Logger,
): { stop(): Promise<void>; publishNow(): Promise<void>; changed(): void; readonly skipped: number } {
  const client: ReportStore = "set" in redis ? redis : routerRedis(redis);
  let failing = false;
  const publish = async () => {
    try {
      await client.set(regionReportKey(region), build(), { ex: REGION_REPORT_TTL_S });
      if (failing) log("info", "region report publishing again");
      failing = false;
    } catch (err) {
      if (!failing) log("warn", "region report not published", { error: String(err) });
      failing = true;
    }
  };
  const loop = startPeriodic(publish, intervalMs, REPORT_COALESCE_MS);
  return {
    publishNow: () => loop.runNow(),
    changed: () => loop.runSoon(),
    get skipped() {
      return loop.skipped;
    },
    async stop() {
      // A publish still in flight would land after the delete and leave a "healthy" report.
      await loop.stop();
      // Leave no stale "healthy" report behind a stopped router.
      await client.del(regionReportKey(region)).catch(() => undefined);
    },
  };
}
