// The benches' HTTP client for measured calls: node:http over a keep-alive agent, lighter than
// fetch, so the client takes less of the machine's CPUs from the servers it measures. Used by
// mesh-overhead.ts and router-overhead.ts; the harness's defer() destroys the agents.

import http from "node:http";
import type { Bench } from "./harness.js";

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A keep-alive agent for up to `sockets` concurrent calls, destroyed at the bench's cleanup. */
export function keepAliveAgent(b: Bench, sockets: number): http.Agent {
  const a = new http.Agent({ keepAlive: true, maxSockets: sockets, maxFreeSockets: sockets, keepAliveMsecs: 30_000 });
  b.defer(() => a.destroy());
  return a;
}

/** POSTs `body` (JSON unless `headers` name another content-type); the whole answer, any status. */
export function post(agent: http.Agent, url: URL, headers: Record<string, string>, body: Uint8Array): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        agent,
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        method: "POST",
        headers: { "content-type": "application/json", ...headers, "content-length": String(body.length) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.setTimeout(30_000, () => req.destroy(new Error("request timed out after 30 s")));
    req.on("error", reject);
    req.end(body);
  });
}
