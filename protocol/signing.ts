// Signed, time-limited credentials between the mesh's parts, with WebCrypto only so the Worker
// and Node share the code. The edge signs each call it forwards to a region and each artifact URL
// it hands to a node; the receiver checks the HMAC in constant time and refuses stale stamps.

const encoder = new TextEncoder();
const keyCache = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keyCache.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
      "verify",
    ]);
    keyCache.set(secret, key);
  }
  return key;
}

export function toHex(bytes: ArrayBuffer | Uint8Array): string {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  let s = "";
  for (const b of u8) s += b.toString(16).padStart(2, "0");
  return s;
}

function fromHex(hex: string): Uint8Array<ArrayBuffer> | null {
  if (hex.length % 2 !== 0 || !/^[0-9a-f]*$/.test(hex)) return null;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

export async function sha256Hex(data: Uint8Array | ArrayBuffer | string): Promise<string> {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  return toHex(await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>));
}

/** Constant-time comparison of two strings (the time depends only on their lengths). */
export function timingSafeEqualString(a: string, b: string): boolean {
  const ab = encoder.encode(a);
  const bb = encoder.encode(b);
  let diff = ab.length ^ bb.length;
  const n = Math.max(ab.length, bb.length);
  for (let i = 0; i < n; i++) diff |= (ab[i] ?? 0) ^ (bb[i] ?? 0);
  return diff === 0;
}

function signingInput(stamp: string, method: string, path: string, body?: Uint8Array): Uint8Array<ArrayBuffer> {
  const head = encoder.encode(`${stamp}\n${method.toUpperCase()}\n${path}\n`);
  if (!body || body.length === 0) return head as Uint8Array<ArrayBuffer>;
  const all = new Uint8Array(head.length + body.length);
  all.set(head, 0);
  all.set(body, head.length);
  return all;
}

export const SIGNATURE_HEADER = "x-mesh-signature";
export const STAMP_HEADER = "x-mesh-stamp";
/** How long a signed request stays valid; it covers clock skew between edge and regions. */
export const DEFAULT_MAX_AGE_MS = 30_000;

/** Signs method + path (with query) + body at time `now`; returns the two headers to send. */
export async function signRequest(
  secret: string,
  method: string,
  path: string,
  body?: Uint8Array,
  now = Date.now(),
): Promise<Record<string, string>> {
  const stamp = String(now);
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), signingInput(stamp, method, path, body));
  return { [STAMP_HEADER]: stamp, [SIGNATURE_HEADER]: toHex(mac) };
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

export async function verifyRequest(
  secret: string,
  method: string,
  path: string,
  body: Uint8Array | undefined,
  stamp: string | null | undefined,
  signature: string | null | undefined,
  maxAgeMs = DEFAULT_MAX_AGE_MS,
  now = Date.now(),
): Promise<VerifyResult> {
  if (!stamp || !signature) return { ok: false, reason: "missing signature" };
  const t = Number(stamp);
  if (!Number.isFinite(t) || Math.abs(now - t) > maxAgeMs) return { ok: false, reason: "signature expired" };
  const mac = fromHex(signature);
  if (!mac) return { ok: false, reason: "malformed signature" };
  // crypto.subtle.verify compares in constant time.
  const ok = await crypto.subtle.verify("HMAC", await hmacKey(secret), mac, signingInput(stamp, method, path, body));
  return ok ? { ok: true } : { ok: false, reason: "bad signature" };
}

/** A URL that can be fetched without headers until `expires` (ms since epoch): artifact downloads. */
export async function signUrl(secret: string, url: URL, expires: number): Promise<string> {
  const u = new URL(url);
  u.searchParams.set("exp", String(expires));
  u.searchParams.delete("sig");
  const mac = await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(`GET\n${u.pathname}\n${expires}`));
  u.searchParams.set("sig", toHex(mac));
  return u.toString();
}

export async function verifyUrl(secret: string, url: URL, now = Date.now()): Promise<VerifyResult> {
  const exp = Number(url.searchParams.get("exp"));
  const sig = fromHex(url.searchParams.get("sig") ?? "");
  if (!sig || !Number.isFinite(exp)) return { ok: false, reason: "missing signature" };
  if (now > exp) return { ok: false, reason: "signature expired" };
  const ok = await crypto.subtle.verify(
    "HMAC",
    await hmacKey(secret),
    sig,
    encoder.encode(`GET\n${url.pathname}\n${exp}`),
  );
  return ok ? { ok: true } : { ok: false, reason: "bad signature" };
}

/** The signed download URL of a model artifact on the edge (`/internal/artifacts/{sha256}`). */
export function artifactUrl(secret: string, origin: string, sha256: string, expires: number): Promise<string> {
  return signUrl(secret, new URL(`/internal/artifacts/${sha256}`, origin), expires);
}
