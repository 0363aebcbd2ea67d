// Tokenizers for generative models, read from a Hugging Face `tokenizer.json` (the format of the
// `tokenizers` library), shared by the edge (which checks uploaded files) and the node (which runs
// them). Only the forms that can be reproduced exactly without the Rust library are accepted,
// and anything else is refused with a message that says what is missing:
//
//   model.type "BPE" with no normalizer and no pre-tokenizer, byte_fallback off, no subword
//   prefix/suffix, and a decoder that is absent (tokens joined with spaces, as the library does)
//   or "Fuse" (joined with nothing). With an empty merges list this is a
//   character-level vocabulary (what scripts/make-char-model.ts writes); with merges, the merges
//   are applied by rank over each run of text between added tokens, as the library does when
//   there is no pre-tokenizer.
//
// added_tokens are matched in the input first (longest first), as the library does, so a
// literal "<unk>" in a prompt encodes to the unk token. Pure TS: no Node-only imports.

/** A tokenizer.json that is not valid JSON of the expected shape. */
export class TokenizerError extends Error {
  override name = "TokenizerError";
}

/** A well-formed tokenizer.json in a form this module does not implement. */
export class UnsupportedTokenizerError extends TokenizerError {
  override name = "UnsupportedTokenizerError";
}

export interface DecodeOptions {
  /** Leave out tokens marked special in added_tokens (default false). */
  skipSpecialTokens?: boolean;
}

export interface Tokenizer {
  /** One more than the largest id in the vocabulary or added tokens. */
  readonly vocabSize: number;
  /** Id of the model's unk_token; null when it has none (unknown characters are then an error). */
  readonly unkId: number | null;
  /** Ids of added tokens marked special. */
  readonly specialIds: ReadonlySet<number>;
  encode(text: string): number[];
  decode(ids: readonly number[], opts?: DecodeOptions): string;
  /** The token string of an id; undefined for an id no token has. */
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
}

const SUPPORTED =
  'supported: model.type "BPE" with normalizer and pre_tokenizer null, byte_fallback false, ' +
  'no continuing_subword_prefix/end_of_word_suffix, and decoder null or "Fuse" ' +
  "(e.g. a character-level vocabulary with no merges)";

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function unsupported(why: string): UnsupportedTokenizerError {
  return new UnsupportedTokenizerError(`unsupported tokenizer.json: ${why}; ${SUPPORTED}`);
}

function invalid(why: string): TokenizerError {
  return new TokenizerError(`invalid tokenizer.json: ${why}`);
}

function typeOf(v: unknown): string {
  return isRecord(v) && typeof v.type === "string" ? `"${v.type}"` : JSON.stringify(v) ?? String(v);
}

