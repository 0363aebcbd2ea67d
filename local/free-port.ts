// Finds a TCP port that is free right now, for child processes (redis-server, routers, ...)
// that must be told their port up front instead of binding port 0 themselves.
// The port is only free at the instant we close our probe socket: another process can take
// it before the caller binds, so callers that spawn servers should treat "address in use"
// as retryable.
import net from "node:net";

export async function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const probe = net.createServer();
    probe.unref();
    probe.once("error", reject);
    probe.listen({ port: 0, host, exclusive: true }, () => {
      const address = probe.address();
      if (address === null || typeof address === "string") {
        probe.close();
        reject(new Error(`freePort: unexpected listen address ${String(address)}`));
        return;
      }
      const { port } = address;
      probe.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
