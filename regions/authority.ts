// The router's check of the edge's authority, in one place: every signed HTTP call (unary
// calls, status, the stream socket's upgrade) and every request on a stream socket. A signature
// is checked from headers alone (this region's secret, or its previous one during a rotation),
// must be fresh, and its nonce unused in its window, before any body byte is read or any
// request decoded; a body is then read with a byte cap while it streams and must be exactly
// the bytes that were signed. So an unsigned caller costs the router a header parse, and a
// captured signature is good for one use, in one region, for 30 s.

import { createCodec } from "../protocol/codec.js";
import { MeshError } from "../protocol/errors.js";
import { GENERATE_GRANT_METHOD, parseRegionGenerateRequest, type EdgeToRegion, type RegionGenerateRequest } from "../protocol/messages.js";
import { bodyMatches, NonceLedger, sha256Hex, verifyRequest, type SignedRequest } from "../protocol/signing.js";

export class EdgeAuthority {
  private readonly nonces = new NonceLedger();
  private readonly codec = createCodec();

  /** `secrets`: this region's current secret, then its previous one while a rotation runs. */
  constructor(readonly secrets: readonly string[]) {}

  /** Verifies a signature's headers and uses up its nonce; throws MeshError(unauthorized) otherwise. */
  async verify(method: string, path: string, header: (name: string) => string | null | undefined): Promise<SignedRequest> {
    return this.claim(await this.authenticate(method, path, header));
  }

  private async authenticate(method: string, path: string, header: (name: string) => string | null | undefined): Promise<SignedRequest> {
    const check = await verifyRequest(this.secrets, method, path, header);
    if (!check.ok) throw new MeshError("unauthorized", `unsigned or badly signed call: ${check.reason}`);
    return check;
  }

  // Claimed only once the MAC checked: nobody without the secret can fill the ledger.
  private claim(signed: SignedRequest): SignedRequest {
    if (!this.nonces.claim(signed.nonce, signed.stamp)) throw new MeshError("unauthorized", "unsigned or badly signed call: signature already used");
    return signed;
  }

  /**
   * Reads a verified request's body, never more than min(signed length, max) bytes: a longer
   * body (chunked ones included) is refused with payload_too_large as soon as it passes the
   * bound, and one that is not the signed bytes with unauthorized.
   */
  async readBody(req: Request, signed: SignedRequest, max: number): Promise<Uint8Array> {
    if (signed.bodyLength > max) throw new MeshError("payload_too_large", `body larger than ${max} bytes`);
    const declared = req.headers.get("content-length");
    if (declared !== null && Number(declared) !== signed.bodyLength) throw new MeshError("unauthorized", "body does not match its signature");
    const cap = signed.bodyLength;
    if (declared !== null) {
      // A declared length (equal to the signed one, within max) is all HTTP/1.1 delivers, so
      // the body is read whole: @hono/node-server then reads it straight from Node's request,
      // without the Web stream it otherwise builds around it (5-7% of a router's CPU under load,
      // bench/mesh-overhead.ts --profile).
      const body = new Uint8Array(await req.arrayBuffer());
      if (body.byteLength !== cap || !(await bodyMatches(signed, body))) throw new MeshError("unauthorized", "body does not match its signature");
      return body;
    }
    // Stop reading past the cap; the refusal closes the connection (the rest is never buffered).
    const body = await readCapped(req, cap, `body larger than ${cap === max ? `${max} bytes` : "its signed length"}`);
    if (!(await bodyMatches(signed, body))) throw new MeshError("unauthorized", "body does not match its signature");
    return body;
  }

  /** A GET carries no body: anything framed as one is refused unread. */
  refuseBody(req: { headers: { get(name: string): string | null } }): void {
    const len = req.headers.get("content-length");
    if (req.headers.get("transfer-encoding") !== null || (len !== null && len !== "0")) {
      throw new MeshError("payload_too_large", "this route takes no body");
    }
  }

  /**
   * The request of a `generate` frame, once its grant checks: signed by the edge for this
   * region, fresh, never used before, over exactly these bytes, and with its deadline ahead.
   */
  async generate(frame: Extract<EdgeToRegion, { t: "generate" }>, path: string, now = Date.now()): Promise<RegionGenerateRequest> {
    // The body's hash runs beside the MAC check (each a crypto job off the event loop): the first
    // token waits for the grant, and two jobs side by side cost one wait, not two. The bytes are
    // already here and bounded (the grant travels with them), so an unsigned frame gains nothing.
    const digest = sha256Hex(frame.req);
    digest.catch(() => undefined);
    const signed = await this.authenticate(GENERATE_GRANT_METHOD, path, (name) => frame.grant[name]);
    // The bytes are at hand: a grant is used up only by the request it was made for.
    if (!(await bodyMatches(signed, frame.req, digest))) throw new MeshError("unauthorized", "request does not match its grant");
    this.claim(signed);
    let req: RegionGenerateRequest;
    try {
      req = parseRegionGenerateRequest(this.codec.decode(frame.req));
    } catch (err) {
      throw new MeshError("bad_request", `invalid generate request: ${(err as Error).message}`);
    }
    if (req.deadline <= now) throw new MeshError("deadline_exceeded", "the request's deadline has passed");
    return req;
  }
}

/**
 * A request body, refused with payload_too_large (`tooLarge`) as soon as it passes `cap` bytes,
 * so an oversized body (chunked ones included) is never buffered whole: a declared length is
 * checked before anything is read, an undeclared one is counted chunk by chunk.
 */
export async function readCapped(req: Request, cap: number, tooLarge = `body larger than ${cap} bytes`): Promise<Uint8Array> {
  const length = req.headers.get("content-length");
  const declared = Number(length ?? "0");
  if (declared > cap) throw new MeshError("payload_too_large", tooLarge);
  // A declared length (within the cap) is all HTTP/1.1 delivers: read whole, without the Web
  // stream @hono/node-server otherwise builds around Node's request (as readBody does). The
  // streamed generation's body is read here before its first token can be asked for.
  if (length !== null && req.headers.get("transfer-encoding") === null) return new Uint8Array(await req.arrayBuffer());
  const chunks: Uint8Array[] = [];
  let size = 0;
  if (req.body) {
    const reader = req.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      size += value.length;
      if (size > cap) throw new MeshError("payload_too_large", tooLarge);
      chunks.push(value);
    }
  }
  const body = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    body.set(c, at);
    at += c.length;
  }
  return body;
}
