// How a zod refusal reads in a 400: the first few problems, each with where it is. One
// formatter for every schema the edge checks requests with (routes' validators, the infer
// route's InferRequestSchema); Node-free and import-free so benches can load it too.

import type { z } from "zod";

/** A zod refusal as one 400 message: the first few problems, each with its path under `what`. */
export function zodProblems(error: z.ZodError, what = "body"): string {
  return error.issues
    .slice(0, 3)
    .map((i) => {
      const path = i.path.length ? i.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("") : "";
      return `${what}${path}: ${i.message}`;
    })
    .join("; ");
}

