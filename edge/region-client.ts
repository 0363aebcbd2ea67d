// Picks the region for a call and forwards it there, signed and time-limited, as msgpack.
// The choice: the region with the lowest expected time for this caller and model (latency
// model), among those the model may use (data residency) whose report is fresh and healthy;
// a small exploration share tries the runner-up to keep its estimate honest. At most once: the
// call goes to the next best region (once, within the caller's deadline) only when the first
// answered that it refused the call before any node got it (notStarted). A lost connection is
// not proof of that (workerd reports a refused connection and a reset after the region read
// the call with the same error), so it ends the call with region_error and sets the region
// aside in this isolate for a few seconds. A silent region (a link that drops every packet, or
// one slower than the deadline) loses no connection, so calls are also watched while they are
// out: one outstanding far past its expected time makes its region suspect, ranked after the
// others for new calls until a call to it answers again (the overdue call is not re-sent), and
// one that times out keeps it suspect a moment longer. Each try is signed for its region alone:
// the region's secret signs the call (body hash, nonce) and the artifact URL inside it.

import { packTensor, unpackAnswer } from "../formats/binary-tensors.js";
import { createCodec, MSGPACK_CONTENT_TYPE } from "../protocol/codec.js";
import { MeshError } from "../protocol/errors.js";
import { parseRegionInferResponse, type BundleFile, type ModelRef, type RegionInferRequest, type RegionInferResponse } from "../protocol/messages.js";
import { signRequest } from "../protocol/signing.js";
import type { WireTensor } from "../formats/tensor.js";
import { bundleFileRefs, downloadUrl } from "./download-urls.js";
import { signingSecret, type EdgeConfig, type RegionConfig } from "./env.js";
import { edgeWireHeader } from "./stream-client.js";
import { WIRE_HEADER } from "../protocol/wire-version.js";
import type { CallerLocation } from "./geo.js";
import { estimate, type Estimate } from "./latency-model.js";
import { log } from "./log.js";
import { regionMessage } from "./node-errors.js";
import { measuredRtt, usableReport, type RegionState } from "./region-state.js";
import { probeSlowRegions } from "./rtt-probe.js";

const codec = createCodec();

export interface RankedRegion {
  region: RegionConfig;
  estimate: Estimate;
  /** False when no fresh report backs the estimate (routing on priors only). */
  reported: boolean;
}

/**
 * Regions in the order to try them. Regions with a usable report that say they are healthy
 * and have nodes come first, best estimate first; when none has such a report (no Redis, or
 * everything stale past the last-known bound), all allowed regions by prior estimate.
 */
export function rankRegions(
  config: EdgeConfig,
  state: RegionState,
  caller: CallerLocation,
  modelKey: string,
  allowed: string[] | null,
  random = Math.random,
  now = Date.now(),
  /** The keys of a kept cache the request may continue, best first (latency-model.ts estimate): regions that keep one gain the prefill it saves. */
  affinity?: readonly string[],
): RankedRegion[] {
  // A region whose connection was just lost is left out until its report can say more.
  const candidates = config.regions.filter((r) => (!allowed || allowed.includes(r.name)) && !((lostRegions.get(r.name) ?? 0) > now));
  const scored = candidates.map((region) => {
    const report = usableReport(state, region.name, now);
    return {
      region,
      estimate: estimate(caller, region, report, modelKey, measuredRtt(caller.colo, region.name), affinity),
      reported: !!report,
      usable: !!report && report.healthy && report.nodes.length > 0,
    };
  });
  // A suspect region (a call to it long overdue, or just timed out) goes after every other:
  // it is still tried when nothing else may take the call, so suspicion alone never refuses one.
  const suspect = new Set(candidates.filter((r) => isSuspect(r.name, now)).map((r) => r.name));
  const byTime = (a: { region: RegionConfig; estimate: Estimate }, b: { region: RegionConfig; estimate: Estimate }) =>
    Number(suspect.has(a.region.name)) - Number(suspect.has(b.region.name)) || a.estimate.totalMs - b.estimate.totalMs;
  const usable = scored.filter((s) => s.usable).sort(byTime);
  if (usable.length === 0) {
    // Reports flow (Redis answers and some region's report is fresh) but no allowed region has
    // one saying it can run the call: they are down (a stopped router deletes its report), and
    // a call sent blind to a closed port could only fail (a lost connection is not re-sent).
    if (state.redis === "ok" && config.regions.some((r) => usableReport(state, r.name, now))) return [];
    // Nothing fresh to go on (no Redis): every allowed region that has not said it is unhealthy, by prior.
    return scored.filter((s) => !s.reported).sort(byTime);
  }
  if (usable.length > 1 && !suspect.has(usable[1]!.region.name) && random() < config.explorationShare) [usable[0], usable[1]] = [usable[1]!, usable[0]!];
  return usable;
}

