// The signed URLs nodes download artifacts and tokenizers through: always on the configured
// public origin (PUBLIC_ORIGIN, never a request's Host, so no caller can point a node at
// another address), and signed for one region with that region's secret, so a URL handed to
// one region is refused for any other. Reused while they have most of their life left.

import type { BundleFile, BundleFileRef } from "../protocol/messages.js";
import { artifactUrl, tokenizerUrl } from "../protocol/signing.js";
import { signingSecret, type EdgeConfig } from "./env.js";

const URL_TTL_MS = 15 * 60_000;
const cache = new Map<string, { url: string; expires: number }>();

/** A bundle's data files with their URLs for `region`: they are in R2 by sha256 like artifacts, and served the same way. */
export async function bundleFileRefs(config: EdgeConfig, region: string, files: readonly BundleFile[]): Promise<BundleFileRef[]> {
  return Promise.all(files.map(async (f) => ({ ...f, url: await downloadUrl(config, region, "artifact", f.sha256) })));
}

export async function downloadUrl(config: EdgeConfig, region: string, kind: "artifact" | "tokenizer", sha256: string): Promise<string> {
  const secret = signingSecret(config, region);
  // The secret is part of the key: a rotated secret or origin never reuses an old URL.
  const k = `${config.publicOrigin}|${region}|${secret}|${kind}|${sha256}`;
  const now = Date.now();
  const hit = cache.get(k);
  if (hit && hit.expires - now > URL_TTL_MS / 2) return hit.url;
  const expires = now + URL_TTL_MS;
  const sign = kind === "artifact" ? artifactUrl : tokenizerUrl;
  const url = await sign(secret, config.publicOrigin, region, sha256, expires);
  if (cache.size > 10_000) cache.clear();
  cache.set(k, { url, expires });
  return url;
}
