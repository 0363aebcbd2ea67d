// A model's text side on the node: its tokenizer, chat template and stop ids. Tokenizers are of
// two kinds behind one interface (formats/tokenizer.ts's Tokenizer):
//  - the exact, dependency-free one in protocol/ for the forms it implements (character-level
//    vocabularies such as demo-chat's, plain BPE): the edge checks uploads with the same code;
//  - Hugging Face's own JS port (@huggingface/tokenizers) for everything else a real LLM ships:
//    normalizers, pre-tokenizers, byte-level BPE, added and special tokens.
// And a bundle's text side (tokenizer.json, tokenizer_config.json's chat template through
// @huggingface/jinja, config.json and generation_config.json's eos ids), read from the files the
// `load` frame wrote beside the graph.

import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer as HfTokenizerImpl } from "@huggingface/tokenizers";
/** One chat message (protocol/messages.ts has the same shape on the wire). */
export interface ChatMessage {
  role: string;
  content: string;
}
import { loadTokenizer, TokenizerError, UnsupportedTokenizerError, type DecodeOptions, type Tokenizer } from "../formats/tokenizer.js";

type Json = Record<string, unknown>;

function isRecord(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** A tokenizer.json run by @huggingface/tokenizers, seen through the node's Tokenizer interface. */
export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly unkId: number | null;
  readonly specialIds: ReadonlySet<number>;
  private readonly impl: HfTokenizerImpl;

  constructor(json: Json, config: Json = {}) {
    try {
      this.impl = new HfTokenizerImpl(json, config);
    } catch (err) {
      throw new TokenizerError(`invalid tokenizer.json: ${(err as Error).message}`);
    }
    let max = -1;
    for (const id of this.impl.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    const model = isRecord(json.model) ? json.model : {};
    const unk = typeof model.unk_token === "string" ? this.impl.token_to_id(model.unk_token) : undefined;
    this.unkId = unk ?? null;
    const special = new Set<number>();
    for (const [id, t] of this.impl.get_added_tokens_decoder()) if (t.special) special.add(id);
    this.specialIds = special;
  }

  /** Text to ids; `addSpecialTokens` false for text that spells its special tokens itself (a rendered chat). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.impl.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    if (ids.length === 0) return ""; // the library refuses an empty list
    return this.impl.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false, clean_up_tokenization_spaces: false });
  }

  idToToken(id: number): string | undefined {
    return this.impl.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.impl.token_to_id(token);
  }
}

/**
 * Reads a tokenizer.json: the exact implementation in protocol/ when it supports the form, the
 * Hugging Face library otherwise. `config`: the bundle's tokenizer_config.json, if any.
 */
export function loadAnyTokenizer(json: unknown, config: Json = {}): Tokenizer {
  const parsed: unknown = typeof json === "string" ? parseJson(json, "tokenizer.json") : json;
  try {
    return loadTokenizer(parsed);
  } catch (err) {
    if (!(err instanceof UnsupportedTokenizerError)) throw err;
  }
  if (!isRecord(parsed)) throw new TokenizerError("invalid tokenizer.json: not a JSON object");
  return new HfTokenizer(parsed, config);
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new TokenizerError(`invalid ${what}: ${(err as Error).message}`);
  }
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken object with `content`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isRecord(v) && typeof v.content === "string") return v.content;
  return undefined;
}

function ids(v: unknown): number[] {
  const list = Array.isArray(v) ? v : [v];
  return list.filter((x): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0);
}

/** What a generation needs of a model's text side. */
export interface TextSide {
  tokenizer: Tokenizer;
  /** The prompt's ids: a plain prompt as the tokenizer encodes it, a chat rendered through the template first. */
  encodePrompt(prompt: string, chat?: readonly ChatMessage[]): number[];
  /** Ids that end a generation (not emitted): eos ids of generation_config.json, config.json and tokenizer_config.json. */
  stopTokenIds: number[];
}

/** Renders a chat through a Jinja chat template the way transformers' apply_chat_template does. */
export class ChatTemplate {
  private readonly template: Template;

  constructor(
    source: string,
    private readonly specials: { bos_token?: string; eos_token?: string; pad_token?: string; unk_token?: string },
  ) {
    try {
      this.template = new Template(source);
    } catch (err) {
      throw new TokenizerError(`the chat template does not parse: ${(err as Error).message}`);
    }
  }

  render(messages: readonly ChatMessage[]): string {
    try {
      return this.template.render({ messages, add_generation_prompt: true, ...this.specials });
    } catch (err) {
      throw new TokenizerError(`the chat template failed: ${(err as Error).message}`);
    }
  }
}

/** A text side from parsed files (tokenizer.json and the optional others). */
export function makeTextSide(files: { tokenizer: unknown; tokenizerConfig?: unknown; config?: unknown; generationConfig?: unknown }): TextSide {
  const tc = isRecord(files.tokenizerConfig) ? files.tokenizerConfig : {};
  const tokenizer = loadAnyTokenizer(files.tokenizer, tc);
  const specials: Record<string, string> = {};
  for (const k of ["bos_token", "eos_token", "pad_token", "unk_token"]) {
    const t = tokenText(tc[k]);
    if (t !== undefined) specials[k] = t;
  }
  const template = typeof tc.chat_template === "string" ? new ChatTemplate(tc.chat_template, specials) : null;
  const stop = new Set<number>();
  for (const src of [files.generationConfig, files.config]) if (isRecord(src)) for (const id of ids(src.eos_token_id)) stop.add(id);
  const eos = specials.eos_token !== undefined ? tokenizer.tokenToId(specials.eos_token) : undefined;
  if (eos !== undefined) stop.add(eos);
  const encodeRaw = (text: string, addSpecial: boolean) =>
    tokenizer instanceof HfTokenizer ? tokenizer.encode(text, addSpecial) : tokenizer.encode(text);
  return {
    tokenizer,
    stopTokenIds: [...stop],
    encodePrompt(prompt, chat) {
      if (!chat) return encodeRaw(prompt, true);
      if (!template) throw new TokenizerError("the model has no chat template (tokenizer_config.json's chat_template); send a prompt");
      // The rendered text spells its special tokens (bos, <|im_start|> ...): add none of the post-processor's.
      return encodeRaw(template.render(chat), false);
    },
  };
}

/** Bundle files the node reads beside the graph; tokenizer.json alone is required. */
export const BUNDLE_TEXT_FILES = ["tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"] as const;

/** A version's text side from its directory; null when the bundle ships no tokenizer.json. */
export async function loadBundleTextSide(dir: string): Promise<TextSide | null> {
  const read = async (name: string): Promise<unknown> => {
    let text: string;
    try {
      text = await readFile(join(dir, name), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return parseJson(text, name);
  };
  const [tokenizer, tokenizerConfig, config, generationConfig] = await Promise.all(BUNDLE_TEXT_FILES.map(read));
  if (tokenizer === undefined) return null;
  return makeTextSide({ tokenizer, tokenizerConfig, config, generationConfig });
}

/** A plain tokenizer (an uploaded tokenizer.json, demo-chat's) as a text side: no template, no eos. */
export function plainTextSide(tokenizer: Tokenizer): TextSide {
  return {
    tokenizer,
    stopTokenIds: [],
    encodePrompt(prompt, chat) {
      if (chat) throw new TokenizerError("the model has no chat template; send a prompt");
      return tokenizer.encode(prompt);
    },
  };
}
