// S3 presigned GET URLs (AWS Signature Version 4, query-string form), with WebCrypto only so the
// Worker and the routers share the code. In production the edge and the routers hand nodes such
// URLs for R2's S3-compatible endpoint, so a model's bytes go from R2 to the node without passing
// through the Worker; locally, where Miniflare has no S3 endpoint, the edge serves the same URL
// shape itself and checks the signature with `verifyPresignedGet` (edge/routes/internal_artifacts.ts).
//
// Only what a GET of one object needs is implemented: one signed header (`host`), an unsigned
// payload, path-style URLs (https://<account>.r2.cloudflarestorage.com/<bucket>/<key>).

import { timingSafeEqual } from "hono/utils/buffer";
import { toHex } from "./signing.js";

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  /** The SigV4 region: R2 takes "auto". */
  region: string;
}

/** The longest life SigV4 allows a presigned URL (7 days). */
export const MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600;
/** A URL dated this far in the future is refused (clock skew between signer and server). */
const MAX_FUTURE_SKEW_MS = 15 * 60_000;

const ALGORITHM = "AWS4-HMAC-SHA256";
const encoder = new TextEncoder();

/** RFC 3986 encoding as SigV4 wants it: every byte but A-Z a-z 0-9 - . _ ~ escaped, upper-case hex. */
function uriEncode(s: string, keepSlash: boolean): string {
  let out = "";
  for (const b of encoder.encode(s)) {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~]/.test(c) || (keepSlash && c === "/")) out += c;
    else out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** A received path as SigV4 signs it (S3 does not normalise it): each segment decoded once, then encoded; null when malformed. */
function canonicalPath(pathname: string): string | null {
  try {
    return pathname
      .split("/")
      .map((seg) => uriEncode(decodeURIComponent(seg), false))
      .join("/");
  } catch {
    return null;
  }
}

function canonicalQuery(params: [string, string][]): string {
  return params
    .map(([k, v]) => [uriEncode(k, false), uriEncode(v, false)] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([k, v]) => `${k}=${v}`)
    .join("&");
}

async function hmac(key: Uint8Array | string, data: string): Promise<Uint8Array> {
  const raw = typeof key === "string" ? encoder.encode(key) : key;
  const k = await crypto.subtle.importKey("raw", raw as Uint8Array<ArrayBuffer>, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", k, encoder.encode(data)));
}

/** The signature of a GET of `path` (canonical: encoded as SigV4 wants) on `host` with these query parameters. */
async function signature(creds: S3Credentials, host: string, path: string, params: [string, string][], amzDate: string): Promise<string> {
  const day = amzDate.slice(0, 8);
  const scope = `${day}/${creds.region}/s3/aws4_request`;
  const canonicalRequest = ["GET", path, canonicalQuery(params), `host:${host}`, "", "host", "UNSIGNED-PAYLOAD"].join("\n");
  const digest = toHex(await crypto.subtle.digest("SHA-256", encoder.encode(canonicalRequest)));
  const stringToSign = [ALGORITHM, amzDate, scope, digest].join("\n");
  const key = await signingKey(creds, day);
  return toHex(new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(stringToSign))));
}

// The derived key depends only on the secret, the day and the region: made once a day, not per URL.
const signingKeys = new Map<string, Promise<CryptoKey>>();

