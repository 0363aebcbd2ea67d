// Idle connections to a router (issue 15): a client that keeps its connection (Cloudflare's pool
// in front of a deployed Worker, a Prometheus scraper) must find it open after an idle gap longer
// than Node's default keep-alive of 5 s, or a rarely called region pays a new TCP and TLS
// handshake (three round trips) on its next call. Real routers (in this process, HTTPS with a
// certificate from a throwaway CA), a real keep-alive client (node:https, made to ignore the
// router's Keep-Alive hint and keep idle sockets forever, as a pool that does not read the hint
// would, so that only the router can close one), and the router's own count of accepted
// connections (mesh_router_http_connections_total). A router with a 1 s keep-alive shows that
// the count does see a reconnect.

import { randomBytes } from "node:crypto";
import { readFile, mkdtemp, rm } from "node:fs/promises";
import { Agent, request } from "node:https";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeLocalCa } from "../local/ca.js";
import { ROUTER_DEFAULTS, routerConfigFromEnv } from "../regions/config.js";
import { startRouter, type RouterHandle } from "../regions/server.js";
import { sample } from "./helpers/metrics-text.js";
import { waitUntil } from "./helpers/region-harness.js";

const TOKEN = randomBytes(24).toString("base64url");
/** Past Node's default keep-alive (5 s): the gap after which a connection used to be gone. */
const IDLE_GAP_MS = 6_000;

interface Answer {
  status: number;
  body: string;
  keepAlive: string | undefined;
  /** Whether the request went out on a connection the agent already had. */
  reused: boolean;
  socket: Socket;
}

/**
 * Keeps every idle socket, whatever the server's `Keep-Alive: timeout=` says (Node's Agent would
 * close it a second before that, and refuse to keep it at all under 2 s).
 */
class HintBlindAgent extends Agent {
  override keepSocketAlive(socket: Duplex): boolean {
    (socket as Socket).setKeepAlive(true);
    (socket as Socket).unref();
    return true;
  }
}

let dir: string;
let ca: string;
let env: Record<string, string>;
const routers: RouterHandle[] = [];

function get(agent: Agent, url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, ca, headers, timeout: 10_000 }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (body += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body, keepAlive: res.headers["keep-alive"]?.toString(), reused: req.reusedSocket, socket: req.socket! }));
    });
    req.on("timeout", () => req.destroy(new Error(`${url}: no answer in 10 s`)));
    req.on("error", reject);
    req.end();
  });
}

async function router(extra: Record<string, string> = {}): Promise<RouterHandle> {
  const r = await startRouter(routerConfigFromEnv({ ...env, ...extra }));
  routers.push(r);
  return r;
}

/** The router's accepted-connection count, read over the same agent (so on the same connection). */
async function connections(agent: Agent, r: RouterHandle): Promise<number> {
  const a = await get(agent, `${r.url}/metrics`, { authorization: `Bearer ${TOKEN}` });
  expect(a.status, a.body).toBe(200);
  return sample(a.body, "mesh_router_http_connections_total")!;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "router-keep-alive-"));
  const made = await makeLocalCa(dir, [{ name: "router", hosts: ["127.0.0.1", "localhost"] }]);
  ca = await readFile(made.caFile, "utf8");
  env = {
    MESH_REGION: "keep-alive",
    PORT: "0",
    MESH_SECRET: TOKEN,
    NODE_TOKEN: TOKEN,
    METRICS_TOKEN: TOKEN,
    DRAIN_TIMEOUT_MS: "0",
    ROUTER_TLS_CERT: made.certs.router!.certFile,
    ROUTER_TLS_KEY: made.certs.router!.keyFile,
  };
}, 60_000);

afterAll(async () => {
  await Promise.all(routers.map((r) => r.close()));
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("idle connections to a router", () => {
  it("by default a connection idle longer than 5 s answers the next call: no new connection", async () => {
    const r = await router();
    const agent = new HintBlindAgent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(agent, `${r.url}/healthz`);
      expect(first.status).toBe(200);
      // The router tells the client how long it keeps the connection.
      expect(first.keepAlive).toBe(`timeout=${ROUTER_DEFAULTS.keepAliveTimeoutMs / 1000}`);
      const before = await connections(agent, r);
      const idleSince = Date.now();
      // The idle gap itself (the scenario, not a wait for a result): the socket must stay open.
      await waitUntil("an idle gap past 5 s", IDLE_GAP_MS + 5_000, () => (Date.now() - idleSince >= IDLE_GAP_MS ? true : undefined), 100);
      expect(first.socket.destroyed, "the router closed the idle connection").toBe(false);
      const after = await get(agent, `${r.url}/healthz`);
      expect(after.status).toBe(200);
      expect(after.reused).toBe(true);
      expect(after.socket).toBe(first.socket);
      expect(await connections(agent, r)).toBe(before);
    } finally {
      agent.destroy();
    }
  }, 30_000);

  it("a router with a short keep-alive closes the idle connection, and the count shows the reconnect", async () => {
    const r = await router({ KEEP_ALIVE_TIMEOUT_MS: "1000" });
    const agent = new HintBlindAgent({ keepAlive: true, maxSockets: 1 });
    try {
      const first = await get(agent, `${r.url}/healthz`);
      expect(first.keepAlive).toBe("timeout=1");
      const before = await connections(agent, r);
      // Only the router closes: the agent has no idle timeout of its own.
      await waitUntil("the router to close the idle connection", 10_000, () => (first.socket.destroyed ? true : undefined), 50);
      const after = await get(agent, `${r.url}/healthz`);
      expect(after.status).toBe(200);
      expect(after.reused).toBe(false);
      expect(await connections(agent, r)).toBe(before + 1);
    } finally {
      agent.destroy();
    }
  }, 30_000);

  it("KEEP_ALIVE_TIMEOUT_MS is read once, with its bounds", () => {
    expect(routerConfigFromEnv(env).keepAliveTimeoutMs).toBe(120_000);
    expect(routerConfigFromEnv({ ...env, KEEP_ALIVE_TIMEOUT_MS: "900000" }).keepAliveTimeoutMs).toBe(900_000);
    expect(() => routerConfigFromEnv({ ...env, KEEP_ALIVE_TIMEOUT_MS: "500" })).toThrow(/KEEP_ALIVE_TIMEOUT_MS must be an integer >= 1000/);
  });
});
