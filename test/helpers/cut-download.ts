// A download the network cuts midway: an HTTP handler in front of a real artifact endpoint that
// forwards each request (with its Range) and cuts the first answer after `cutAt` bytes by
// destroying the socket; later answers pass whole. The node cache's resume tests use it.
import type { IncomingMessage, ServerResponse } from "node:http";

export function cutFirstDownload(
  upstreamUrl: (path: string) => string,
  cutAt: number,
  seen: (string | null)[],
): (req: IncomingMessage, res: ServerResponse) => Promise<void> {
  return async (req, res) => {
    seen.push(req.headers.range ?? null);
    const upstream = await fetch(upstreamUrl(req.url!), { headers: req.headers.range ? { range: req.headers.range } : {} });
    const body = Buffer.from(await upstream.arrayBuffer());
    const headers: Record<string, string> = { "content-length": String(body.length) };
    const cr = upstream.headers.get("content-range");
    if (cr) headers["content-range"] = cr;
    res.writeHead(upstream.status, headers);
    if (seen.length === 1) res.write(body.subarray(0, cutAt), () => res.socket?.destroy());
    else res.end(body);
  };
}
