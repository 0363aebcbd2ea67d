// Signed, time-limited credentials between the mesh's parts, with WebCrypto only so the Worker
// and Node share the code. The edge signs each call it forwards to a region, each request on a
// stream socket, and each artifact URL it hands to a node; a router signs the artifact URLs of
// its own keep-warm loads. Each region has its own secret: the edge holds them all, a router
// only its own (plus the previous one during a rotation). The receiver checks the HMAC in
// constant time, refuses stale stamps and, with a NonceLedger, a second use of a nonce.

// Secrets are compared with Hono's timingSafeEqual (hono/utils/buffer): WebCrypto only, so the
// Worker and Node share it, and constant time: it compares the SHA-256 of both sides, so not
// even the length of the secret shows. Digests, whose length is public, with equalDigests (no
// hashing: two WebCrypto calls per compare were measurable per call at the edge).

const encoder = new TextEncoder();

/**
 * The two primitives everything here is built on. WebCrypto by default, the same in the Worker
 * and in Node. A Node process may install node:crypto's synchronous ones instead
 * (runtime/node-crypto.ts; the router does at start): in Node every WebCrypto call is a job on
 * libuv's thread pool, a round trip through another thread per hash or MAC (bench:grants: a
 * grant check 66-176 µs with WebCrypto, 11-14 µs with node:crypto, across runs).
 */
export interface CryptoPrimitives {
  sha256(data: Uint8Array<ArrayBuffer>): Uint8Array | Promise<Uint8Array>;
  hmacSha256(secret: string, data: Uint8Array<ArrayBuffer>): Uint8Array | Promise<Uint8Array>;
}

/** Per secret: its key once imported (signing then waits on nothing but the MAC), the import while it runs. */
const keyCache = new Map<string, CryptoKey | Promise<CryptoKey>>();

function hmacKey(secret: string): CryptoKey | Promise<CryptoKey> {
  let key = keyCache.get(secret);
  if (!key) {
    const importing = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    keyCache.set(secret, (key = importing));
    importing.then((k) => keyCache.get(secret) === importing && keyCache.set(secret, k), () => keyCache.delete(secret));
  }
  return key;
}

export const webCryptoPrimitives: CryptoPrimitives = {
  sha256: async (data) => new Uint8Array(await crypto.subtle.digest("SHA-256", data)),
  hmacSha256: async (secret, data) => {
    const key = hmacKey(secret);
    return new Uint8Array(await crypto.subtle.sign("HMAC", "then" in key ? await key : key, data));
  },
};

let primitives: CryptoPrimitives = webCryptoPrimitives;

/** Installs the hash and MAC this process signs and verifies with (same results, other costs). */
export function useCryptoPrimitives(p: CryptoPrimitives): void {
  primitives = p;
}

/** Each byte's two hex digits: a lookup, not a toString and padStart per byte (the edge hexes several digests and ids per call). */
const HEX = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, "0"));

