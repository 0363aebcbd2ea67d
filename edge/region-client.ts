// Picks the region for a call and forwards it there, signed and time-limited, as msgpack.
// The choice for now: a fresh, healthy region with nodes, preferring one that holds the model
// warm, then the least busy; without reports (no Redis yet, or all stale) the configured order.
// A region that cannot be reached is skipped and the call goes to the next one: nothing ran yet.

import { createCodec, MSGPACK_CONTENT_TYPE } from "../protocol/codec.js";
import { MeshError } from "../protocol/errors.js";
import {
  parseRegionInferResponse,
  type RegionInferRequest,
  type RegionInferResponse,
} from "../protocol/messages.js";
import { REGION_REPORT_STALE_MS, regionReportKey, type RegionReport } from "../protocol/region-report.js";
import { signRequest } from "../protocol/signing.js";
import type { EdgeConfig, RegionConfig } from "./env.js";
import { log } from "./log.js";
import { redisFor } from "./redis.js";

const codec = createCodec();
const REPORT_REFRESH_MS = 1_000;

let reports: Map<string, RegionReport> = new Map();
let reportsFetchedAt = 0;
let refreshing: Promise<void> | null = null;
async function refreshReports(config: EdgeConfig): Promise<void> {
  const client = redisFor(config);
  if (!client) return;
  try {
    const values = await client.mget<(RegionReport | null)[]>(...config.regions.map((r) => regionReportKey(r.name)));
    const next = new Map<string, RegionReport>();
    values.forEach((v, i) => {
      if (v && typeof v === "object") next.set(config.regions[i]!.name, v);
    });
    reports = next;
    reportsFetchedAt = Date.now();
  } catch (err) {
    // Keep routing on what we last knew; the stale check below bounds how long that lasts.
    log("warn", "-", "region reports unavailable", { error: String(err) });
    reportsFetchedAt = Date.now();
  }
}

/** Stale-while-revalidate: the hot path never waits on Redis once a first answer came back. */
export async function regionReports(config: EdgeConfig, waitUntil: (p: Promise<unknown>) => void): Promise<Map<string, RegionReport>> {
  const age = Date.now() - reportsFetchedAt;
  if (age > REPORT_REFRESH_MS && !refreshing) {
    refreshing = refreshReports(config).finally(() => {
      refreshing = null;
    });
    if (reportsFetchedAt === 0) await refreshing;
    else waitUntil(refreshing);
  }
  return reports;
}

export function rankRegions(config: EdgeConfig, reports: Map<string, RegionReport>, modelKey: string, now = Date.now()): RegionConfig[] {
  const scored = config.regions.map((region, order) => {
    const r = reports.get(region.name);
    const fresh = !!r && now - r.updatedAt < REGION_REPORT_STALE_MS;
    const usable = fresh && r.healthy && r.nodes.length > 0;
    const warm = usable && r.warm.includes(modelKey);
    // Lower is better: usable before unknown, warm before cold, then load, then config order.
    const score = (usable ? 0 : 1e9) + (warm ? 0 : 1e6) + (usable ? r.inflight / Math.max(1, r.nodes.length) : 0) * 10 + order;
    return { region, score, known: !!r && fresh };
  });
  // A region whose report is fresh but unusable (no nodes, unhealthy) goes last.
  return scored.sort((a, b) => a.score - b.score).map((s) => s.region);
}

export interface ForwardResult {
  region: string;
  response: RegionInferResponse;
  /** Round trip from the edge to the region and back, ms. */
  roundTripMs: number;
}

export async function forwardInfer(
  config: EdgeConfig,
  ranked: RegionConfig[],
  request: RegionInferRequest,
): Promise<ForwardResult> {
  const body = codec.encode(request);
  const path = "/v1/infer";
  let lastError = "no region configured";
  for (const region of ranked.slice(0, 2)) {
    const remaining = request.deadline - Date.now();
    if (remaining <= 0) break;
    const headers = await signRequest(config.meshSecret, "POST", path, body);
    const started = Date.now();
    let res: Response;
    try {
      res = await fetch(region.url + path, {
        method: "POST",
        body,
        headers: { ...headers, "content-type": MSGPACK_CONTENT_TYPE, "x-request-id": request.requestId },
        signal: AbortSignal.timeout(remaining),
      });
    } catch (err) {
      // Could not connect (or timed out before an answer): nothing is known to have run there.
      const name = (err as Error).name;
      if (name === "TimeoutError" || name === "AbortError") {
        throw new MeshError("deadline_exceeded", `region ${region.name} did not answer within the deadline`);
      }
      lastError = `region ${region.name} unreachable`;
      log("warn", request.requestId, "region unreachable", { region: region.name, error: String(err) });
      continue;
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    const roundTripMs = Date.now() - started;
    let response: RegionInferResponse;
    try {
      response = parseRegionInferResponse(codec.decode(bytes));
    } catch {
      log("error", request.requestId, "region answered garbage", { region: region.name, status: res.status });
      throw new MeshError("region_error", `region ${region.name} gave an invalid answer`);
    }
    // A region that had no capacity did not run the call: try the next one.
    if (!response.ok && (response.code === "no_capacity" || response.code === "no_region_available")) {
      lastError = `region ${region.name}: ${response.message}`;
      continue;
    }
    return { region: region.name, response, roundTripMs };
  }
  throw new MeshError("no_region_available", `no region could take the call (${lastError})`, { "retry-after": "1" });
}
