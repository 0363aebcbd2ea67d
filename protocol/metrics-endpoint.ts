// What the router's and the node's `GET /metrics` share: the credential check (an internal
// endpoint: `Authorization: Bearer <METRICS_TOKEN>`, constant-time compare; no token configured
// means the endpoint is off and answers 404) and the bound on per-model label values (series
// exist only for the models the process holds now, at most MAX_MODEL_SERIES of them).

import { MeshError } from "./errors.js";
import { timingSafeEqual } from "hono/utils/buffer";

/** Per-model series a process keeps at most; further models share the label value "other". */
export const MAX_MODEL_SERIES = 200;
export const OTHER_MODEL = "other";

/** Why a scrape is refused (the caller answers it with the error envelope), or null: serve it. */
export async function refuseMetrics(authorization: string | null | undefined, token: string | null): Promise<MeshError | null> {
  if (!token) return new MeshError("not_found", "metrics are off here (METRICS_TOKEN is not set)");
  const given = /^Bearer\s+(\S+)$/i.exec((authorization ?? "").trim())?.[1] ?? "";
  if (!given || !(await timingSafeEqual(given, token))) {
    return new MeshError("unauthorized", "a valid metrics token is required (Authorization: Bearer <METRICS_TOKEN>)", { "www-authenticate": "Bearer" });
  }
  return null;
}

/**
 * The model label values a process has used, bounded: `label(key)` is the value to record
 * under (the key, or "other" past the cap); `prune(held)` drops every series of a model no
 * longer held, through `remove`, so unloaded models leave the exposition.
 */
export class ModelLabels {
  private readonly used = new Set<string>();

  constructor(
    private readonly remove: (model: string) => void,
    private readonly cap = MAX_MODEL_SERIES,
  ) {}

  label(key: string): string {
    if (this.used.has(key)) return key;
    if (this.used.size >= this.cap) return OTHER_MODEL;
    this.used.add(key);
    return key;
  }

  prune(held: ReadonlySet<string>): void {
    for (const key of this.used) {
      if (held.has(key)) continue;
      this.used.delete(key);
      this.remove(key);
    }
  }
}