export interface ForwardResult {
  region: string;
  /** Outputs unpacked: typed arrays (views of the region's answer where aligned). */
  response: RegionInferResponse<WireTensor>;
  /** Round trip from the edge to the region and back, ms (simulated distance included). */
  roundTripMs: number;
  attempts: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** How long a region whose connection was lost is left out of this isolate's rankings. */
export const LOST_REGION_MS = 5_000;
/** Region name → until when it is left out (this isolate only; reports catch up after). */
const lostRegions = new Map<string, number>();

/**
 * A call outstanding this much longer than its expected time (the estimate's round trip,
 * queue and inference) is overdue, but never before OVERDUE_FLOOR_MS: jitter and a busy
 * machine stretch short calls by a few times without meaning the region went silent.
 */
export const OVERDUE_FACTOR = 3;
export const OVERDUE_FLOOR_MS = 500;
/** How long a region stays suspect after a call to it timed out (deadline_exceeded). */
export const TIMED_OUT_SUSPECT_MS = 2_000;

interface Watched {
  startedAt: number;
  overdueAt: number;
}
/** Per region: the calls now out (this isolate), when one last answered, when one last timed out, and until when that keeps it suspect. */
interface RegionWatch {
  outstanding: Set<Watched>;
  answeredAt: number;
  timedOutAt: number;
  suspectUntil: number;
}
const watches = new Map<string, RegionWatch>();

function watchOf(region: string): RegionWatch {
  let w = watches.get(region);
  if (!w) watches.set(region, (w = { outstanding: new Set(), answeredAt: 0, timedOutAt: 0, suspectUntil: 0 }));
  return w;
}

/** The moment a call expected to take `expectedMs` becomes overdue. */
export function overdueAt(startedAt: number, expectedMs: number): number {
  return startedAt + Math.max(OVERDUE_FLOOR_MS, OVERDUE_FACTOR * expectedMs);
}

/**
 * Suspect: a call sent after the region last answered is overdue, or a call to it timed out
 * moments ago. After a timeout and before the next answer, the region is probed one call at a
 * time: any call out to it keeps it suspect, so while a link stays dead each round costs one
 * call, not every call made in the first OVERDUE_FLOOR_MS of it. A call that answers clears it
 * all (the region answers again), so one stuck call on a dead pooled connection does not hold
 * back a region that answers on fresh ones.
 */
export function isSuspect(region: string, now = Date.now()): boolean {
  const w = watches.get(region);
  if (!w) return false;
  if (w.suspectUntil > now) return true;
  const probing = w.timedOutAt > w.answeredAt;
  for (const c of w.outstanding) if (c.startedAt >= w.answeredAt && (probing || c.overdueAt <= now)) return true;
  return false;
}

/** One call (or a stream waiting for its first frame) out to a region: say how it ended, once. */
export interface CallWatch {
  /** The region answered (any answer, failures included): it is not silent. */
  answered(): void;
  /** The call's deadline passed without an answer. */
  timedOut(): void;
  /** Ended otherwise (lost connection, cancelled): neither proof of life nor of silence. */
  ended(): void;
}

/** Starts watching a call to `region` expected to take `expectedMs`. */
export function watchCall(region: string, expectedMs: number, now = Date.now()): CallWatch {
  const w = watchOf(region);
  const c: Watched = { startedAt: now, overdueAt: overdueAt(now, expectedMs) };
  w.outstanding.add(c);
  let done = false;
  const end = (how: "answered" | "timedOut" | "ended") => {
    if (done) return;
    done = true;
    w.outstanding.delete(c);
    const at = Date.now();
    if (how === "answered") {
      w.answeredAt = at;
      w.suspectUntil = 0;
    } else if (how === "timedOut") {
      w.timedOutAt = at;
      w.suspectUntil = Math.max(w.suspectUntil, at + TIMED_OUT_SUSPECT_MS);
    }
  };
  return { answered: () => end("answered"), timedOut: () => end("timedOut"), ended: () => end("ended") };
}

/** Tests: forget the regions set aside and the calls watched. */
export function resetLostRegions(): void {
  lostRegions.clear();
  watches.clear();
}

/** A call before its region is chosen: the artifact URL is signed for the region that gets it. */
export type UnsignedInferRequest = Omit<RegionInferRequest, "model" | "inputs"> & {
  model: Omit<ModelRef, "artifactUrl" | "files"> & { files?: BundleFile[] };
  inputs: WireTensor[];
};

export async function forwardInfer(
  config: EdgeConfig,
  ranked: RankedRegion[],
  request: UnsignedInferRequest,
  colo: string,
  /** The edge's span (W3C traceparent), sent to the region with the call. */
  traceparent?: string,
): Promise<ForwardResult> {
  const path = "/v1/infer";
  let lastError = "no region is available for this model";
  let attempts = 0;
  // While this call is out, the regions that look slower than their distance are re-measured
  // (edge/rtt-probe.ts), so a link that recovered wins its traffic back without waiting for
  // exploration calls. Not awaited: the call never waits for a probe.
  if (ranked[0]) probeSlowRegions(config, ranked[0].region.name, ranked[0].estimate.totalMs, colo);
  // Two tries at most: the best region, then the next best, and the second only when the
  // first said it did not start the call.
  for (const { region, estimate: expected } of ranked.slice(0, 2)) {
    const remaining = request.deadline - Date.now();
    if (remaining <= 0) break;
    attempts++;
    // Local mode: the configured distance becomes real delay on this hop, half each way, so
    // everything downstream (measurements included) sees it exactly as it would a real one.
    const simulated = config.localMode ? (config.simulatedRtt[colo]?.[region.name] ?? 0) : 0;
    const artifactUrl = await downloadUrl(config, region.name, "artifact", request.model.sha256);
    const { files: bundle, ...model } = request.model;
    const files = bundle ? await bundleFileRefs(config, region.name, bundle) : undefined;
    // Inputs packed (their bytes, views of the typed arrays): the region forwards them unread.
    const body = codec.encode({ ...request, inputs: request.inputs.map(packTensor), model: { ...model, artifactUrl, ...(files ? { files } : {}) } } satisfies RegionInferRequest);
    const headers = await signRequest(signingSecret(config, region.name), "POST", path, body);
    const started = Date.now();
    // Watched while it is out: overdue, it turns new calls away from this region (it is not re-sent).
    const watch = watchCall(region.name, expected.totalMs, started);
    let res: Response;
    let bytes: Uint8Array;
    try {
      if (simulated > 0) await sleep(simulated / 2);
      res = await fetch(region.url + path, {
        method: "POST",
        body,
        headers: { ...headers, "content-type": MSGPACK_CONTENT_TYPE, "x-request-id": request.requestId, [WIRE_HEADER]: edgeWireHeader(config), ...(traceparent ? { traceparent } : {}) },
        signal: AbortSignal.timeout(Math.max(1, request.deadline - Date.now())),
      });
      bytes = new Uint8Array(await res.arrayBuffer());
      watch.answered();
    } catch (err) {
      const name = (err as Error).name;
      if (name === "TimeoutError" || name === "AbortError") {
        // Silent until the deadline: suspect a moment longer, so the next calls try elsewhere first.
        watch.timedOut();
        throw new MeshError("deadline_exceeded", `region ${region.name} did not answer within the deadline`);
      }
      // workerd reports a refused connection and one lost after the region read the call alike
      // ("Network connection lost."), so this is no proof that nothing ran: not re-sent. The
      // region is set aside in this isolate for a moment, so the next calls go elsewhere.
      watch.ended();
      lostRegions.set(region.name, Date.now() + LOST_REGION_MS);
      log("warn", request.requestId, "connection to region lost; not re-sent, it may have run the call", { region: region.name, error: String(err) });
      throw new MeshError("region_error", `the connection to region ${region.name} was lost before it answered; the call may have run there, so it was not sent elsewhere`);
    }
    if (simulated > 0) await sleep(simulated / 2);
    const roundTripMs = Date.now() - started;
    let response: RegionInferResponse<WireTensor>;
    try {
      response = unpackAnswer(parseRegionInferResponse(codec.decode(bytes)));
    } catch {
      log("error", request.requestId, "region answered garbage", { region: region.name, status: res.status });
      throw new MeshError("region_error", `region ${region.name} gave an invalid answer`);
    }
    // A repeated request id answered from the first call's result: this call ran nothing, so
    // it carries no compute to bill (the first call's usage row has it).
    if (res.headers.get("x-mesh-repeat") === "1") {
      response = response.ok ? { ...response, timing: { ...response.timing, computeMs: 0 } } : { ...response, ...(response.computeMs !== undefined ? { computeMs: 0 } : {}) };
    }
    // A region's message may carry node paths and runtime internals: scrubbed here, where it enters.
    if (!response.ok) response = { ...response, message: regionMessage(request.requestId, response.message, { region: region.name }) };
    // The region says it refused the call before any node got it (no node, saturated,
    // draining): the only answer after which the call goes to the next region.
    if (!response.ok && response.notStarted) {
      lastError = `region ${region.name}: ${response.message}`;
      continue;
    }
    return { region: region.name, response, roundTripMs, attempts };
  }
  throw new MeshError("no_region_available", `no region could take the call (${lastError})`, { "retry-after": "1" });
}
