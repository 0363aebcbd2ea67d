// Model bytes for nodes, by two routes that serve R2 objects the same way (serveObject):
//
// GET /internal/artifacts/{sha256}: only through a URL signed for one region with that region's
// secret (by the edge, or by the region's router for keep-warm loads; time-limited). Used when
// no R2 S3 credentials are configured (edge/download-urls.ts says why both kinds exist).
//
// GET /r2/{bucket}/{key}: the local stand-in for R2's S3 endpoint (local mode, with
// R2_S3_ENDPOINT = PUBLIC_ORIGIN/r2 only): a SigV4 presigned GET, checked with the same
// credentials R2 would check it with, for the host the URL was signed for. In production these
// URLs go to R2 itself and the Worker serves no model bytes.
//
// Nodes verify the sha256 themselves after download. A single `Range: bytes=...` is answered
// with 206 and Content-Range, read from R2 by range, so a node resumes a cut download without
// fetching again what it has. The signature check comes first and is the same for a range: a
// range is no way around it.

import type { Context, Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
import { parseRange } from "../../protocol/http-range.js";
import { artifactKey, R2_STAND_IN_PATH, verifyPresignedGet } from "../../protocol/presign.js";
import { urlRegion, verifyUrl } from "../../protocol/signing.js";
import type { AppEnv } from "../context.js";
import { verifyingSecrets } from "../env.js";

export function registerInternalArtifacts(app: Hono<AppEnv>): void {
  app.get("/internal/artifacts/:sha256", async (c) => {
    const url = new URL(c.req.url);
    const check = await verifyUrl(verifyingSecrets(c.get("config"), urlRegion(url)), url);
    if (!check.ok) throw new MeshError("unauthorized", `artifact URL refused: ${check.reason}`);
    const sha = c.req.param("sha256");
    if (!/^[0-9a-f]{64}$/.test(sha)) throw new MeshError("not_found", "no such artifact");
    return serveObject(c, artifactKey(sha));
  });

  app.get(`${R2_STAND_IN_PATH}/*`, async (c) => {
    const r2 = c.get("config").r2;
    // Nothing answers here unless this edge is configured as the stand-in (local mode).
    if (!r2?.standIn) throw new MeshError("not_found", "no such route");
    const url = new URL(c.req.url);
    // S3 answers a refused presigned URL with 403, whatever the reason.
    const check = await verifyPresignedGet(r2.credentials, url, r2.endpoint.host);
    if (!check.ok) throw new MeshError("forbidden", `presigned URL refused: ${check.reason}`);
    const prefix = `${R2_STAND_IN_PATH}/${r2.bucket}/`;
    if (!url.pathname.startsWith(prefix)) throw new MeshError("not_found", "no such bucket");
    // The signature covered the path, so the key is what the signer named.
    return serveObject(c, decodeURIComponent(url.pathname.slice(prefix.length)));
  });
}

/** One object of the ARTIFACTS bucket, whole or the one range the request asks for. */
async function serveObject(c: Context<AppEnv>, key: string): Promise<Response> {
  const rangeHeader = c.req.header("range") ?? null;
  if (rangeHeader) {
    const head = await c.env.ARTIFACTS.head(key);
    if (!head) throw new MeshError("not_found", "no such artifact");
    const range = parseRange(rangeHeader, head.size);
    if (range === "unsatisfiable") {
      // 416 has no code of its own in the envelope; the caller reads the size from Content-Range.
      throw new MeshError("bad_request", `range '${rangeHeader}' is outside the artifact's ${head.size} bytes`, { "content-range": `bytes */${head.size}` });
    }
    if (range) {
      const part = await c.env.ARTIFACTS.get(key, { range });
      if (!part) throw new MeshError("not_found", "no such artifact");
      return new Response(part.body, {
        status: 206,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(range.length),
          "content-range": `bytes ${range.offset}-${range.offset + range.length - 1}/${part.size}`,
          "accept-ranges": "bytes",
          "x-request-id": c.get("requestId"),
        },
      });
    }
  }
  const object = await c.env.ARTIFACTS.get(key);
  if (!object) throw new MeshError("not_found", "no such artifact");
  return new Response(object.body, {
    headers: {
      "content-type": "application/octet-stream",
      "content-length": String(object.size),
      "accept-ranges": "bytes",
      "x-request-id": c.get("requestId"),
    },
  });
}