function isId(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

/**
 * Reads a parsed tokenizer.json (pass the object, or its text). Throws TokenizerError for a
 * malformed file and UnsupportedTokenizerError for a form this module does not implement.
 */
export function loadTokenizer(json: unknown): Tokenizer {
  if (typeof json === "string") {
    try {
      json = JSON.parse(json) as unknown;
    } catch (err) {
      throw invalid(`not JSON (${(err as Error).message})`);
    }
  }
  if (!isRecord(json)) throw invalid("the top level is not an object");
  const model = json.model;
  if (!isRecord(model)) throw invalid("no `model` object");
  // Files from the library always say the type; a missing one means BPE there too.
  const type = model.type ?? "BPE";
  if (type !== "BPE") throw unsupported(`model.type ${JSON.stringify(type)}`);
  if (json.normalizer != null) throw unsupported(`normalizer ${typeOf(json.normalizer)}`);
  if (json.pre_tokenizer != null) throw unsupported(`pre_tokenizer ${typeOf(json.pre_tokenizer)}`);
  const decoder = json.decoder;
  if (decoder != null && !(isRecord(decoder) && decoder.type === "Fuse")) throw unsupported(`decoder ${typeOf(decoder)}`);
  if (model.byte_fallback === true) throw unsupported("byte_fallback true");
  if (model.continuing_subword_prefix != null && model.continuing_subword_prefix !== "") {
    throw unsupported("a continuing_subword_prefix");
  }
  if (model.end_of_word_suffix != null && model.end_of_word_suffix !== "") throw unsupported("an end_of_word_suffix");
  if (model.dropout != null && model.dropout !== 0) throw unsupported("BPE dropout");

  // Vocabulary.
  if (!isRecord(model.vocab)) throw invalid("model.vocab is not an object of token -> id");
  const vocab = new Map<string, number>();
  const tokens = new Map<number, string>();
  for (const [token, id] of Object.entries(model.vocab)) {
    if (!isId(id)) throw invalid(`model.vocab[${JSON.stringify(token)}] is not a non-negative integer id`);
    if (token === "") throw invalid("model.vocab has an empty token");
    if (tokens.has(id)) throw invalid(`id ${id} is given to both ${JSON.stringify(tokens.get(id))} and ${JSON.stringify(token)}`);
    vocab.set(token, id);
    tokens.set(id, token);
  }

  // Merges: "a b" strings (older files) or ["a", "b"] pairs (newer ones). Rank = position.
  const merges = new Map<string, number>();
  const rawMerges = model.merges ?? [];
  if (!Array.isArray(rawMerges)) throw invalid("model.merges is not a list");
  rawMerges.forEach((m: unknown, rank) => {
    let pair: [string, string];
    if (typeof m === "string") {
      const parts = m.split(" ");
      if (parts.length !== 2 || !parts[0] || !parts[1]) throw invalid(`merge ${rank} (${JSON.stringify(m)}) is not "left right"`);
      pair = [parts[0], parts[1]];
    } else if (Array.isArray(m) && m.length === 2 && typeof m[0] === "string" && typeof m[1] === "string") {
      pair = [m[0], m[1]];
    } else {
      throw invalid(`merge ${rank} is neither "left right" nor [left, right]`);
    }
    const key = pairKey(pair[0], pair[1]);
    if (!merges.has(key)) merges.set(key, rank);
  });

  // Added tokens: they can add ids of their own or mark vocabulary entries as special.
  const added: AddedToken[] = [];
  const rawAdded = json.added_tokens ?? [];
  if (!Array.isArray(rawAdded)) throw invalid("added_tokens is not a list");
  for (const [i, a] of rawAdded.entries()) {
    if (!isRecord(a) || !isId(a.id) || typeof a.content !== "string" || a.content === "") {
      throw invalid(`added_tokens[${i}] needs an integer id and a non-empty content`);
    }
    const owner = tokens.get(a.id);
    if (owner !== undefined && owner !== a.content) {
      throw invalid(`added token ${JSON.stringify(a.content)} has id ${a.id}, which the vocabulary gives to ${JSON.stringify(owner)}`);
    }
    const existing = vocab.get(a.content);
    if (existing !== undefined && existing !== a.id) {
      throw invalid(`added token ${JSON.stringify(a.content)} has id ${a.id} but the vocabulary says ${existing}`);
    }
    vocab.set(a.content, a.id);
    tokens.set(a.id, a.content);
    added.push({ id: a.id, content: a.content, special: a.special === true });
  }

  let unkId: number | null = null;
  if (model.unk_token != null) {
    if (typeof model.unk_token !== "string") throw invalid("model.unk_token is not a string");
    const id = vocab.get(model.unk_token);
    if (id === undefined) throw invalid(`model.unk_token ${JSON.stringify(model.unk_token)} is not in the vocabulary`);
    unkId = id;
  }
  if (tokens.size === 0) throw invalid("the vocabulary is empty");

  // Without a decoder the library joins token strings with spaces; "Fuse" joins them with nothing.
  const joiner = decoder == null ? " " : "";
  const specialIds = new Set(added.filter((a) => a.special).map((a) => a.id));
  const addedByLength = [...added].sort((a, b) => b.content.length - a.content.length || a.id - b.id);
  let vocabSize = 0;
  for (const id of tokens.keys()) vocabSize = Math.max(vocabSize, id + 1);

  /** BPE over one run of text (no added tokens in it). */
  function encodeRun(text: string, out: number[]): void {
    // Code points, so a character outside the BMP is one symbol, not two halves.
    let symbols = Array.from(text);
    if (merges.size > 0) {
      for (;;) {
        let best = -1;
        let bestRank = Infinity;
        for (let i = 0; i + 1 < symbols.length; i++) {
          const rank = merges.get(pairKey(symbols[i]!, symbols[i + 1]!));
          if (rank !== undefined && rank < bestRank) {
            bestRank = rank;
            best = i;
          }
        }
        if (best < 0) break;
        // The library merges every occurrence of the chosen pair, left to right, in one pass.
        const left = symbols[best]!;
        const right = symbols[best + 1]!;
        const next: string[] = [];
        for (let i = 0; i < symbols.length; i++) {
          if (i + 1 < symbols.length && symbols[i] === left && symbols[i + 1] === right) {
            next.push(left + right);
            i++;
          } else {
            next.push(symbols[i]!);
          }
        }
        symbols = next;
      }
    }
    for (const s of symbols) {
      const id = vocab.get(s);
      if (id !== undefined) out.push(id);
      else if (unkId !== null) out.push(unkId);
      else throw new TokenizerError(`cannot encode ${JSON.stringify(s)}: it is not in the vocabulary and the tokenizer has no unk_token`);
    }
  }

  return {
    vocabSize,
    unkId,
    specialIds,
    encode(text: string): number[] {
      const out: number[] = [];
      let start = 0;
      let i = 0;
      while (i < text.length) {
        const hit = addedByLength.find((a) => text.startsWith(a.content, i));
        if (hit) {
          if (i > start) encodeRun(text.slice(start, i), out);
          out.push(hit.id);
          i += hit.content.length;
          start = i;
        } else {
          i++;
        }
      }
      if (start < text.length) encodeRun(text.slice(start), out);
      return out;
    },
    decode(ids: readonly number[], opts: DecodeOptions = {}): string {
      const parts: string[] = [];
      for (const id of ids) {
        const token = tokens.get(id);
        if (token === undefined) throw new TokenizerError(`cannot decode id ${id}: no token has it`);
        if (opts.skipSpecialTokens && specialIds.has(id)) continue;
        parts.push(token);
      }
      return parts.join(joiner);
    },
    idToToken: (id) => tokens.get(id),
    tokenToId: (token) => vocab.get(token),
  };
}

function pairKey(left: string, right: string): string {
  // U+0000 cannot be part of a merge (merges are space-separated, tokens non-empty) in practice,
  // and it keeps "a b"+"c" apart from "a"+"b c".
  return `${left}\u0000${right}`;
}
