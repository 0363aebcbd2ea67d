// Content codings of the edge's bodies: a request body compressed with gzip or deflate is read
// through DecompressionStream under the route's size limit (counted on what comes out, so a
// small body cannot expand past it), and an answer is gzipped for a caller that accepts it.
// Pure: no bindings, so unit tests run it under Node as well.

import { MeshError } from "../protocol/errors.js";

/**
 * Reads a body into bytes, undoing `Content-Encoding: gzip` or `deflate` (workerd hands the
 * Worker the body as sent). The limit applies to what comes out of the decompressor, and
 * reading stops at it: a small body cannot expand past the route's limit (413), and a corrupt
 * stream is a 400. Any other coding is a 415. The compressed size is bounded by `limitBody`.
 */
export async function readBody(req: Request, maxBytes: number): Promise<Uint8Array> {
  const coding = (req.headers.get("content-encoding") ?? "identity").trim().toLowerCase();
  if (coding === "identity" || coding === "") return new Uint8Array(await req.arrayBuffer());
  if (coding !== "gzip" && coding !== "deflate") {
    throw new MeshError("unsupported_media_type", `Content-Encoding '${coding.slice(0, 32)}' is not supported; send gzip, deflate or none`);
  }
  if (!req.body) return new Uint8Array(0);
  const reader = req.body.pipeThrough(new DecompressionStream(coding)).getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    let step: ReadableStreamReadResult<Uint8Array>;
    try {
      step = await reader.read();
    } catch {
      throw new MeshError("bad_request", `request body is not a valid ${coding} stream`);
    }
    if (step.done) break;
    size += step.value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw new MeshError("payload_too_large", `request body is larger than ${maxBytes} bytes once decompressed`);
    }
    chunks.push(step.value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const out = new Uint8Array(size);
  let p = 0;
  for (const c of chunks) {
    out.set(c, p);
    p += c.byteLength;
  }
  return out;
}

/** Answers at least this large are gzipped for a caller that accepts it; smaller ones gain nothing. */
export const COMPRESS_MIN_BYTES = 1024;

/**
 * The caller's own Accept-Encoding. The Workers runtime (Cloudflare and workerd alike) rewrites
 * the header a Worker sees to `br, gzip` and keeps what the caller sent in
 * `request.cf.clientAcceptEncoding`; outside the runtime (unit tests) the header is the caller's.
 */
export function clientAcceptEncoding(req: Request): string | undefined {
  const cf = (req as { cf?: { clientAcceptEncoding?: unknown } }).cf;
  if (cf && typeof cf.clientAcceptEncoding === "string") return cf.clientAcceptEncoding;
  if (cf) return undefined; // in the runtime with no client value: the caller sent none
  return req.headers.get("accept-encoding") ?? undefined;
}

/** True when an Accept-Encoding header takes gzip (q > 0, by name or by `*`). */
export function acceptsGzip(header: string | undefined): boolean {
  if (!header) return false;
  let star = false;
  for (const part of header.split(",")) {
    const [name, ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    const ok = q === undefined || Number(q.slice(2)) > 0;
    if (name === "gzip" || name === "x-gzip") return ok;
    if (name === "*") star = ok;
  }
  return star;
}

/**
 * Headers for an answer of `size` bytes that varies by Accept-Encoding: `Content-Encoding: gzip`
 * when the caller takes it and the answer is large enough. The Workers runtime compresses a body
 * whose response names gzip (its default `encodeBody: "automatic"`), natively and streaming, so
 * the Worker only says so; a CompressionStream here would be compressed a second time.
 */
export function encodingHeaders(acceptEncoding: string | undefined, size: number): Record<string, string> {
  const gzip = size >= COMPRESS_MIN_BYTES && acceptsGzip(acceptEncoding);
  return { vary: "Accept-Encoding", ...(gzip ? { "content-encoding": "gzip" } : {}) };
}
