// Tokenizers of model versions: a version of a generative model ships a tokenizer.json (stored
// in R2 under its sha256, recorded on the version row once; versions are immutable, so is their
// tokenizer). The data plane looks the record up here through an isolate cache: a present
// tokenizer never changes, so it is kept; "none yet" is kept only briefly. The upload itself is
// model-versions.ts's attachTokenizer.

import { and, eq } from "drizzle-orm";
import type { DrizzleD1Database } from "drizzle-orm/d1";
import type { ModelSignature } from "../formats/datatypes.js";
import { modelVersions } from "../schema/schema.js";

export interface TokenizerInfo {
  sha256: string;
  size: number;
}

export const MAX_TOKENIZER_BYTES = 32 * 1024 * 1024;
const ABSENT_TTL_MS = 2_000;
const MAX_ENTRIES = 10_000;

export function tokenizerKey(sha256: string): string {
  return `tokenizers/${sha256}.json`;
}

const known = new Map<string, TokenizerInfo>();
const absent = new Map<string, number>();

const cacheKey = (modelId: string, version: number) => `${modelId}@${version}`;

export async function versionTokenizer(db: DrizzleD1Database, modelId: string, version: number): Promise<TokenizerInfo | null> {
  const k = cacheKey(modelId, version);
  const hit = known.get(k);
  if (hit) return hit;
  const until = absent.get(k);
  if (until !== undefined && until > Date.now()) return null;
  const row = await db
    .select({ sha256: modelVersions.tokenizerSha256, size: modelVersions.tokenizerSize })
    .from(modelVersions)
    .where(and(eq(modelVersions.modelId, modelId), eq(modelVersions.version, version)))
    .get();
  if (row?.sha256 && row.size !== null && row.size !== undefined) {
    if (known.size >= MAX_ENTRIES) known.clear();
    const info = { sha256: row.sha256, size: row.size };
    known.set(k, info);
    absent.delete(k);
    return info;
  }
  if (absent.size >= MAX_ENTRIES) absent.clear();
  absent.set(k, Date.now() + ABSENT_TTL_MS);
  return null;
}

/** After an upload in this isolate: seen at once here (other isolates within ABSENT_TTL_MS). */
export function noteTokenizer(modelId: string, version: number, info: TokenizerInfo): void {
  known.set(cacheKey(modelId, version), info);
  absent.delete(cacheKey(modelId, version));
}

/**
 * Whether a signature is that of a decoder language model the node's token loop can run
 * (the same rules as gpu-node/full-context-generator.ts's languageModelIo): one INT64 token-id input of rank
 * 2 (plus optional attention_mask and position_ids, and a KV cache's past_key_values.* in the
 * Hugging Face export layout), logits of rank 3 in a float type. Returns the problem, or null,
 * and the vocabulary size the logits declare (null when dynamic).
 */
export function generativeSignature(sig: ModelSignature): { problem: string | null; vocab: number | null } {
  const extras = ["attention_mask", "position_ids"];
  const ids = sig.inputs.filter((t) => !extras.includes(t.name) && !t.name.startsWith("past_key_values."));
  const input = ids.find((t) => t.name === "input_ids") ?? (ids.length === 1 ? ids[0] : undefined);
  if (!input || ids.length !== 1) {
    return { problem: `a generative model takes one token-id input (input_ids) besides attention_mask and position_ids; this one takes ${sig.inputs.map((t) => t.name).join(", ") || "none"}`, vocab: null };
  }
  if (input.datatype !== "INT64" || input.shape.length !== 2) {
    return { problem: `input '${input.name}' must be INT64 [1, T] token ids; it is ${input.datatype} [${input.shape.join(", ")}]`, vocab: null };
  }
  const logits = sig.outputs.find((t) => t.name === "logits") ?? sig.outputs[0];
  if (!logits) return { problem: "the model has no outputs", vocab: null };
  if (!["FP32", "FP16", "FP64"].includes(logits.datatype) || logits.shape.length !== 3) {
    return { problem: `output '${logits.name}' must be float logits [1, T, V]; it is ${logits.datatype} [${logits.shape.join(", ")}]`, vocab: null };
  }
  const v = logits.shape[2]!;
  return { problem: null, vocab: v > 0 ? v : null };
}
