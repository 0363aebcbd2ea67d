// Who may open a WebSocket on the router, decided from the upgrade request's headers before any
// socket exists: nodes on /v1/nodes with their bearer token (compared in constant time), the
// edge on /v1/streams with a signed GET (authority.ts). A refusal is the JSON envelope on a
// plain HTTP answer; a draining router takes no new sockets. Each path has its own frame bound:
// a node's frames carry tensors, the edge's a prompt at most. The edge's upgrade announces its
// wire versions and features (`x-mesh-wire`, protocol/wire-version.ts), checked once its
// signature has: no version in common is refused (426, wire_version_unsupported), and the 101
// answers with the router's own announcement, so each side knows whether the other takes batches.

import { timingSafeEqual } from "hono/utils/buffer";
import { STATUS_CODES, type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { WebSocketServer, type WebSocket } from "ws";
import { MeshError, errorBody } from "../protocol/errors.js";
import { formatWireHeader, localWire, negotiate, parseWireHeader, WIRE_HEADER, WireHeaderError, type Negotiation } from "../protocol/wire-version.js";
import type { Logger } from "../protocol/log.js";
import type { EdgeAuthority } from "./authority.js";
import type { RouterConfig } from "./config.js";
import { NODE_SOCKET_PATH } from "./node-sockets.js";
import { STREAM_FRAME_BYTES, STREAM_SOCKET_PATH, type StreamHub } from "./streams.js";

export interface UpgradeParts {
  config: Pick<RouterConfig, "nodeToken" | "maxFrameBytes" | "wireFeatures">;
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

const CODE_OF = { 401: "unauthorized", 404: "not_found", 503: "no_capacity" } as const;

function refuseUpgrade(socket: Duplex, refusal: 401 | 404 | 503 | MeshError, message = ""): void {
  const err = refusal instanceof MeshError ? refusal : new MeshError(CODE_OF[refusal], message);
  const body = JSON.stringify(errorBody(err.code, err.message, "-"));
  socket.end(`HTTP/1.1 ${err.status} ${STATUS_CODES[err.status] ?? "Refused"}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

export function socketUpgrades(parts: UpgradeParts): Upgrades {
  const { config, log, authority, hub, acceptNode, draining } = parts;
  const nodeWss = new WebSocketServer({ noServer: true, maxPayload: config.maxFrameBytes });
  // The edge's stream sockets: frames are small (a prompt at most), so the bound is tight.
  const streamWss = new WebSocketServer({ noServer: true, maxPayload: STREAM_FRAME_BYTES, perMessageDeflate: false });
  const wire = localWire(config.wireFeatures);
  const wireHeader = `${WIRE_HEADER}: ${formatWireHeader(wire)}`;
  // The 101 says what the router speaks (an edge from before versions ignores the header).
  streamWss.on("headers", (headers) => headers.push(wireHeader));

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
    let agreed: Negotiation;
    try {
      agreed = negotiate(wire, parseWireHeader(header(WIRE_HEADER)), { local: "region", peer: "edge" });
    } catch (err) {
      if (!(err instanceof WireHeaderError)) throw err;
      return refuseUpgrade(socket, new MeshError("bad_request", err.message));
    }
    if (!agreed.ok) {
      log("warn", "refused a stream socket that shares no wire version", { reason: agreed.message, remote: req.socket.remoteAddress });
      return refuseUpgrade(socket, new MeshError("wire_version_unsupported", agreed.message));
    }
    if (draining()) return refuseUpgrade(socket, 503, "region is draining");
    const agreement = agreed;
    streamWss.handleUpgrade(req, socket, head, (ws) => hub.accept(ws, agreement));
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
