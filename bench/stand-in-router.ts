// A router stand-in for measurements that drive REAL node agents (gpu-node/main.ts) over the real
// node socket without a region around them: a WebSocket server on /v1/nodes that checks the
// node token and hands each node's hello to whoever waits for that node id, and a plain HTTP
// server that serves model artifacts as an edge's signed URL would. Frames are msgpack, as
// regions/node-link.ts sends them. Used by bench/node-call-cost.ts and
// scripts/device/webgpu-node.ts; both stop with the bench (Bench.defer).

import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import WebSocket, { WebSocketServer } from "ws";
import { createCodec, type Codec } from "../protocol/codec.js";
import { parseNodeMessage, type NodeToRouter } from "../protocol/messages.js";
import type { Bench } from "./harness.js";

export interface StandInRouter {
  /** ROUTER_URL for the agents. */
  url: string;
  codec: Codec;
  /** The socket and hello of node `nodeId` once it connects (call before starting the agent). */
  node(nodeId: string): Promise<{ socket: WebSocket; hello: Extract<NodeToRouter, { t: "hello" }> }>;
}

export async function standInRouter(b: Bench, token: string): Promise<StandInRouter> {
  const codec = createCodec();
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/v1/nodes", perMessageDeflate: false, maxPayload: 1 << 30 });
  await once(wss, "listening");
  // The agents' sockets go first: the server's close waits for every connection to end, and the
  // agents (stopped after the deferred steps) would keep theirs open until then.
  b.defer(() => {
    for (const c of wss.clients) c.terminate();
    return new Promise((r) => wss.close(r));
  });
  const waiting = new Map<string, (a: { socket: WebSocket; hello: Extract<NodeToRouter, { t: "hello" }> }) => void>();
  wss.on("connection", (socket, req) => {
    if (req.headers.authorization !== `Bearer ${token}`) return socket.close(4401);
    socket.once("message", (data) => {
      const hello = parseNodeMessage(codec.decode(data as Buffer));
      if (hello.t !== "hello") return socket.close();
      waiting.get(hello.nodeId)?.({ socket, hello });
    });
  });
  return {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}/v1/nodes`,
    codec,
    node: (nodeId) => new Promise((r) => waiting.set(nodeId, r)),
  };
}

/** Serves `files` (name -> bytes) over loopback HTTP; returns each name's URL. */
export async function serveArtifacts(b: Bench, files: Record<string, Uint8Array>): Promise<(name: string) => string> {
  const http = createServer((req, res) => {
    const bytes = files[decodeURIComponent((req.url ?? "/").slice(1))];
    if (!bytes) return void res.writeHead(404).end();
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": bytes.length });
    res.end(bytes);
  });
  http.listen(0, "127.0.0.1");
  await once(http, "listening");
  b.defer(() => new Promise((r) => http.close(r)));
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}/`;
  return (name) => base + encodeURIComponent(name);
}
