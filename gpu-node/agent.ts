// The node agent: keeps one WebSocket to its region's router (token at connect, msgpack frames),
// loads models when asked (download, verify, onnxruntime), runs calls and answers on the same
// socket. Reconnects with jittered exponential back-off, and stops for good after an auth
// refusal: retrying a wrong token only floods the router's logs.

import WebSocket from "ws";
import { createCodec } from "../protocol/codec.js";
import { makeLogger } from "../protocol/log.js";
import { CLOSE, MAX_FRAME_BYTES, parseRouterMessage, type NodeToRouter, type RouterToNode } from "../protocol/messages.js";
import { chooseProvider, type ProviderDecision } from "./accelerator.js";
import type { NodeConfig } from "./config.js";
import { Batcher, CancelledError, isBatchable } from "./batcher.js";
import type { GenerateSession } from "./generate.js";
import { Generations, TokenizerCache } from "./generation.js";
import { ModelCache } from "./model-cache.js";
import { OnnxRuntime } from "./onnx-runtime.js";

/** A socket that stayed up this long resets the back-off. */
const STABLE_AFTER_MS = 10_000;

export interface AgentHandle {
  provider: ProviderDecision;
  /** Resolves once the router has welcomed this node (first connection). */
  connected: Promise<void>;
  /** Stops taking work, finishes in-flight calls, closes with 1001. */
  drain(): Promise<void>;
  /** Resolves when the agent has stopped for good (drained, or refused by the router). */
  done: Promise<{ reason: string }>;
}

export function startAgent(config: NodeConfig): AgentHandle {
  const log = makeLogger("node", { node: config.nodeId });
  const provider = chooseProvider(config.executionProvider);
  log("info", "execution provider", { provider: provider.name, reason: provider.reason, accelerator: provider.accelerator });
  const runtime = new OnnxRuntime(provider.executionProviders);
  const cache = new ModelCache(config.cacheDir);
  const memoryBudgetMb = config.memoryBudgetMb ?? provider.accelerator.memoryMb;

  let ws: WebSocket | null = null;
  let attempt = 0;
  let stopped = false;
  let draining = false;
  let inflight = 0;
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
  const tokenizers = new TokenizerCache(cache);
  const generations = new Generations({
    session(key): GenerateSession | undefined {
      const s = runtime.session(key);
      if (!s) return undefined;
      return {
        inputNames: s.inputNames,
        outputNames: s.outputNames,
        run: (async (feeds: Parameters<typeof s.run>[0], fetches: Parameters<typeof s.run>[1]) => {
          runStarted();
          try {
            return await s.run(feeds, fetches as never);
          } finally {
            runEnded();
          }
        }) as GenerateSession["run"],
      };
    },
    tokenizers,
    simulatedTokenMs: config.simulatedTokenMs,
  });
  const mb = (bytes: number) => Math.round((bytes / 2 ** 20) * 10) / 10;
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

  const connect = () => {
    if (stopped) return;
    const codec = createCodec(config.framing);
    const socket = new WebSocket(config.routerUrl, {
      headers: { authorization: `Bearer ${config.nodeToken}` },
      maxPayload: MAX_FRAME_BYTES,
      perMessageDeflate: false,
    });
    ws = socket;
    let openedAt = 0;
    const send = (msg: NodeToRouter) => {
      if (socket.readyState === WebSocket.OPEN) socket.send(codec.encode(msg), { binary: config.framing === "msgpack" });
    };
    const heartbeat = setInterval(() => {
      const m = process.memoryUsage();
      send({
        t: "heartbeat",
        inflight,
        queued: queued(),
        utilisation: utilisation(),
        warm: runtime.warm(),
        gen: { active: generations.active, tokens: generations.tokens },
        mem: { rssMb: mb(m.rss), heapUsedMb: mb(m.heapUsed) },
      });
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
        warm: runtime.warm(),
        streams: config.streamSlots,
      });
    });

    socket.on("message", (data, isBinary) => {
      let msg: RouterToNode;
      try {
        if (isBinary !== (config.framing === "msgpack")) throw new Error("frame of the wrong kind");
        msg = parseRouterMessage(codec.decode(data as Buffer));
      } catch (err) {
        log("warn", "bad frame from router", { error: (err as Error).message });
        socket.close(CLOSE.protocolError, "bad frame");
        return;
      }
      void handle(msg, send);
    });

    socket.on("close", (code) => {
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
    socket.on("error", (err) => log("debug", "socket error", { error: err.message }));
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
        try {
          const started = performance.now();
          // A generative model's tokenizer comes along (its own failure shows at generation).
          if (msg.tokenizer) void tokenizers.get(msg.tokenizer).catch((err: Error) => log("warn", "tokenizer prefetch failed", { key: msg.key, error: err.message }));
          const art = await cache.get(msg.url, msg.sha256, msg.size, (bytes, total) =>
            send({ t: "load_progress", key: msg.key, bytes, total }),
          );
          // From the disk cache there was no download to report: say the bytes are all here.
          if (art.cached) send({ t: "load_progress", key: msg.key, bytes: msg.size, total: msg.size });
          const loadStarted = performance.now();
          if (config.simulatedLoadMs > 0) await new Promise((r) => setTimeout(r, config.simulatedLoadMs));
          const { memoryMb } = await runtime.load(msg.key, art.path, msg.size);
          const key = msg.key;
          const run = async (inputs: Parameters<typeof runtime.run>[1], outputs?: string[]) => {
            runStarted();
            try {
              return await runtime.run(key, inputs, outputs);
            } finally {
              runEnded();
            }
          };
          batchers.set(
            key,
            new Batcher(run, { windowMs: config.batchWindowMs, maxBatch: isBatchable(msg.signature) ? config.batchMax : 1 }),
          );
          const loadMs = performance.now() - loadStarted;
          log("info", "model loaded", { key: msg.key, cached: art.cached, downloadMs: Math.round(art.downloadMs), loadMs: Math.round(loadMs), totalMs: Math.round(performance.now() - started) });
          send({ t: "loaded", key: msg.key, loadMs, downloadMs: art.downloadMs, cached: art.cached, memoryMb });
        } catch (err) {
          log("warn", "model load failed", { key: msg.key, error: (err as Error).message });
          send({ t: "load_failed", key: msg.key, message: (err as Error).message.slice(0, 500) });
        }
        return;
      }
      case "unload":
        batchers.delete(msg.key);
        await runtime.unload(msg.key);
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
        generations.start(msg, send);
        return;
      case "infer": {
        const batcher = batchers.get(msg.key);
        if (!batcher) {
          send({ t: "error", id: msg.id, code: "node_error", message: `model ${msg.key} is not loaded on this node` });
          return;
        }
        inflight++;
        const started = performance.now();
        try {
          const outputs = await batcher.submit(msg.id, msg.inputs, msg.outputs);
          send({ t: "result", id: msg.id, outputs, inferMs: performance.now() - started });
        } catch (err) {
          if (err instanceof CancelledError) send({ t: "error", id: msg.id, code: "cancelled", message: "cancelled" });
          // onnxruntime's messages name the bad input; they carry no host detail.
          else send({ t: "error", id: msg.id, code: "inference_failed", message: (err as Error).message.slice(0, 500) });
        } finally {
          inflight--;
        }
        return;
      }
    }
  };

  connect();

  return {
    provider,
    connected,
    done,
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
