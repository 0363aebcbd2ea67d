// BENCH ONLY: a node agent stand-in that emits tokens without a model, so a bench can put a
// thousand streams through one router (or one edge isolate) without a thousand decoders'
// worth of CPU. It speaks the node protocol (protocol/messages.ts) to a router like
// gpu-node/agent.ts: hello with its stream slots, heartbeats, `loaded` at once for any load,
// and for each `generate` one token per decode step against the router's credit, then `done`.
// One timer for all its streams, as a batched decoder's step serves every stream in the batch.
//
// It is not part of the product: nothing in gpu-node/ or deploy/ starts it, and it refuses to
// run unless MESH_SYNTHETIC_NODE=bench and the router is on this machine (loopback), so it can
// never stand in for a node of a real region.
//
// Token text is a function of the seed and the index (syntheticText), so a bench checks every
// stream's text end to end.
//
// Run (by bench/stream-capacity.ts): MESH_SYNTHETIC_NODE=bench ROUTER_URL=ws://127.0.0.1:P/v1/nodes
//   NODE_TOKEN=... NODE_ID=synth-1 SYNTH_STEP_MS=20 SYNTH_STREAMS=4096 tsx bench/synthetic-node.ts

import WebSocket from "ws";
import { createCodec } from "../protocol/codec.js";
import { FrameBatcher } from "../protocol/frame-batch.js";
import { localWire, negotiate } from "../protocol/wire-version.js";
import { parseRouterMessage, unbatch, type NodeToRouter, type RouterToNode } from "../protocol/messages.js";

/** The text of token `i` of a stream with `seed`: what the bench expects to read back. */
export function syntheticText(seed: number, i: number): string {
  return `${((seed * 7919 + i * 104729) % 997).toString(36)} `;
}

interface Running {
  id: string;
  seed: number;
  max: number;
  sent: number;
  credit: number;
  started: number;
}

function main(): void {
  const env = process.env;
  if (env.MESH_SYNTHETIC_NODE !== "bench") throw new Error("bench/synthetic-node.ts emits made-up tokens; it runs only with MESH_SYNTHETIC_NODE=bench");
  const routerUrl = env.ROUTER_URL ?? "";
  if (!/^ws:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d+\//.test(routerUrl)) throw new Error("the synthetic node only talks to a router on this machine (ws://127.0.0.1:...)");
  const token = env.NODE_TOKEN ?? "";
  const nodeId = env.NODE_ID ?? `synth-${process.pid}`;
  const stepMs = Number(env.SYNTH_STEP_MS ?? "20");
  const slots = Number(env.SYNTH_STREAMS ?? "4096");
  const codec = createCodec();
  const running = new Map<string, Running>();
  const warm = new Map<string, number>();
  let tokens = 0;

  const ws = new WebSocket(routerUrl, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
  // A step's tokens leave as batches, as gpu-node/agent.ts sends a decode step's, once the
  // router's welcome announced `batch` (protocol/wire-version.ts).
  const out = new FrameBatcher<NodeToRouter>(codec.encode, (bytes) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(bytes, { binary: true });
  });
  const wire = localWire();
  const send = (m: NodeToRouter) => out.push(m);
  const warmList = () => [...warm].map(([key, lastUsed]) => ({ key, memoryMb: 1, lastUsed }));

  ws.on("open", () => {
    send({ t: "hello", nodeId, accelerator: { kind: "cpu", name: "synthetic", memoryMb: 65_536 }, executionProvider: "synthetic", memoryBudgetMb: 65_536, slots: 64, maxModels: 0, warm: [], streams: slots, wire });
  });
  const heartbeat = setInterval(() => {
    send({ t: "heartbeat", inflight: 0, queued: 0, utilisation: 0, warm: warmList(), gen: { active: running.size, tokens } });
  }, 1_000);

  // One decode step for every running stream with credit: a token each, or its end.
  const step = setInterval(() => {
    for (const g of running.values()) {
      if (g.sent >= g.max) {
        running.delete(g.id);
        send({ t: "done", id: g.id, reason: "length", tokens: g.sent, promptTokens: 1, genMs: performance.now() - g.started });
        continue;
      }
      if (g.credit <= 0) continue;
      g.credit--;
      tokens++;
      send({ t: "token", id: g.id, i: g.sent, text: syntheticText(g.seed, g.sent), tokenId: g.sent });
      g.sent++;
    }
  }, stepMs);

  ws.on("message", (data) => {
    for (const m of unbatch(codec.decode(data as Buffer), parseRouterMessage)) take(m);
  });
  const take = (m: RouterToNode) => {
    switch (m.t) {
      case "welcome": {
        const agreed = negotiate(wire, m.wire);
        if (!agreed.ok) throw new Error(agreed.message);
        out.batching = agreed.features.has("batch");
        return;
      }
      case "load":
        warm.set(m.key, Date.now());
        send({ t: "loaded", key: m.key, loadMs: 0, downloadMs: 0, cached: true, memoryMb: 1 });
        return;
      case "unload":
        warm.delete(m.key);
        return;
      case "generate":
        running.set(m.id, { id: m.id, seed: m.params.seed ?? 0, max: m.params.maxTokens, sent: 0, credit: m.credit, started: performance.now() });
        return;
      case "credit": {
        const g = running.get(m.id);
        if (g) g.credit += m.n;
        return;
      }
      case "cancel": {
        const g = running.get(m.id);
        if (g) {
          running.delete(m.id);
          send({ t: "done", id: m.id, reason: "cancelled", tokens: g.sent, promptTokens: 1, genMs: performance.now() - g.started });
        }
        return;
      }
      case "infer":
        send({ t: "error", id: m.id, code: "node_error", message: "the synthetic node runs no models" });
        return;
      default:
        return;
    }
  };
  const stop = () => {
    clearInterval(step);
    clearInterval(heartbeat);
    ws.terminate();
    process.exit(0);
  };
  ws.on("close", stop);
  ws.on("error", (e) => process.stderr.write(`[synthetic-node] ${e.message}\n`));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

if (process.argv[1]?.endsWith("synthetic-node.ts")) main();
