// The region router, composed: one port (HTTPS and WSS with a certificate) serving the HTTP
// routes (http-app.ts) and the socket upgrades (upgrades.ts) of nodes (node-sockets.ts) and
// the edge's streams (streams.ts), around one scheduler; the report publisher and policy
// reader when Redis is configured; and the drain that stops it all in order.

import { serve } from "@hono/node-server";
import { createServer as createHttpsServer } from "node:https";
import type { Server as HttpServer } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { makeLogger } from "../protocol/log.js";
import { CLOSE } from "../protocol/messages.js";
import type { RegionReport } from "../protocol/region-report.js";
import { EdgeAuthority } from "./authority.js";
import type { RouterConfig } from "./config.js";
import { createHttpApp } from "./http-app.js";
import { RouterMetrics } from "./metrics.js";
import { NODE_SOCKET_PATH, nodeSocketAcceptor } from "./node-sockets.js";
import { startPolicyReader } from "./policy-reader.js";
import { startReportPublisher } from "./report-publisher.js";
import { regionReport } from "./reports.js";
import { Scheduler, SCHEDULER_DEFAULTS } from "./scheduler.js";
import { STREAM_SOCKET_PATH, StreamHub } from "./streams.js";
import { socketUpgrades } from "./upgrades.js";
import { useNodeCrypto } from "../runtime/node-crypto.js";

/** How long a draining router keeps answering "draining" before it closes its port. */
const DRAIN_NOTICE_MS = 2_500;

export interface RouterHandle {
  url: string;
  port: number;
  scheduler: Scheduler;
  report(): RegionReport;
  /** Stops taking calls, lets in-flight ones finish (bounded), closes nodes with 1012. */
  close(): Promise<void>;
}

export async function startRouter(config: RouterConfig): Promise<RouterHandle> {
  const log = makeLogger("router", { region: config.region });
  // Grants and bodies are checked with node:crypto, not WebCrypto's thread-pool jobs.
  useNodeCrypto();
  const scheduler = new Scheduler(
    {
      maxInflight: config.maxInflight,
      maxQueuePerModel: config.maxQueuePerModel,
      maxQueuedBytes: config.maxQueuedBytes,
      warm: { ...SCHEDULER_DEFAULTS.warm, idleTtlMs: config.idleTtlMs },
      fairShare: config.fairShare,
      accountWeights: config.accountWeights,
    },
    (level, msg, extra) => log(level, msg, extra),
  );
  scheduler.start(config.warmIntervalMs);
  let draining = false;
  const isDraining = () => draining;
  const authority = new EdgeAuthority(config.meshSecretPrevious ? [config.meshSecret, config.meshSecretPrevious] : [config.meshSecret]);
  const hub = new StreamHub(
    scheduler,
    {
      stallTimeoutMs: config.streamStallTimeoutMs,
      stallWhenContendedMs: config.streamStallWhenContendedMs,
      maxStreamsPerSocket: config.maxStreamsPerSocket,
      maxBufferedBytes: 16 * 2 ** 20,
      pingIntervalMs: config.pingIntervalMs,
      wireFeatures: config.wireFeatures,
    },
    (level, msg, extra) => log(level, msg, extra),
    (frame) => authority.generate(frame, STREAM_SOCKET_PATH),
  );
  const metrics = new RouterMetrics(config.region, scheduler, hub);
  hub.metrics = metrics;
  const report = (): RegionReport => regionReport(config.region, scheduler, draining);

  const app = createHttpApp({ config, log, scheduler, hub, metrics, authority, report, draining: isDraining });
  const upgrades = socketUpgrades({ config, log, authority, hub, acceptNode: nodeSocketAcceptor(config, scheduler, log), draining: isDraining });

  // With a certificate the one port serves HTTPS and, through the same upgrade handler, WSS
  // (node sockets, the edge's stream sockets, /metrics alike): nothing is left in clear.
  const server = config.tls
    ? serve({ fetch: app.fetch, port: config.port, hostname: config.host, createServer: createHttpsServer, serverOptions: { cert: config.tls.cert, key: config.tls.key } })
    : serve({ fetch: app.fetch, port: config.port, hostname: config.host });
  // Idle connections stay open for the edge's next call (config.ts says why not Node's 5 s).
  // Upgraded sockets (nodes, stream sockets) leave the server's timers and keep their pings.
  (server as HttpServer).keepAliveTimeout = config.keepAliveTimeoutMs;
  server.on("connection", (socket: Socket) => metrics.connectionAccepted(socket));
  server.on("upgrade", upgrades.onUpgrade);
  // A client that does not trust this certificate aborts the handshake (alert: unknown CA, bad
  // certificate): counted and logged here, since that client never gets far enough to say so.
  server.on("tlsClientError", (err: NodeJS.ErrnoException, socket: { remoteAddress?: string }) => {
    metrics.tlsHandshakeFailed();
    log("warn", "TLS handshake failed", { remote: socket.remoteAddress, code: err.code, error: err.message.slice(0, 200) });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("listening", resolve);
    server.once("error", reject);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${config.tls ? "https" : "http"}://${config.host.includes(":") ? `[${config.host}]` : config.host}:${port}`;

  const publisher = config.redis
    ? startReportPublisher(config.redis, config.region, config.reportIntervalMs, report, log)
    : null;
  // Joins, leaves, loads and unloads reach the edges at once, not at the next interval: a node
  // that rejoins a restarted router takes calls as soon as it is listed (docs/operating.md).
  if (publisher) scheduler.onReportChange = () => publisher.changed();
  // Keep-warm URLs are signed with the previous secret while a rotation runs: the edge learns
  // the new one only after the routers do (README, Security).
  const policies = config.redis ? startPolicyReader(config.region, config.redis, config.meshSecretPrevious ?? config.meshSecret, config.policyIntervalMs, scheduler, log, config.r2) : null;
  await publisher?.publishNow();
  log("info", "router listening", { url, nodeSocket: url.replace(/^http/, "ws") + NODE_SOCKET_PATH });

  return {
    url,
    port,
    scheduler,
    report,
    async close() {
      draining = true;
      await publisher?.publishNow(); // tell the edge at once
      // Keep answering "draining" (notStarted, so the edge takes the call elsewhere) until edges
      // have read that report (they refresh every second): a closed port is no proof that a
      // call did not run, so a call sent to it would fail instead of moving.
      const noticeUntil = Date.now() + Math.min(DRAIN_NOTICE_MS, config.drainTimeoutMs);
      const until = Date.now() + config.drainTimeoutMs;
      while ((scheduler.inflight > 0 || Date.now() < noticeUntil) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      scheduler.stop();
      policies?.stop();
      hub.closeAll(CLOSE.restart, "router restarting");
      for (const n of scheduler.nodes.values()) n.ws.close(CLOSE.restart, "router restarting");
      await publisher?.stop();
      await new Promise<void>((resolve) => {
        upgrades.close();
        server.close(() => resolve());
        // Keep-alive connections would hold close() open.
        (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
      });
      log("info", "router stopped");
    },
  };
}
