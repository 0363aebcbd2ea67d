// GET /internal/artifacts/{sha256}: model bytes for nodes, only through a URL signed for one
// region with that region's secret (by the edge, or by the region's router for keep-warm loads;
// time-limited); nodes verify the sha256 themselves after download.
//
// A single `Range: bytes=...` is answered with 206 and Content-Range, read from R2 by range, so
// a node resumes a cut download without fetching again what it has. The signed-URL check comes
// first and is the same for a range: a range is no way around it.

import type { Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
import { parseRange } from "../../protocol/http-range.js";
import { urlRegion, verifyUrl } from "../../protocol/signing.js";
import type { AppEnv } from "../context.js";
import { verifyingSecrets } from "../env.js";
import { artifactKey } from "./v1_models.js";

export function registerInternalArtifacts(app: Hono<AppEnv>): void {
  app.get("/internal/artifacts/:sha256", async (c) => {
    const url = new URL(c.req.url);
    const check = await verifyUrl(verifyingSecrets(c.get("config"), urlRegion(url)), url);
    if (!check.ok) throw new MeshError("unauthorized", `artifact URL refused: ${check.reason}`);
    const sha = c.req.param("sha256");
    if (!/^[0-9a-f]{64}$/.test(sha)) throw new MeshError("not_found", "no such artifact");
    const key = artifactKey(sha);
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
  });
}