function signingKey(creds: S3Credentials, day: string): Promise<CryptoKey> {
  const id = `${creds.secretAccessKey}\n${day}\n${creds.region}`;
  let key = signingKeys.get(id);
  if (!key) {
    key = (async () => {
      let k = await hmac(`AWS4${creds.secretAccessKey}`, day);
      for (const part of [creds.region, "s3", "aws4_request"]) k = await hmac(k, part);
      return crypto.subtle.importKey("raw", k as Uint8Array<ArrayBuffer>, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    })();
    if (signingKeys.size > 64) signingKeys.clear();
    signingKeys.set(id, key);
  }
  return key;
}

/** `YYYYMMDDTHHMMSSZ` of a time. */
export function amzDate(at: Date): string {
  return at.toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
}

/**
 * A presigned GET URL for `objectPath` ("<bucket>/<key>" on R2's path-style endpoint; the key
 * alone on a virtual-hosted one) under `endpoint` (an origin, perhaps with a path prefix such
 * as the local stand-in's /r2), valid `expiresS` seconds from `now`. The query parameters come
 * out in SigV4's canonical order, so the URL is exactly what AWS's own signers produce.
 */
export async function presignGet(creds: S3Credentials, endpoint: URL, objectPath: string, expiresS: number, now: Date = new Date()): Promise<string> {
  if (!Number.isInteger(expiresS) || expiresS < 1 || expiresS > MAX_PRESIGN_EXPIRES_S) throw new Error(`presigned URL life must be 1..${MAX_PRESIGN_EXPIRES_S} s`);
  const date = amzDate(now);
  const params: [string, string][] = [
    ["X-Amz-Algorithm", ALGORITHM],
    ["X-Amz-Credential", `${creds.accessKeyId}/${date.slice(0, 8)}/${creds.region}/s3/aws4_request`],
    ["X-Amz-Date", date],
    ["X-Amz-Expires", String(expiresS)],
    ["X-Amz-SignedHeaders", "host"],
  ];
  const path = `${canonicalPath(endpoint.pathname.replace(/\/+$/, ""))}/${uriEncode(objectPath, true)}`;
  const sig = await signature(creds, endpoint.host, path, params, date);
  return `${endpoint.origin}${path}?${canonicalQuery(params)}&X-Amz-Signature=${sig}`;
}

export type PresignCheck = { ok: true } | { ok: false; reason: string };

function parseAmzDate(s: string): number | null {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  if (!m) return null;
  const t = Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  return Number.isFinite(t) ? t : null;
}

/**
 * Checks a presigned GET as S3 would: our access key, the algorithm, a signature over the
 * request's path and query with `host` (the configured endpoint's host: the URL was signed for
 * it, whatever a proxy in front rewrote), and within its life. The reasons are for logs.
 */
export async function verifyPresignedGet(creds: S3Credentials, url: URL, host: string, now = Date.now()): Promise<PresignCheck> {
  const q = url.searchParams;
  const sig = q.get("X-Amz-Signature") ?? "";
  const date = q.get("X-Amz-Date") ?? "";
  const expires = q.get("X-Amz-Expires") ?? "";
  if (!/^[0-9a-f]{64}$/.test(sig) || q.getAll("X-Amz-Signature").length !== 1) return { ok: false, reason: "missing signature" };
  if (q.get("X-Amz-Algorithm") !== ALGORITHM) return { ok: false, reason: "unsupported algorithm" };
  if (q.get("X-Amz-SignedHeaders") !== "host") return { ok: false, reason: "unsupported signed headers" };
  const signedAt = parseAmzDate(date);
  if (signedAt === null || !/^\d{1,6}$/.test(expires)) return { ok: false, reason: "malformed date or expiry" };
  const life = Number(expires);
  if (life < 1 || life > MAX_PRESIGN_EXPIRES_S) return { ok: false, reason: "expiry out of range" };
  if (q.get("X-Amz-Credential") !== `${creds.accessKeyId}/${date.slice(0, 8)}/${creds.region}/s3/aws4_request`) {
    return { ok: false, reason: "unknown credential" };
  }
  if (now > signedAt + life * 1000) return { ok: false, reason: "signature expired" };
  if (signedAt - now > MAX_FUTURE_SKEW_MS) return { ok: false, reason: "signed in the future" };
  const path = canonicalPath(url.pathname);
  if (path === null) return { ok: false, reason: "malformed path" };
  const params = [...q.entries()].filter(([k]) => k !== "X-Amz-Signature");
  const want = await signature(creds, host, path, params, date);
  return (await timingSafeEqual(want, sig)) ? { ok: true } : { ok: false, reason: "bad signature" };
}

// ---------------------------------------------------------------- R2 configuration

export interface R2PresignConfig {
  /** Origin (plus /r2 for the local stand-in) the URLs are signed for. */
  endpoint: URL;
  bucket: string;
  credentials: S3Credentials;
  /** The endpoint is the edge itself (local mode): it serves /r2/<bucket>/<key>. */
  standIn: boolean;
}

/** The path under the edge's PUBLIC_ORIGIN where the local stand-in for R2's S3 endpoint answers. */
export const R2_STAND_IN_PATH = "/r2";

/** Where a model artifact (or a bundle's data file) lives in the bucket, by its sha256: the edge writes it there, presigned URLs name it. */
export function artifactKey(sha256: string): string {
  return `artifacts/${sha256}.onnx`;
}

/** A presigned GET of one object of the configured bucket. */
export function presignObject(r2: R2PresignConfig, key: string, expiresS: number, now?: Date): Promise<string> {
  return presignGet(r2.credentials, r2.endpoint, `${r2.bucket}/${key}`, expiresS, now);
}

/** R2's S3 API takes the SigV4 region "auto". */
const R2_SIGV4_REGION = "auto";

/**
 * Reads and checks the R2_* variables (the edge's and the routers' alike): all or none, an https
 * origin with no path, or an origin plus /r2 (the edge's local stand-in) where `standInAllowed`
 * says that origin may be one: the edge allows its own PUBLIC_ORIGIN in local mode only; a
 * router, which cannot tell, allows any (a wrong one fails the node's download, not the router).
 */
export function readR2Presign(
  vars: { R2_S3_ENDPOINT?: string; R2_BUCKET?: string; R2_ACCESS_KEY_ID?: string; R2_SECRET_ACCESS_KEY?: string },
  standInAllowed: (origin: string) => boolean,
  fail: (msg: string) => never,
): R2PresignConfig | null {
  const names = ["R2_S3_ENDPOINT", "R2_BUCKET", "R2_ACCESS_KEY_ID", "R2_SECRET_ACCESS_KEY"] as const;
  const set = names.filter((n) => vars[n]);
  if (set.length === 0) return null;
  if (set.length !== names.length) fail(`R2 presigned URLs need all of ${names.join(", ")} (missing ${names.filter((n) => !vars[n]).join(", ")})`);
  let endpoint: URL | null = null;
  try {
    endpoint = new URL(vars.R2_S3_ENDPOINT!);
  } catch {
    fail("R2_S3_ENDPOINT must be a URL like https://<account>.r2.cloudflarestorage.com");
  }
  const path = endpoint!.pathname.replace(/\/+$/, "");
  const standIn = path === R2_STAND_IN_PATH && /^https?:$/.test(endpoint!.protocol) && standInAllowed(endpoint!.origin);
  if (!standIn && (endpoint!.protocol !== "https:" || path !== "")) {
    fail(`R2_S3_ENDPOINT must be an https origin with no path, like https://<account>.r2.cloudflarestorage.com (locally: the edge's origin + ${R2_STAND_IN_PATH})`);
  }
  if (endpoint!.search || endpoint!.hash || endpoint!.username) fail("R2_S3_ENDPOINT must have no query, fragment or user");
  if (!/^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$/.test(vars.R2_BUCKET!)) fail("R2_BUCKET must be an R2 bucket name (3-63 of a-z, 0-9, -)");
  if (!/^[\x21-\x7e]{8,128}$/.test(vars.R2_ACCESS_KEY_ID!) || vars.R2_ACCESS_KEY_ID!.includes("/")) fail("R2_ACCESS_KEY_ID must be an R2 API token's access key id");
  if (vars.R2_SECRET_ACCESS_KEY!.length < 16) fail("R2_SECRET_ACCESS_KEY must be an R2 API token's secret access key (16+ characters)");
  return {
    endpoint: new URL(endpoint!.origin + path),
    bucket: vars.R2_BUCKET!,
    credentials: { accessKeyId: vars.R2_ACCESS_KEY_ID!, secretAccessKey: vars.R2_SECRET_ACCESS_KEY!, region: R2_SIGV4_REGION },
    standIn,
  };
}

