// The node agent: keeps one WebSocket to its region's router (token at connect, msgpack frames),
// loads models when asked (download, verify, onnxruntime), runs calls and answers on the same
// socket. Reconnects with jittered exponential back-off, and stops for good after an auth
// refusal: retrying a wrong token only floods the router's logs. A router whose TLS certificate
// it does not trust (MESH_CA_FILE, public CAs) is logged as such and retried, token unsent.
//
// Models run in session child processes (gpu-node/onnx-runtime.ts), so this loop only moves
// frames: pongs, cancels and credits are answered during any run or load. Sessions are held
// by sha256; a model key maps to the sha256 it was loaded with, and a call naming another
// sha256 is refused. Every infer gets exactly one answer frame (result or error, a cancel's
// 'cancelled' included): the router frees the call's slot only on it. A call is stopped at its
// deadline or on cancel, its session child killed when it is running. A model's memory is
// measured after its load and bounded during it; answers over the frame limit fail alone.
// Wire versions (protocol/wire-version.ts): the hello says what the node speaks, the welcome
// what the router does; the node batches its tokens only to a router that announced `batch`,
// and leaves a router it shares no version with (close 4426), retrying with back-off as for
// any close (the router may be replaced by one that does, mid rolling upgrade).

import { rootCertificates } from "node:tls";
import WebSocket from "ws";
import { createCodec } from "../protocol/codec.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import { makeLogger } from "../protocol/log.js";
import { CLOSE, MAX_FRAME_BYTES, parseRouterMessage, unbatch, type DiskUsage, type NodeToRouter, type RouterToNode } from "../protocol/messages.js";
import { localWire, negotiate } from "../protocol/wire-version.js";
import { chooseProvider, memoryBudgetOf, type ProviderDecision } from "./accelerator.js";
import type { NodeConfig } from "./config.js";
import { Batcher, CancelledError, isBatchable, type RunResult } from "./batcher.js";
import { Generations, TokenizerFiles } from "./generation-relay.js";
import { formatBytes, ModelCache, versionKey, type HeldArtifact } from "./model-cache.js";
import { OnnxRuntime } from "./onnx-runtime.js";
import { MAX_HEARTBEAT_CONVERSATIONS } from "../protocol/messages.js";
import { publicMessage } from "../protocol/public-message.js";
import { runErrorCode } from "./run-errors.js";
import { SessionProcessError, type StopSignal } from "./session-process.js";
import { TensorError, type WireTensor } from "../formats/tensor.js";
import { packTensor, toWireTensor } from "../formats/binary-tensors.js";
import { formatTraceparent, spanFrom } from "../protocol/trace-context.js";
import { NodeMetrics } from "./metrics.js";

/**
 * What Node calls a certificate it does not accept (ws passes the TLS error through): the
 * router is not who the node was told to trust, so it says so plainly, and keeps retrying
 * (a router whose certificate is being fixed comes back without anyone restarting nodes).
 */
const CERT_ERRORS = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** A socket that stayed up this long resets the back-off. */
const STABLE_AFTER_MS = 10_000;
/** A refusal whose message is the node's own, safe to send as is. */
class LoadRefused extends Error {}

class DeadlineError extends Error {
  constructor() {
    super("deadline exceeded");
    this.name = "DeadlineError";
  }
}

const mib = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;


export interface AgentHandle {
  provider: ProviderDecision;
  /** Resolves once the router has welcomed this node (first connection). */
  connected: Promise<void>;
  /** Stops taking work, finishes in-flight calls, closes with 1001. */
  drain(): Promise<void>;
  /** Resolves when the agent has stopped for good (drained, or refused by the router). */
  done: Promise<{ reason: string }>;
  /** Its Prometheus metrics (gpu-node/metrics.ts serves them when configured). */
  metrics: NodeMetrics;
}

