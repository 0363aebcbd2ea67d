// Files for nodes, by routes that serve R2 objects the same way (serveObject), none public:
//
// GET /internal/artifacts/{sha256} (model bytes) and GET /internal/tokenizers/{sha256} (an
// uploaded tokenizer.json): only through a URL signed for one region with that region's secret
// (by the edge, or by the region's router for keep-warm loads; time-limited). Used when no R2
// S3 credentials are configured (edge/download-urls.ts says why both kinds exist).
//
// GET /r2/{bucket}/{key}: the local stand-in for R2's S3 endpoint (local mode, with
// R2_S3_ENDPOINT = PUBLIC_ORIGIN/r2 only): a SigV4 presigned GET, checked with the same
// credentials R2 would check it with, for the host the URL was signed for. In production these
// URLs go to R2 itself and the Worker serves no model bytes.
//
// Nodes verify the sha256 themselves after download. A single `Range: bytes=...` is answered
// with 206 and Content-Range, read from R2 by range, so a node resumes a cut download without
// fetching again what it has. The signature check comes first and is the same for a range: a
// range is no way around it (so the sha256 is a plain string here, looked at only after it).

import { MeshError } from "../../protocol/errors.js";
import { parseRange } from "../../protocol/http-range.js";
import { artifactKey, R2_STAND_IN_PATH, verifyPresignedGet } from "../../protocol/presign.js";
import { urlRegion, verifyUrl } from "../../protocol/signing.js";
import type { AppContext } from "../context.js";
import { verifyingSecrets } from "../env.js";
import { meshRoute, type MeshApp } from "../openapi.js";
import { tokenizerKey } from "../tokenizers.js";

/** A content-addressed file nodes fetch through a signed URL: what it is called, where it lives, its type. */
interface SignedFile {
  /** The path's first segment after /internal/ (artifacts, tokenizers). */
  route: string;
  /** For messages: "artifact", "tokenizer". */
  what: string;
  keyOf: (sha256: string) => string;
  contentType: string;
  summary: string;
}

const SIGNED_FILES: SignedFile[] = [
  { route: "artifacts", what: "artifact", keyOf: artifactKey, contentType: "application/octet-stream", summary: "Model bytes for nodes (signed, time-limited URL)" },
  { route: "tokenizers", what: "tokenizer", keyOf: tokenizerKey, contentType: "application/json", summary: "Tokenizer download for nodes (signed URL)" },
];

const internal = { method: "get", tag: "Internal", auth: "signed", internal: true } as const;

export function registerInternalArtifacts(app: MeshApp): void {
  for (const f of SIGNED_FILES) {
    app.openapi(
      meshRoute({
        ...internal,
        path: `/internal/${f.route}/{sha256}`,
        summary: f.summary,
        params: { sha256: "The file's sha256." },
        responses: { 200: { description: "The file's bytes (206 for a Range).", contentType: f.contentType } },
        errors: ["not_found"],
      }),
      async (c) => {
        // Signed for one region with that region's secret (download-urls.ts).
        const url = new URL(c.req.url);
        const check = await verifyUrl(verifyingSecrets(c.get("config"), urlRegion(url)), url);
        if (!check.ok) throw new MeshError("unauthorized", `${f.what} URL refused: ${check.reason}`);
        const sha = c.req.param("sha256");
        if (!/^[0-9a-f]{64}$/.test(sha)) throw new MeshError("not_found", `no such ${f.what}`);
        return serveObject(c, f.keyOf(sha), f);
      },
    );
  }

  app.openapi(
    meshRoute({
      ...internal,
      path: `${R2_STAND_IN_PATH}/*`,
      summary: "Local stand-in for R2's S3 endpoint: /r2/{bucket}/{key} through a SigV4 presigned URL",
      responses: { 200: { description: "The object's bytes (206 for a Range).", contentType: "application/octet-stream" } },
      errors: ["forbidden", "not_found"],
    }),
    async (c) => {
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
      return serveObject(c, decodeURIComponent(url.pathname.slice(prefix.length)), SIGNED_FILES[0]!);
    },
  );
}

/** One object of the ARTIFACTS bucket, whole or the one range the request asks for. */
async function serveObject(c: AppContext, key: string, f: Pick<SignedFile, "what" | "contentType">): Promise<Response> {
  const rangeHeader = c.req.header("range") ?? null;
  const missing = () => new MeshError("not_found", `no such ${f.what}`);
  if (rangeHeader) {
    const head = await c.env.ARTIFACTS.head(key);
    if (!head) throw missing();
    const range = parseRange(rangeHeader, head.size);
    if (range === "unsatisfiable") {
      // 416 has no code of its own in the envelope; the caller reads the size from Content-Range.
      throw new MeshError("bad_request", `range '${rangeHeader}' is outside the ${f.what}'s ${head.size} bytes`, { "content-range": `bytes */${head.size}` });
    }
    if (range) {
      const part = await c.env.ARTIFACTS.get(key, { range });
      if (!part) throw missing();
      return new Response(part.body, {
        status: 206,
        headers: {
          "content-type": f.contentType,
          "content-length": String(range.length),
          "content-range": `bytes ${range.offset}-${range.offset + range.length - 1}/${part.size}`,
          "accept-ranges": "bytes",
          "x-request-id": c.get("requestId"),
        },
      });
    }
  }
  const object = await c.env.ARTIFACTS.get(key);
  if (!object) throw missing();
  return new Response(object.body, {
    headers: {
      "content-type": f.contentType,
      "content-length": String(object.size),
      "accept-ranges": "bytes",
      "x-request-id": c.get("requestId"),
    },
  });
}
