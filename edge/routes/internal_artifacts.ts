// GET /internal/artifacts/{sha256}: model bytes for nodes, only through a URL signed for one
// region with that region's secret (by the edge, or by the region's router for keep-warm loads;
// time-limited); nodes verify the sha256 themselves after download.

import type { Hono } from "hono";
import { MeshError } from "../../protocol/errors.js";
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
    const object = await c.env.ARTIFACTS.get(artifactKey(sha));
    if (!object) throw new MeshError("not_found", "no such artifact");
    return new Response(object.body, {
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(object.size),
        "x-request-id": c.get("requestId"),
      },
    });
  });
}