export function startAgent(config: NodeConfig): AgentHandle {
  const log = makeLogger("node", { node: config.nodeId });
  const provider = chooseProvider(config.executionProvider);
  log("info", "execution provider", { provider: provider.name, reason: provider.reason, accelerator: provider.accelerator });
  const runtime = new OnnxRuntime({
    executionProviders: provider.executionProviders,
    workersPerModel: config.workersPerModel,
    threadsPerWorker: config.threadsPerWorker,
    spinning: config.ortSpinning,
    loadTimeoutMs: config.loadTimeoutMs,
  });
  // A version whose session is loaded is never evicted from the disk cache (its children reload from the file).
  const cache = new ModelCache(config.cacheDir, { budgetBytes: config.modelCacheBytes, inUse: (sha) => runtime.has(sha) });
  cache.ready.then(
    (s) => log("info", "model cache", { dir: config.cacheDir, budget: formatBytes(s.budgetBytes), budgetBytes: s.budgetBytes, budgetFrom: s.budgetSource, used: formatBytes(s.usedBytes), versions: s.versions }),
    (err: Error) => log("error", "model cache unusable", { dir: config.cacheDir, error: err.message }),
  );
  const memoryBudgetMb = memoryBudgetOf(config.memoryBudgetMb, provider);
  const modelLimitMb = Math.min(memoryBudgetMb, config.modelMemoryLimitMb ?? memoryBudgetMb);
  /** The sha256 each model key was loaded with; sessions and batchers are held by sha256. */
  const keyToSha = new Map<string, string>();
  /** The graph's sha256 each key was loaded with: what calls name (for a bundle keyToSha holds its versionKey). */
  const keyGraph = new Map<string, string>();
  const keysOf = (sha: string) => [...keyToSha].filter(([, s]) => s === sha).map(([k]) => k);
  /** Models (by sha256) that have answered a call here: their graph runs (run-errors.ts). */
  const answered = new Set<string>();
  const warm = () =>
    [...keyToSha].filter(([, sha]) => runtime.has(sha)).map(([key, sha]) => ({ key, memoryMb: runtime.memoryMb(sha), lastUsed: runtime.lastUsed(sha) }));
  /** Drops a key; its session goes when no other key names the same bytes. */
  const dropKey = async (key: string) => {
    const sha = keyToSha.get(key);
    keyToSha.delete(key);
    keyGraph.delete(key);
    if (sha && keysOf(sha).length === 0) {
      batchers.delete(sha);
      answered.delete(sha);
      await runtime.unload(sha);
      // Loaded until now: the disk cache's LRU counts this as its last use.
      cache.touch(sha);
    }
  };
  runtime.onLost = (sha) => {
    keysOf(sha).forEach(() => metrics.unloaded("lost"));
    batchers.delete(sha);
    answered.delete(sha);
    for (const key of keysOf(sha)) {
      keyToSha.delete(key);
      keyGraph.delete(key);
    }
  };

  let ws: WebSocket | null = null;
  let attempt = 0;
  let stopped = false;
  let draining = false;
  let inflight = 0;
  // Calls started since the node started, in heartbeats: how tests count executions.
  let runs = 0;
  const batchers = new Map<string, Batcher>();
  // Utilisation: wall time with at least one model run going, per heartbeat interval.
  let running = 0;
  let busySince = 0;
  let busyMs = 0;
  let lastBeat = performance.now();
  const runStarted = () => {
    if (running++ === 0) busySince = performance.now();
  };
  const runEnded = () => {
    if (--running === 0) busyMs += performance.now() - busySince;
  };
  const utilisation = () => {
    const now = performance.now();
    const busy = busyMs + (running > 0 ? now - busySince : 0);
    const u = Math.min(1, busy / Math.max(1, now - lastBeat));
    busyMs = 0;
    if (running > 0) busySince = now;
    lastBeat = now;
    return u;
  };
  const queued = () => [...batchers.values()].reduce((n, b) => n + b.queued, 0);
  const metrics = new NodeMetrics(config.nodeId, {
    warm,
    inflight: () => inflight,
    queued,
    runs: () => runs,
    streamsActive: () => generations.active,
    tokens: () => generations.tokens,
  });
  const tokenizers = new TokenizerFiles(cache);
  const generations = new Generations({
    async generator(key, sha256) {
      const have = keyToSha.get(key);
      if (!have || keyGraph.get(key) !== sha256) return undefined;
      return runtime.generator(have);
    },
    tokenizers,
    simulatedTokenMs: config.simulatedTokenMs,
    onActive: (d) => (d > 0 ? runStarted() : runEnded()),
  });
  runtime.onGenTokens = (n) => generations.counted(n);
  let reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  let drainAcked: (() => void) | null = null;
  let resolveDone!: (r: { reason: string }) => void;
  const done = new Promise<{ reason: string }>((r) => (resolveDone = r));
  let resolveConnected!: () => void;
  const connected = new Promise<void>((r) => (resolveConnected = r));

  const stop = (reason: string) => {
    if (stopped) return;
    stopped = true;
    if (reconnectTimer) clearTimeout(reconnectTimer);
    void runtime.releaseAll().finally(() => resolveDone({ reason }));
  };

  const wire = localWire(config.wireFeatures);
  const takesBatch = wire.features.includes("batch");
  const connect = () => {
    if (stopped) return;
    const codec = createCodec(config.framing);
    const socket = new WebSocket(config.routerUrl, {
      headers: { authorization: `Bearer ${config.nodeToken}` },
      maxPayload: MAX_FRAME_BYTES,
      perMessageDeflate: false,
      // wss://: the public CAs plus MESH_CA_FILE's; the token is sent only once the router's
      // certificate (and its name) checked out.
      ...(config.ca ? { ca: [...rootCertificates, config.ca.pem] } : {}),
    });
    ws = socket;
    let openedAt = 0;
    // Tokens of one decode step (every stream in the batch) leave as one socket message;
    // anything else goes at once, behind them (a result's tensors are never re-encoded).
    const out = new FrameBatcher<NodeToRouter>(codec.encode, (bytes) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(bytes, { binary: config.framing === "msgpack" });
    });
    const send = (msg: NodeToRouter) => (msg.t === "token" || msg.t === "done" ? out.push(msg) : out.sendNow(msg));
    // The disk figures need a statfs: each heartbeat sends the last reading and starts the next.
    let disk: DiskUsage | undefined;
    let diskReading = false;
    const readDisk = () => {
      if (diskReading) return;
      diskReading = true;
      cache.ready
        .then(() => cache.diskUsage())
        .then((d) => (disk = d), () => undefined)
        .finally(() => (diskReading = false));
    };
    readDisk();
    const heartbeat = setInterval(() => {
      const m = process.memoryUsage();
      send({
        t: "heartbeat",
        inflight,
        queued: queued(),
        utilisation: utilisation(),
        warm: warm(),
        gen: { active: generations.active, tokens: generations.tokens },
        mem: { rssMb: mib(m.rss), heapUsedMb: mib(m.heapUsed) },
        runs,
        ...(disk ? { disk } : {}),
        affinity: runtime.conversations(MAX_HEARTBEAT_CONVERSATIONS),
      });
      readDisk();
    }, config.heartbeatMs);

    socket.on("unexpected-response", (_req, res) => {
      if (res.statusCode === 401 || res.statusCode === 403) {
        log("error", "router refused this node's token; not retrying", { status: res.statusCode });
        stop("unauthorized");
      } else {
        log("warn", "router refused the connection", { status: res.statusCode });
      }
      socket.terminate();
    });

    socket.on("open", () => {
      openedAt = Date.now();
      send({
        t: "hello",
        nodeId: config.nodeId,
        accelerator: provider.accelerator,
        executionProvider: provider.name,
        memoryBudgetMb,
        slots: config.slots,
        maxModels: config.maxModels,
        warm: warm(),
        streams: config.streamSlots,
        wire,
      });
    });

    socket.on("message", (data, isBinary) => {
      let msgs: RouterToNode[];
      try {
        if (isBinary !== (config.framing === "msgpack")) throw new Error("frame of the wrong kind");
        msgs = unbatch(codec.decode(data as Buffer), parseRouterMessage, takesBatch);
      } catch (err) {
        log("warn", "bad frame from router", { error: (err as Error).message });
        socket.close(CLOSE.protocolError, "bad frame");
        return;
      }
      for (const msg of msgs) {
        if (msg.t === "welcome") {
          // The router's announcement (none: a router from before versions, which takes no batch).
          const agreed = negotiate(wire, msg.wire, { local: "node", peer: "router" });
          if (!agreed.ok) {
            log("error", "the router shares no wire version with this node; leaving it (retrying with back-off)", { reason: agreed.message });
            socket.close(CLOSE.wireVersionUnsupported, agreed.message);
            return;
          }
          out.batching = agreed.features.has("batch");
          log("info", "wire agreed", { version: agreed.version, features: [...agreed.features] });
        }
        void handle(msg, send);
      }
    });

    socket.on("close", (code, reason) => {
      if (code === CLOSE.wireVersionUnsupported) log("error", "router refused this node's wire version (retrying with back-off)", { reason: reason.toString().slice(0, 123) });
      clearInterval(heartbeat);
      // Nobody is left to take their tokens: the router has failed those streams already.
      generations.cancelAll("router connection closed");
      if (ws === socket) ws = null;
      if (stopped || draining) return stop("closed");
      if (openedAt && Date.now() - openedAt > STABLE_AFTER_MS) attempt = 0;
      const base = Math.min(config.reconnectMaxMs, config.reconnectMinMs * 2 ** attempt);
      const delay = Math.round(base / 2 + Math.random() * (base / 2));
      attempt++;
      log("info", "disconnected; reconnecting", { code, inMs: delay });
      reconnectTimer = setTimeout(connect, delay);
    });
    socket.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code && CERT_ERRORS.has(err.code)) {
        log("error", "router's TLS certificate is not trusted; not connecting (retrying with back-off)", {
          url: config.routerUrl,
          code: err.code,
          error: err.message,
          trusted: config.ca ? `public CAs and ${config.ca.file}` : "public CAs only (MESH_CA_FILE names a private CA)",
        });
      } else if (err.code === "EPROTO" || err.code === "ECONNRESET") {
        log("warn", "router connection failed", { url: config.routerUrl, code: err.code, error: err.message });
      } else {
        log("debug", "socket error", { error: err.message });
      }
    });
  };

  const handle = async (msg: RouterToNode, send: (m: NodeToRouter) => void) => {
    switch (msg.t) {
      case "welcome":
        log("info", "connected to router", { region: msg.region });
        resolveConnected();
        return;
      case "drain_ack":
        drainAcked?.();
        return;
      case "load": {
        // Held from download to the end of the load, so the cache's eviction never takes it meanwhile.
        let held: HeldArtifact | undefined;
        try {
          const started = performance.now();
          // A generative model's tokenizer comes along (its own failure shows at generation).
          if (msg.tokenizer) void tokenizers.get(msg.tokenizer).catch((err: Error) => log("warn", "tokenizer prefetch failed", { key: msg.key, error: err.message }));
          // A bundle's data files land next to its graph, in a directory of its own (versionKey).
          const files = msg.files ?? [];
          const art = (held = await cache.acquire(
            msg.url,
            msg.sha256,
            msg.size,
            (bytes, total) => send({ t: "load_progress", key: msg.key, bytes, total }),
            "onnx",
            files,
          ));
          // From the disk cache there was no download to report: say the bytes are all here.
          const bytes = msg.size + files.reduce((n, f) => n + f.size, 0);
          if (art.cached) send({ t: "load_progress", key: msg.key, bytes, total: bytes });
          const loadStarted = performance.now();
          if (config.simulatedLoadMs > 0) await new Promise((r) => setTimeout(r, config.simulatedLoadMs));
          // Sessions are keyed like the cache's directories: the same graph with other weights is another session.
          const sha = versionKey(msg.sha256, files);
          const otherMb = runtime.usedMb(sha);
          const limitMb = Math.min(modelLimitMb, memoryBudgetMb - otherMb);
          if (!runtime.has(sha) && limitMb < 1) {
            throw new LoadRefused(`the node has no memory left for another model (${otherMb} of ${memoryBudgetMb} MiB in use)`);
          }
          const { memoryMb } = await runtime.load(sha, art.path, limitMb);
          if (memoryMb > limitMb) {
            if (keysOf(sha).length === 0) await runtime.unload(sha);
            throw new LoadRefused(`the model takes ${memoryMb} MiB, over the ${limitMb} MiB this node can give it`);
          }
          // A key loaded again with other bytes: the old bytes go unless another key holds them.
          if (keyToSha.has(msg.key) && keyToSha.get(msg.key) !== sha) await dropKey(msg.key);
          keyToSha.set(msg.key, sha);
          keyGraph.set(msg.key, msg.sha256);
          if (!batchers.has(sha)) {
            const run = async (inputs: WireTensor[], outputs: string[] | undefined, signal: StopSignal): Promise<RunResult> => {
              runStarted();
              try {
                return await runtime.run(sha, inputs, outputs, signal);
              } finally {
                runEnded();
              }
            };
            batchers.set(
              sha,
              new Batcher(run, {
                windowMs: config.batchWindowMs,
                maxBatch: isBatchable(msg.signature) ? config.batchMax : 1,
                maxRuns: config.workersPerModel,
              }),
            );
          }
          const loadMs = performance.now() - loadStarted;
          log("info", "model loaded", { key: msg.key, sha256: sha, memoryMb, cached: art.cached, downloadMs: Math.round(art.downloadMs), loadMs: Math.round(loadMs), totalMs: Math.round(performance.now() - started) });
          send({ t: "loaded", key: msg.key, loadMs, downloadMs: art.downloadMs, cached: art.cached, memoryMb });
          metrics.loaded(art.downloadMs, loadMs);
        } catch (err) {
          const raw = (err as Error).message;
          log("warn", "model load failed", { key: msg.key, sha256: msg.sha256, error: raw });
          metrics.loadFailed();
          send({ t: "load_failed", key: msg.key, message: err instanceof LoadRefused ? raw : publicMessage(raw) });
        } finally {
          held?.release();
        }
        return;
      }
      case "unload":
        if (keyToSha.has(msg.key)) metrics.unloaded("router");
        await dropKey(msg.key);
        log("info", "model unloaded", { key: msg.key });
        return;
      case "cancel":
        if (generations.cancel(msg.id)) return;
        for (const b of batchers.values()) if (b.cancel(msg.id)) return;
        return;
      case "credit":
        generations.credit(msg.id, msg.n);
        return;
      case "generate":
        if (draining || generations.active >= config.streamSlots) {
          send({ t: "error", id: msg.id, code: "node_error", message: "the node takes no more generations now" });
          return;
        }
        // The node's span for this generation, under the router's: in the logs with the request.
        log("debug", "generation started", { id: msg.id, requestId: msg.requestId, key: msg.key, traceparent: formatTraceparent(spanFrom(msg.traceparent)) });
        metrics.streamStarted();
        generations.start(msg, send);
        return;
      case "infer":
        return infer(msg, send);
    }
  };

  const infer = async (msg: Extract<RouterToNode, { t: "infer" }>, sendFrame: (m: NodeToRouter) => void) => {
    // The node's span, under the router's: logged with the call and echoed in its result.
    const traceparent = formatTraceparent(spanFrom(msg.traceparent));
    const send = (m: NodeToRouter) => {
      if (m.t === "error") metrics.failed(m.code);
      sendFrame(m);
    };
    const have = keyToSha.get(msg.key);
    const batcher = have ? batchers.get(have) : undefined;
    if (!have || !batcher) {
      send({ t: "error", id: msg.id, code: "node_error", message: `model ${msg.key} is not loaded on this node` });
      return;
    }
    if (keyGraph.get(msg.key) !== msg.sha256) {
      // Not the bytes the router vouches for under this key: never answer with them.
      log("warn", "call refused: sha256 differs from the loaded model", { id: msg.id, requestId: msg.requestId, traceparent, key: msg.key, expected: msg.sha256, loaded: have });
      send({ t: "error", id: msg.id, code: "node_error", message: `model ${msg.key} is loaded here with other bytes than the call names` });
      return;
    }
    if (msg.outputs && new Set(msg.outputs).size !== msg.outputs.length) {
      send({ t: "error", id: msg.id, code: "bad_request", message: "'outputs' names an output more than once" });
      return;
    }
    // Packed inputs (their sizes checked with the frame) become typed arrays here, views of the
    // frame where aligned: the first place past the edge that reads the values.
    let inputs: WireTensor[];
    try {
      inputs = msg.inputs.map(toWireTensor);
    } catch (err) {
      if (!(err instanceof TensorError)) throw err;
      send({ t: "error", id: msg.id, code: "invalid_tensor", message: err.message });
      return;
    }
    const remaining = msg.deadline - Date.now();
    if (remaining <= 0) {
      send({ t: "error", id: msg.id, code: "deadline_exceeded", message: "the call's deadline passed before it could run" });
      return;
    }
    inflight++;
    runs++;
    const started = performance.now();
    // At the deadline the call is settled as failed; a run it has alone is killed (batcher).
    const timer = setTimeout(() => batcher.cancel(msg.id, new DeadlineError()), remaining);
    try {
      const { outputs, computeMs } = await batcher.submit(msg.id, inputs, msg.outputs);
      answered.add(have);
      const inferMs = performance.now() - started;
      metrics.served(msg.key, inferMs, computeMs);
      log("debug", "call served", { id: msg.id, requestId: msg.requestId, traceparent, key: msg.key });
      // Packed: the router forwards the bytes to the edge without reading them.
      send({ t: "result", id: msg.id, outputs: outputs.map(packTensor), inferMs, computeMs, traceparent });
    } catch (err) {
      const computeMs = err instanceof SessionProcessError ? err.computeMs : 0;
      if (err instanceof DeadlineError) {
        send({ t: "error", id: msg.id, code: "deadline_exceeded", message: "the call ran past its deadline and was stopped", computeMs: performance.now() - started });
      } else if (err instanceof CancelledError) {
        send({ t: "error", id: msg.id, code: "cancelled", message: "cancelled", computeMs: performance.now() - started });
      } else if (err instanceof SessionProcessError && err.kind === "too_large") {
        // Checked in the session child (session-child.ts): a frame over the limit would cost the connection.
        send({ t: "error", id: msg.id, code: "payload_too_large", message: err.message, computeMs });
      } else if (err instanceof SessionProcessError && err.kind === "too_big") {
        log("warn", "call stopped: over the model's memory limit", { id: msg.id, requestId: msg.requestId, traceparent, key: msg.key, error: err.message });
        send({ t: "error", id: msg.id, code: "inference_failed", message: err.message, computeMs });
      } else if (err instanceof SessionProcessError && err.kind === "unavailable") {
        // Nothing ran: node_error lets the router place the call elsewhere.
        send({ t: "error", id: msg.id, code: "node_error", message: `model ${msg.key} is not loaded on this node` });
      } else if (err instanceof SessionProcessError && err.kind === "crashed") {
        // It ran, and its input may be what killed the session: not to be retried elsewhere.
        log("warn", "call failed: session process died", { id: msg.id, requestId: msg.requestId, traceparent, key: msg.key, error: err.message });
        send({ t: "error", id: msg.id, code: "inference_failed", message: "the model's session stopped during the call", computeMs });
      } else {
        const raw = (err as Error).message;
        // The caller's input (4xx, not retried) or the model's failure (500): run-errors.ts.
        const code = runErrorCode(raw, answered.has(have));
        log("info", "call failed in the runtime", { id: msg.id, requestId: msg.requestId, traceparent, key: msg.key, code, error: raw });
        send({ t: "error", id: msg.id, code, message: publicMessage(raw), computeMs });
      }
    } finally {
      clearTimeout(timer);
      inflight--;
    }
  };

  connect();

  return {
    provider,
    connected,
    done,
    metrics,
    async drain() {
      draining = true;
      if (reconnectTimer) clearTimeout(reconnectTimer);
      // Tell the router first, so no new call is sent while the in-flight ones finish, and wait
      // for its answer: calls it sent before reading ours are still arriving until then.
      if (ws && ws.readyState === WebSocket.OPEN) {
        const acked = new Promise<void>((resolve) => {
          drainAcked = resolve;
          setTimeout(resolve, 2_000).unref();
        });
        ws.send(createCodec(config.framing).encode({ t: "draining" }), { binary: config.framing === "msgpack" });
        await acked;
      }
      const until = Date.now() + config.drainTimeoutMs;
      while ((inflight > 0 || generations.active > 0) && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      // Frames queued this turn (a last token, its done) leave before the close.
      await new Promise((r) => setImmediate(r));
      const socket = ws;
      if (socket && socket.readyState === WebSocket.OPEN) {
        await new Promise<void>((resolve) => {
          socket.once("close", () => resolve());
          socket.close(CLOSE.goingAway, "node draining");
          setTimeout(resolve, 2_000).unref();
        });
      } else {
        socket?.terminate();
      }
      stop("drained");
      await done;
    },
  };
}
