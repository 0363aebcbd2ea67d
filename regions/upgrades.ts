// Who may open a WebSocket on the router, decided from the upgrade request's headers before any
// socket exists: nodes on /v1/nodes with their bearer token (compared in constant time), the
// edge on /v1/streams with a signed GET (authority.ts). A refusal is the JSON envelope on a
// plain HTTP answer; a draining router takes no new sockets. Each path has its own frame bound:
// a node's frames carry tensors, the edge's a prompt at most.

import { timingSafeEqual } from "hono/utils/buffer";
import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { MeshError, errorBody } from "../protocol/errors.js";
import type { Logger } from "../protocol/log.js";
import type { EdgeAuthority } from "./authority.js";
import type { RouterConfig } from "./config.js";
import { NODE_SOCKET_PATH } from "./node-sockets.js";
import { STREAM_FRAME_BYTES, STREAM_SOCKET_PATH, type StreamHub } from "./streams.js";

export interface UpgradeParts {
  config: Pick<RouterConfig, "nodeToken" | "maxFrameBytes">;
  log: Logger;
  authority: EdgeAuthority;
  hub: StreamHub;
  /** Where an admitted node socket goes (node-sockets.ts). */
  acceptNode: (ws: WebSocket) => void;
  draining: () => boolean;
}

export interface Upgrades {
  /** The HTTP server's `upgrade` listener. */
  onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Stops taking sockets (those open stay; the router closes them itself). */
  close(): void;
}

function refuseUpgrade(socket: Duplex, status: 401 | 404 | 503, message: string): void {
  const code = status === 401 ? "unauthorized" : status === 503 ? "no_capacity" : "not_found";
  const text = status === 401 ? "Unauthorized" : status === 503 ? "Service Unavailable" : "Not Found";
  const body = JSON.stringify(errorBody(code, message, "-"));
  socket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

export function socketUpgrades(parts: UpgradeParts): Upgrades {
  const { config, log, authority, hub, acceptNode, draining } = parts;
  const nodeWss = new WebSocketServer({ noServer: true, maxPayload: config.maxFrameBytes });
  // The edge's stream sockets: frames are small (a prompt at most), so the bound is tight.
  const streamWss = new WebSocketServer({ noServer: true, maxPayload: STREAM_FRAME_BYTES, perMessageDeflate: false });

  const onStreamUpgrade = async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const header = (name: string) => {
      const v = req.headers[name];
      return Array.isArray(v) ? v[0] : v;
    };
    try {
      authority.refuseBody({ headers: { get: (name) => header(name) ?? null } });
      await authority.verify("GET", STREAM_SOCKET_PATH, header);
    } catch (err) {
      if (!(err instanceof MeshError)) throw err;
      log("warn", "refused unsigned stream socket", { reason: err.message, remote: req.socket.remoteAddress });
      return refuseUpgrade(socket, 401, err.message);
    }
    if (draining()) return refuseUpgrade(socket, 503, "region is draining");
    streamWss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws));
  };

  const onNodeUpgrade = async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const auth = req.headers.authorization ?? "";
    const token = /^Bearer\s+(\S+)$/i.exec(auth)?.[1] ?? "";
    if (!token || !(await timingSafeEqual(token, config.nodeToken))) {
      log("warn", "refused node without a valid token", { remote: req.socket.remoteAddress });
      return refuseUpgrade(socket, 401, "a valid node token is required");
    }
    if (draining()) return refuseUpgrade(socket, 404, "router is draining");
    nodeWss.handleUpgrade(req, socket, head, (ws) => acceptNode(ws));
  };

  const admitters = new Map([
    [STREAM_SOCKET_PATH, { kind: "stream", admit: onStreamUpgrade }],
    [NODE_SOCKET_PATH, { kind: "node", admit: onNodeUpgrade }],
  ]);

  return {
    onUpgrade(req, socket, head) {
      const path = (req.url ?? "").split("?")[0] ?? "";
      const admitter = admitters.get(path);
      if (!admitter) return refuseUpgrade(socket, 404, "no such socket");
      void admitter.admit(req, socket, head).catch((err: unknown) => {
        log("error", `${admitter.kind} socket upgrade failed`, { error: String(err) });
        socket.destroy();
      });
    },
    close() {
      nodeWss.close();
      streamWss.close();
    },
  };
}
