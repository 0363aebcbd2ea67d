// The URLs nodes download artifacts and tokenizers through. Two kinds, chosen by configuration
// (EdgeConfig.r2, from the R2_* variables):
//
// - Presigned R2 URLs (SigV4 query signing, protocol/presign.ts) when R2 S3 credentials are
//   configured: the node fetches from R2's S3 endpoint, so multi-gigabyte models never pass
//   through a Worker (whose memory and CPU are the scarce thing) and R2 serves the ranges of a
//   resumed download. Locally the endpoint is the edge's own stand-in (/r2/<bucket>/<key>),
//   which checks the same signature, so `npm start` exercises this path.
// - Region-signed URLs on the edge (/internal/artifacts, /internal/tokenizers) otherwise: they
//   need no credential beyond the region secrets the mesh has anyway (a deployment without an
//   R2 API token, a self-hosted test), and each is bound to one region, so a URL handed to one
//   region is refused for any other. Always on the configured PUBLIC_ORIGIN, never a request's
//   Host, so no caller can point a node at another address.
//
// Both expire; both are reused while they have most of their life left.

import type { BundleFile, BundleFileRef } from "../protocol/messages.js";
import { artifactKey, presignObject } from "../protocol/presign.js";
import { artifactUrl, tokenizerUrl } from "../protocol/signing.js";
import { signingSecret, type EdgeConfig } from "./env.js";
import { tokenizerKey } from "./tokenizers.js";

/** Long enough for a multi-gigabyte download with its resumes: a node keeps using the URL it got. */
export const DOWNLOAD_URL_TTL_MS = 60 * 60_000;
const cache = new Map<string, { url: string; expires: number }>();

/** A bundle's data files with their URLs for `region`: they are in R2 by sha256 like artifacts, and served the same way. */
export async function bundleFileRefs(config: EdgeConfig, region: string, files: readonly BundleFile[]): Promise<BundleFileRef[]> {
  return Promise.all(files.map(async (f) => ({ ...f, url: await downloadUrl(config, region, "artifact", f.sha256) })));
}

export async function downloadUrl(config: EdgeConfig, region: string, kind: "artifact" | "tokenizer", sha256: string): Promise<string> {
  const r2 = config.r2;
  // The credentials are part of the key: a rotated secret, key or origin never reuses an old URL.
  const k = r2
    ? `r2|${r2.endpoint.href}|${r2.bucket}|${r2.credentials.accessKeyId}|${r2.credentials.secretAccessKey}|${kind}|${sha256}`
    : `edge|${config.publicOrigin}|${region}|${signingSecret(config, region)}|${kind}|${sha256}`;
  const now = Date.now();
  const hit = cache.get(k);
  if (hit && hit.expires - now > DOWNLOAD_URL_TTL_MS / 2) return hit.url;
  const expires = now + DOWNLOAD_URL_TTL_MS;
  let url: string;
  if (r2) {
    const key = kind === "artifact" ? artifactKey(sha256) : tokenizerKey(sha256);
    url = await presignObject(r2, key, DOWNLOAD_URL_TTL_MS / 1000, new Date(now));
  } else {
    const sign = kind === "artifact" ? artifactUrl : tokenizerUrl;
    url = await sign(signingSecret(config, region), config.publicOrigin, region, sha256, expires);
  }
  if (cache.size > 10_000) cache.clear();
  cache.set(k, { url, expires });
  return url;
}
