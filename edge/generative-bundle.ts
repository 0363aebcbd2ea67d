// Generative bundles: a version whose bundle carries a Hugging Face tokenizer.json (and, if it
// likes, tokenizer_config.json with a chat template, config.json, generation_config.json,
// special_tokens_map.json) generates text without a separately uploaded tokenizer. The files
// travel to the node like ONNX data files (ModelRef.files, written beside the graph), where the
// node reads them. Here: the check a version's named files get before the version is recorded
// (bounded, JSON of the expected shape), and what the data plane asks of a version (its bundled
// tokenizer, whether it has a chat template).

import { MeshError } from "../protocol/errors.js";
import type { BundleFile } from "../protocol/messages.js";
import type { VersionInfo } from "./model-registry.js";
import { MAX_TOKENIZER_BYTES } from "./tokenizers.js";

const KIB = 1024;

/** The Hugging Face files a bundle may carry besides ONNX data, with the most bytes each may have. */
export const GENERATIVE_FILES: Readonly<Record<string, number>> = {
  "tokenizer.json": MAX_TOKENIZER_BYTES,
  "tokenizer_config.json": 1024 * KIB,
  "config.json": 256 * KIB,
  "generation_config.json": 64 * KIB,
  "special_tokens_map.json": 64 * KIB,
};

/** The name a bundle's tokenizer must have for the version to generate with it. */
export const BUNDLE_TOKENIZER = "tokenizer.json";
const TOKENIZER_CONFIG = "tokenizer_config.json";

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => typeof v === "object" && v !== null && !Array.isArray(v);

function bad(name: string, why: string): MeshError {
  return new MeshError("invalid_model_file", `bundle file '${name}': ${why}`);
}

/** Checks one known file's parsed JSON; throws invalid_model_file naming what is wrong. */
function checkShape(name: string, json: unknown): void {
  if (!isRec(json)) throw bad(name, "must be a JSON object");
  switch (name) {
    case "tokenizer.json": {
      const model = json.model;
      if (!isRec(model)) throw bad(name, "has no 'model' object (not a Hugging Face tokenizers file)");
      if (model.type !== undefined && typeof model.type !== "string") throw bad(name, "'model.type' must be a string");
      if (!isRec(model.vocab) && !Array.isArray(model.vocab)) throw bad(name, "'model.vocab' must be an object or a list");
      if (json.added_tokens !== undefined && !Array.isArray(json.added_tokens)) throw bad(name, "'added_tokens' must be a list");
      for (const k of ["normalizer", "pre_tokenizer", "post_processor", "decoder"]) {
        if (json[k] !== undefined && json[k] !== null && !isRec(json[k])) throw bad(name, `'${k}' must be an object or null`);
      }
      return;
    }
    case "tokenizer_config.json": {
      const t = json.chat_template;
      // transformers also allows a list of named templates; the node renders one string.
      if (t !== undefined && t !== null && typeof t !== "string") throw bad(name, "'chat_template' must be a string");
      return;
    }
    case "config.json":
    case "generation_config.json":
      for (const k of ["vocab_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size", "head_dim", "max_position_embeddings", "max_new_tokens"]) {
        const v = json[k];
        if (v !== undefined && v !== null && (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)) throw bad(name, `'${k}' must be a non-negative integer`);
      }
      return;
    default:
      return;
  }
}

/**
 * Checks a bundle's Hugging Face files (those of GENERATIVE_FILES; other names are data files,
 * not read here): each at most its bound, UTF-8 JSON of the expected shape. `keyOf` is where the
 * bytes are in the bucket (bundle files are content-addressed like artifacts).
 */
export async function checkGenerativeFiles(bucket: R2Bucket, files: readonly BundleFile[], keyOf: (sha256: string) => string): Promise<void> {
  for (const f of files) {
    const max = GENERATIVE_FILES[f.name];
    if (max === undefined) continue;
    if (f.size > max) throw bad(f.name, `is ${f.size} bytes; at most ${max} are accepted`);
    const obj = await bucket.get(keyOf(f.sha256));
    if (!obj) throw new MeshError("bad_request", `bundle file '${f.name}' is missing from storage`);
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(await obj.arrayBuffer()));
    } catch {
      throw bad(f.name, "is not UTF-8 JSON");
    }
    checkShape(f.name, json);
  }
}

/** The version's bundled tokenizer.json, if its bundle has one. */
export function bundleTokenizer(version: Pick<VersionInfo, "files">): BundleFile | undefined {
  return version.files?.find((f) => f.name === BUNDLE_TOKENIZER);
}

/** Whether a tokenizer_config.json (by sha256) has a chat template: its bytes never change, so kept. */
const templates = new Map<string, boolean>();
const MAX_TEMPLATE_ENTRIES = 10_000;

/**
 * Whether the version's bundle has a chat template (tokenizer_config.json's `chat_template`):
 * then the node renders chats itself; otherwise the edge writes a plain prompt.
 */
export async function hasChatTemplate(bucket: R2Bucket, version: Pick<VersionInfo, "files">, keyOf: (sha256: string) => string): Promise<boolean> {
  const f = version.files?.find((x) => x.name === TOKENIZER_CONFIG);
  if (!f || !bundleTokenizer(version)) return false;
  const known = templates.get(f.sha256);
  if (known !== undefined) return known;
  const obj = await bucket.get(keyOf(f.sha256));
  let has = false;
  if (obj) {
    try {
      const json = JSON.parse(await obj.text()) as unknown;
      has = isRec(json) && typeof json.chat_template === "string" && json.chat_template.length > 0;
    } catch {
      has = false; // checked when the version was recorded; unreadable now means no template
    }
  }
  if (templates.size >= MAX_TEMPLATE_ENTRIES) templates.clear();
  templates.set(f.sha256, has);
  return has;
}