export function toHex(bytes: ArrayBuffer | Uint8Array): string {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = "";
  for (let i = 0; i < u8.length; i++) s += HEX[u8[i]!];
  return s;
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> | null {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/**
 * Constant-time equality of two digests in hex (or any strings whose length is public): every
 * character is read whatever the first difference. Secrets of unknown length still go through
 * timingSafeEqual, which hides the length too.
 */
export function equalDigests(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

export async function sha256Hex(data: Uint8Array | ArrayBuffer | string): Promise<string> {
  const bytes = typeof data === "string" ? encoder.encode(data) : data instanceof Uint8Array ? data : new Uint8Array(data);
  return toHex(await primitives.sha256(bytes as Uint8Array<ArrayBuffer>));
}

/** True when any of `secrets` made `mac` over `input` (the MAC recomputed, compared in constant time). */
async function verifyAny(secrets: string | readonly string[], mac: Uint8Array<ArrayBuffer>, input: Uint8Array<ArrayBuffer>): Promise<boolean> {
  for (const secret of typeof secrets === "string" ? [secrets] : secrets) {
    if (equalDigests(toHex(await primitives.hmacSha256(secret, input)), toHex(mac))) return true;
  }
  return false;
}

export const SIGNATURE_HEADER = "x-mesh-signature";
export const STAMP_HEADER = "x-mesh-stamp";
export const NONCE_HEADER = "x-mesh-nonce";
/** The body's sha256 and length are signed, so the MAC is checked before any body byte is read. */
export const BODY_SHA256_HEADER = "x-mesh-body-sha256";
export const BODY_LENGTH_HEADER = "x-mesh-body-length";
/** How long a signed request stays valid; it covers clock skew between edge and regions. */
export const DEFAULT_MAX_AGE_MS = 30_000;

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

function signingInput(stamp: string, nonce: string, method: string, path: string, length: number, sha256: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(`${stamp}\n${nonce}\n${method.toUpperCase()}\n${path}\n${length}\n${sha256}`) as Uint8Array<ArrayBuffer>;
}

function newNonce(): string {
  return toHex(crypto.getRandomValues(new Uint8Array(16)));
}

/**
 * Signs one request: method + path (with query) + the body's length and sha256, at time `now`,
 * under a fresh nonce. Returns the headers to send. The same headers, carried in a frame with
 * method `GENERATE`, are the grant of one request on a stream socket.
 */
export async function signRequest(
  secret: string,
  method: string,
  path: string,
  body?: Uint8Array,
  now = Date.now(),
): Promise<Record<string, string>> {
  const stamp = String(now);
  const nonce = newNonce();
  const length = body?.length ?? 0;
  const sha256 = length > 0 ? await sha256Hex(body!) : EMPTY_SHA256;
  const mac = await primitives.hmacSha256(secret, signingInput(stamp, nonce, method, path, length, sha256));
  return {
    [STAMP_HEADER]: stamp,
    [NONCE_HEADER]: nonce,
    [BODY_LENGTH_HEADER]: String(length),
    [BODY_SHA256_HEADER]: sha256,
    [SIGNATURE_HEADER]: toHex(mac),
  };
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

/** A request whose headers carry a valid signature: what the body must be, and the nonce to claim. */
export interface SignedRequest {
  ok: true;
  stamp: number;
  nonce: string;
  bodyLength: number;
  bodySha256: string;
}

/**
 * Checks a request's signature from its headers alone (`header(name)` reads one), so nothing
 * of an unauthenticated body need be read. `secrets`: the receiver's current secret and, during
 * a rotation, its previous one. The caller then claims the nonce (NonceLedger) and checks the
 * body against the signed length and hash while reading it (bodyMatches).
 */
export async function verifyRequest(
  secrets: string | readonly string[],
  method: string,
  path: string,
  header: (name: string) => string | null | undefined,
  maxAgeMs = DEFAULT_MAX_AGE_MS,
  now = Date.now(),
): Promise<SignedRequest | { ok: false; reason: string }> {
  const stamp = header(STAMP_HEADER);
  const signature = header(SIGNATURE_HEADER);
  const nonce = header(NONCE_HEADER);
  const length = header(BODY_LENGTH_HEADER);
  const sha256 = header(BODY_SHA256_HEADER);
  if (!stamp || !signature || !nonce || !length || !sha256) return { ok: false, reason: "missing signature" };
  const t = Number(stamp);
  if (!/^\d{1,16}$/.test(stamp) || Math.abs(now - t) > maxAgeMs) return { ok: false, reason: "signature expired" };
  const mac = fromHex(signature);
  if (!mac || !/^[0-9a-f]{32}$/.test(nonce) || !/^\d{1,15}$/.test(length) || !/^[0-9a-f]{64}$/.test(sha256)) {
    return { ok: false, reason: "malformed signature" };
  }
  const bodyLength = Number(length);
  if (!(await verifyAny(secrets, mac, signingInput(stamp, nonce, method, path, bodyLength, sha256)))) return { ok: false, reason: "bad signature" };
  return { ok: true, stamp: t, nonce, bodyLength, bodySha256: sha256 };
}

/** True when `body` is exactly the body the signature covers (`digest`: its sha256Hex, when already started). */
export async function bodyMatches(signed: SignedRequest, body: Uint8Array, digest?: Promise<string>): Promise<boolean> {
  if (body.length !== signed.bodyLength) return false;
  return equalDigests(body.length > 0 ? await (digest ?? sha256Hex(body)) : EMPTY_SHA256, signed.bodySha256);
}

/**
 * The nonces of signatures still inside their validity window: a second use of one is a
 * replay. A nonce is forgotten once its stamp is too old to pass verifyRequest anyway, so the
 * memory is bounded by the signed calls of one window (only verified nonces are claimed).
 */
export class NonceLedger {
  private readonly seen = new Map<string, number>();
  private nextSweep = 0;

  constructor(readonly maxAgeMs = DEFAULT_MAX_AGE_MS) {}

  /** True the first time `nonce` is claimed within its window; false for a replay. */
  claim(nonce: string, stamp: number, now = Date.now()): boolean {
    if (now >= this.nextSweep) {
      for (const [n, until] of this.seen) if (until < now) this.seen.delete(n);
      this.nextSweep = now + Math.max(100, this.maxAgeMs / 10);
    }
    const until = this.seen.get(nonce);
    if (until !== undefined && until >= now) return false;
    this.seen.set(nonce, stamp + this.maxAgeMs);
    return true;
  }

  get size(): number {
    return this.seen.size;
  }
}

function urlSigningInput(url: URL, region: string, expires: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(`GET\n${url.pathname}\n${region}\n${expires}`) as Uint8Array<ArrayBuffer>;
}

/**
 * A URL that can be fetched without headers until `expires` (ms since epoch), by the nodes of
 * one region only: the region is in the URL and under the MAC, and the MAC is made with that
 * region's secret, so neither the URL nor the secret is of use to another region.
 */
export async function signUrl(secret: string, url: URL, region: string, expires: number): Promise<string> {
  const u = new URL(url);
  u.searchParams.set("region", region);
  u.searchParams.set("exp", String(expires));
  u.searchParams.delete("sig");
  const mac = await primitives.hmacSha256(secret, urlSigningInput(u, region, String(expires)));
  u.searchParams.set("sig", toHex(mac));
  return u.toString();
}

/** The region a signed URL was issued for: the verifier picks that region's secrets by it. */
export function urlRegion(url: URL): string | null {
  return url.searchParams.get("region");
}

/** `secrets`: those of the region the URL names (urlRegion), current and previous. */
export async function verifyUrl(secrets: string | readonly string[], url: URL, now = Date.now()): Promise<VerifyResult> {
  const region = url.searchParams.get("region");
  const exp = url.searchParams.get("exp") ?? "";
  const sig = fromHex(url.searchParams.get("sig") ?? "");
  if (!sig || !region || !/^\d{1,16}$/.test(exp)) return { ok: false, reason: "missing signature" };
  if (now > Number(exp)) return { ok: false, reason: "signature expired" };
  return (await verifyAny(secrets, sig, urlSigningInput(url, region, exp))) ? { ok: true } : { ok: false, reason: "bad signature" };
}

/** The signed download URL of a model artifact on the edge (`/internal/artifacts/{sha256}`), for one region. */
export function artifactUrl(secret: string, origin: string, region: string, sha256: string, expires: number): Promise<string> {
  return signUrl(secret, new URL(`/internal/artifacts/${sha256}`, origin), region, expires);
}

/** The signed download URL of a tokenizer.json on the edge (`/internal/tokenizers/{sha256}`), for one region. */
export function tokenizerUrl(secret: string, origin: string, region: string, sha256: string, expires: number): Promise<string> {
  return signUrl(secret, new URL(`/internal/tokenizers/${sha256}`, origin), region, expires);
}
