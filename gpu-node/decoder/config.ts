// What the decode engine must know about a KV-cache decoder before its first run: the numbers
// from the bundle's config.json (layers, KV heads, head size, context limit, end-of-sequence ids)
// and the graph's names for token ids, mask, positions, logits and each layer's past/present
// key and value (the Hugging Face / optimum layout), with the KV element type (float32 or
// float16) read from the session's metadata where onnxruntime gives it, else config.json's
// `torch_dtype`.

import type * as ort from "onnxruntime-node";

/** What the engine needs of a session; a real ort.InferenceSession fits. */
export type DecoderSession = Pick<ort.InferenceSession, "inputNames" | "outputNames" | "run"> &
  Partial<Pick<ort.InferenceSession, "inputMetadata" | "outputMetadata">>;

export class DecoderError extends Error {
  override name = "DecoderError";
}

export interface DecoderConfig {
  numLayers: number;
  numKvHeads: number;
  headDim: number;
  vocabSize: number;
  /** The longest context (prompt + generated) the model has positions for. */
  maxPositions: number;
  /** generation_config.json's eos_token_id, else config.json's: the default stop ids. */
  eosTokenIds: number[];
  torchDtype?: string;
}

export type KvType = "float32" | "float16";

export interface KvNames {
  key: string;
  value: string;
}

export interface DecoderLayout {
  inputIds: string;
  attentionMask: string;
  positionIds: string | null;
  logits: string;
  past: KvNames[];
  present: KvNames[];
  kvType: KvType;
}

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v === "string") {
    try {
      v = JSON.parse(v);
    } catch {
      throw new DecoderError(`${what} is not JSON`);
    }
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new DecoderError(`${what} is not a JSON object`);
  return v as Record<string, unknown>;
}

function positiveInt(o: Record<string, unknown>, keys: string[], what: string): number | undefined {
  for (const k of keys) {
    const v = o[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) throw new DecoderError(`${what}: ${k} must be a positive integer`);
    return v;
  }
  return undefined;
}

function tokenIds(v: unknown): number[] | undefined {
  if (v === undefined || v === null) return undefined;
  const list = Array.isArray(v) ? v : [v];
  if (!list.every((x) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0)) {
    throw new DecoderError("eos_token_id must be a token id or a list of them");
  }
  return list as number[];
}

/**
 * Reads config.json (and generation_config.json, whose eos_token_id wins when present). Both may
 * be given as JSON text or parsed objects. GPT-2-style names (n_layer, n_head, n_embd,
 * n_positions) are accepted beside the Llama-style ones.
 */
export function parseDecoderConfig(configJson: unknown, generationConfigJson?: unknown): DecoderConfig {
  const c = asObject(configJson, "config.json");
  const g = generationConfigJson === undefined || generationConfigJson === null ? {} : asObject(generationConfigJson, "generation_config.json");
  const numLayers = positiveInt(c, ["num_hidden_layers", "n_layer", "num_layers"], "config.json");
  const numHeads = positiveInt(c, ["num_attention_heads", "n_head"], "config.json");
  const hidden = positiveInt(c, ["hidden_size", "n_embd"], "config.json");
  const vocabSize = positiveInt(c, ["vocab_size"], "config.json");
  const maxPositions = positiveInt(c, ["max_position_embeddings", "n_positions", "n_ctx"], "config.json");
  if (numLayers === undefined || numHeads === undefined || vocabSize === undefined || maxPositions === undefined) {
    throw new DecoderError("config.json needs num_hidden_layers, num_attention_heads, vocab_size and max_position_embeddings");
  }
  const numKvHeads = positiveInt(c, ["num_key_value_heads"], "config.json") ?? numHeads;
  let headDim = positiveInt(c, ["head_dim"], "config.json");
  if (headDim === undefined) {
    if (hidden === undefined || hidden % numHeads !== 0) throw new DecoderError("config.json needs head_dim (or a hidden_size divisible by num_attention_heads)");
    headDim = hidden / numHeads;
  }
  const eosTokenIds = tokenIds(g["eos_token_id"]) ?? tokenIds(c["eos_token_id"]) ?? [];
  const torchDtype = typeof c["torch_dtype"] === "string" ? c["torch_dtype"] : undefined;
  return { numLayers, numKvHeads, headDim, vocabSize, maxPositions, eosTokenIds, ...(torchDtype ? { torchDtype } : {}) };
}

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;

/** True when the session takes a KV cache in the Hugging Face layout (past_key_values.0.key). */
export function isKvDecoder(session: Pick<ort.InferenceSession, "inputNames">): boolean {
  return session.inputNames.includes("past_key_values.0.key");
}

function metadataType(list: readonly ort.InferenceSession.ValueMetadata[] | undefined, name: string): string | undefined {
  const m = list?.find((x) => x.name === name);
  return m && m.isTensor ? m.type : undefined;
}

/**
 * Finds the graph's names and checks they agree with config.json: every layer 0..L-1 has a past
 * key and value input and a present key and value output, and nothing else is asked for.
 */
export function detectLayout(session: DecoderSession, config: DecoderConfig): DecoderLayout {
  const inputs = new Set(session.inputNames);
  const outputs = new Set(session.outputNames);
  for (const need of ["input_ids", "attention_mask"]) {
    if (!inputs.has(need)) throw new DecoderError(`the model has no '${need}' input (inputs: ${[...inputs].join(", ")})`);
  }
  if (!outputs.has("logits")) throw new DecoderError(`the model has no 'logits' output (outputs: ${[...outputs].join(", ")})`);
  const past: KvNames[] = [];
  const present: KvNames[] = [];
  for (let i = 0; i < config.numLayers; i++) {
    const p = { key: `past_key_values.${i}.key`, value: `past_key_values.${i}.value` };
    const q = { key: `present.${i}.key`, value: `present.${i}.value` };
    for (const n of [p.key, p.value]) if (!inputs.has(n)) throw new DecoderError(`the model has no '${n}' input, but config.json says ${config.numLayers} layers`);
    for (const n of [q.key, q.value]) if (!outputs.has(n)) throw new DecoderError(`the model has no '${n}' output, but config.json says ${config.numLayers} layers`);
    past.push(p);
    present.push(q);
  }
  const known = new Set(["input_ids", "attention_mask", "position_ids", ...past.flatMap((p) => [p.key, p.value])]);
  const extra = [...inputs].filter((n) => !known.has(n));
  if (extra.length > 0) {
    const layers = extra.filter((n) => PAST.test(n));
    throw new DecoderError(
      layers.length > 0
        ? `the model has more layers than config.json's ${config.numLayers} (${layers[0]})`
        : `the model has inputs the decoder cannot fill: ${extra.join(", ")}`,
    );
  }
  let kvType: KvType;
  const t = metadataType(session.inputMetadata, past[0]?.key ?? "");
  if (t === "float16" || t === "float32") kvType = t;
  else if (t !== undefined) throw new DecoderError(`the KV cache has type ${t}; float32 and float16 are supported`);
  else kvType = config.torchDtype === "float16" ? "float16" : "float32";
  return { inputIds: "input_ids", attentionMask: "attention_mask", positionIds: inputs.has("position_ids") ? "position_ids" : null, logits: "logits", past, present, kvType };
}
