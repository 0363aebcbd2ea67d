// Publishes the region's state to Redis every interval (through @upstash/redis, so the same
// code talks to Upstash in production and to the local stand-in here). The key expires, so a
// region that stops publishing vanishes from the edge's view by itself.

import { Redis } from "@upstash/redis";
import type { Logger } from "../protocol/log.js";
import { REGION_REPORT_TTL_S, regionReportKey, type RegionReport } from "../protocol/region-report.js";

export function startReportPublisher(
  redis: { url: string; token: string },
  region: string,
  intervalMs: number,
  build: () => RegionReport,
  log: Logger,
): { stop(): Promise<void>; publishNow(): Promise<void> } {
  const client = new Redis({ url: redis.url, token: redis.token, enableTelemetry: false, retry: { retries: 0 } });
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
  const timer = setInterval(() => void publish(), intervalMs);
  timer.unref();
  return {
    publishNow: publish,
    async stop() {
      clearInterval(timer);
      // Leave no stale "healthy" report behind a stopped router.
      await client.del(regionReportKey(region)).catch(() => undefined);
    },
  };
}
