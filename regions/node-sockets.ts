// The life of one node's socket, once upgrades.ts has let it in: the node's first frame
// (`hello`, within HELLO_TIMEOUT_MS) sets the socket's framing and makes it a NodeLink in the
// scheduler (replacing an older socket of the same node); every later frame is size-bounded by
// the socket, decoded, validated and handed to the link. The hello's `wire` says which wire
// versions and features the node speaks (protocol/wire-version.ts): a node with no version in
// common is refused (close 4426, both ranges in the reason); otherwise the link batches frames
// to it only if it announced `batch`, and the welcome tells the node what the router speaks.
// Pings every `pingIntervalMs`: a node whose pong is late leaves rotation, one that stays
// silent another interval is terminated.
// Closing fails the link's pending calls at once (node-link.ts) and tells the scheduler.

import type { WebSocket } from "ws";
import { createCodec } from "../protocol/codec.js";
import type { Logger } from "../protocol/log.js";
import { CLOSE, parseNodeMessage, unbatch, type NodeToRouter } from "../protocol/messages.js";
import { localWire, negotiate } from "../protocol/wire-version.js";
import type { RouterConfig } from "./config.js";
import { NodeLink } from "./node-link.js";
import type { Scheduler } from "./scheduler.js";

export const NODE_SOCKET_PATH = "/v1/nodes";
const HELLO_TIMEOUT_MS = 5_000;

/** Makes an accepted node socket a node of `scheduler`'s, for as long as it stays open. */
export function nodeSocketAcceptor(config: Pick<RouterConfig, "region" | "pingIntervalMs" | "wireFeatures">, scheduler: Scheduler, log: Logger): (ws: WebSocket) => void {
  const wire = localWire(config.wireFeatures);
  // What the router announces it takes: a batch from a node is refused only when it did not.
  const takesBatch = wire.features.includes("batch");
  return function acceptNode(ws: WebSocket): void {
    // The node's first frame sets the framing for the socket: binary = msgpack, text = JSON.
    let framing: "msgpack" | "json" | null = null;
    let nodeCodec = createCodec();
    let link: NodeLink | null = null;
    let alive = true;
    const helloTimer = setTimeout(() => ws.close(CLOSE.protocolError, "hello expected"), HELLO_TIMEOUT_MS);

    ws.on("pong", () => {
      alive = true;
      if (link) link.unresponsive = false;
    });
    const pinger = setInterval(() => {
      if (!alive) {
        // No pong since the last ping: out of rotation now, and gone if it stays silent.
        if (link?.unresponsive) return ws.terminate();
        if (link) link.unresponsive = true;
      }
      alive = false;
      ws.ping();
    }, config.pingIntervalMs);

    ws.on("message", (data, isBinary) => {
      let msgs: NodeToRouter[];
      try {
        if (framing === null) {
          framing = isBinary ? "msgpack" : "json";
          nodeCodec = createCodec(framing);
        }
        if (isBinary !== (framing === "msgpack")) throw new Error("frame of the wrong kind for this socket");
        // A batch (a decode step's tokens) is checked whole, every frame, before any is applied.
        msgs = unbatch(nodeCodec.decode(data as Buffer), parseNodeMessage, takesBatch);
      } catch (err) {
        log("warn", "closing node socket after a bad frame", { node: link?.id, error: (err as Error).message });
        ws.close(CLOSE.protocolError, "bad frame");
        return;
      }
      for (const msg of msgs) {
        take(msg);
        if (!link) return; // the first frame was not a hello: the socket is closing
      }
    });

    function take(msg: NodeToRouter): void {
      if (!link) {
        if (msg.t !== "hello") {
          ws.close(CLOSE.protocolError, "hello expected");
          return;
        }
        clearTimeout(helloTimer);
        const agreed = negotiate(wire, msg.wire, { local: "router", peer: "node" });
        if (!agreed.ok) {
          log("warn", "refused a node that shares no wire version", { node: msg.nodeId, reason: agreed.message });
          ws.close(CLOSE.wireVersionUnsupported, agreed.message);
          return;
        }
        const previous = scheduler.nodes.get(msg.nodeId);
        if (previous?.open) previous.ws.close(CLOSE.normal, "replaced by a new connection");
        link = new NodeLink(
          msg.nodeId,
          ws,
          msg.accelerator,
          msg.executionProvider,
          msg.memoryBudgetMb,
          Math.max(1, Math.min(1024, Math.floor(msg.slots))),
          Math.max(0, Math.floor(msg.maxModels)),
          msg.warm,
          framing ?? "msgpack",
          () => scheduler.pumpAll(),
          agreed,
        );
        link.streamSlots = Math.max(0, Math.min(100_000, Math.floor(msg.streams ?? 0)));
        const nodeLink = link;
        link.onLoadProgress = (key, bytes, total) => scheduler.noteLoadProgress(key, bytes, total, nodeLink.id);
        scheduler.nodes.set(msg.nodeId, link);
        ws.send(nodeCodec.encode({ t: "welcome", region: config.region, wire }), { binary: framing === "msgpack" });
        scheduler.nodesChanged();
        log("info", "node connected", {
          node: msg.nodeId,
          accelerator: msg.accelerator,
          executionProvider: msg.executionProvider,
          warm: msg.warm.length,
          wire: { version: agreed.version, features: [...agreed.features], node: msg.wire ?? "none (before versions)" },
        });
        return;
      }
      link.handle(msg);
    }

    ws.on("close", (code, reason) => {
      clearTimeout(helloTimer);
      clearInterval(pinger);
      if (link) {
        const pending = link.closed(`closed ${code}`);
        if (scheduler.nodes.get(link.id) === link) scheduler.nodes.delete(link.id);
        scheduler.nodesChanged();
        // pending > 0: calls the node never answered (retried elsewhere or failed with 503).
        log(pending > 0 ? "warn" : "info", "node disconnected", { node: link.id, code, pending, reason: reason.toString().slice(0, 100) });
      }
    });
    ws.on("error", (err) => log("warn", "node socket error", { node: link?.id, error: err.message }));
  };
}
