// Builds demo-chat: a character-level bigram language model trained (by counting) on the text
// in scripts/corpus/tiny-corpus.txt, exported the way exported decoder language models look:
//
//   input_ids INT64 [1, sequence]  --Gather(log_probs [V, V], axis 0)-->  logits FP32 [1, sequence, V]
//
// so logits[0, t, :] = log P(next character | character at t). One ONNX op, no weights beyond
// the table. Next to it goes its tokenizer as a Hugging Face tokenizer.json: a BPE model with no
// merges (each character of the vocabulary is one token), an "<unk>" added token (id 0) for
// characters the corpus never had, and a "Fuse" decoder (tokens are joined with nothing).
//
// Smoothing: P(n | c) = (count(c, n) + B * P(n)) / (count(c) + B), with P(n) the corpus unigram
// distribution and B = SMOOTHING, so every real character has a finite log-probability and a
// character never seen before anything falls back to the unigram distribution. "<unk>" is
// never predicted: its column holds LOG_ZERO, a finite stand-in for log 0 (finite so the
// logits survive JSON). The "<unk>" row (the model given an unknown character) is the unigram
// distribution. Everything is computed in float64 from the corpus, so the files are
// deterministic.
//
// Run: npx tsx scripts/make-char-model.ts [dir]   (default dir: .mesh/models)

import { mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { encodeModel, OnnxType, type ModelDesc } from "./onnx-writer.js";

export const DEMO_CHAT_NAME = "demo-chat";
export const DEMO_CHAT_VERSION = "1";
export const CHAR_MODEL_FILE = `${DEMO_CHAT_NAME}.v${DEMO_CHAT_VERSION}.onnx`;
export const CHAR_TOKENIZER_FILE = `${DEMO_CHAT_NAME}.tokenizer.json`;
/** The text the model is counted from. */
export const CORPUS_PATH = fileURLToPath(new URL("./corpus/tiny-corpus.txt", import.meta.url));
export const UNK_TOKEN = "<unk>";
export const UNK_ID = 0;
/** Pseudo-count of the unigram prior in each row. */
export const SMOOTHING = 0.5;
/** What the table holds for "impossible" (the unk column): a finite log 0. */
export const LOG_ZERO = -100;

export interface CharModel {
  /** Token strings by id: "<unk>" then the corpus's distinct characters in code point order. */
  vocab: string[];
  /** [V * V], row-major: logProbs[c * V + n] = log P(n | c), float64 before rounding to float32. */
  logProbs: Float64Array;
  /** The ONNX graph. */
  model: ModelDesc;
  /** The tokenizer.json object. */
  tokenizer: Record<string, unknown>;
}

/** Corpus text as the model sees it: line endings made "\n". */
export function normalizeCorpus(text: string): string {
  return text.replace(/\r\n?/g, "\n");
}

export async function readCorpus(file = CORPUS_PATH): Promise<string> {
  return normalizeCorpus(await readFile(file, "utf8"));
}

/** Counts the bigram model from a corpus; pure, so tests can rebuild it independently. */
export function buildCharModel(corpus: string): CharModel {
  const chars = Array.from(normalizeCorpus(corpus));
  if (chars.length < 2) throw new Error("the corpus needs at least two characters");
  // Code point order (not UTF-16 order), so the vocabulary is the same on every platform.
  const distinct = [...new Set(chars)].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!);
  const vocab = [UNK_TOKEN, ...distinct];
  const V = vocab.length;
  const id = new Map(vocab.map((t, i) => [t, i]));

  const unigram = new Float64Array(V);
  for (const c of chars) unigram[id.get(c)!]! += 1;
  const unigramP = unigram.map((n) => n / chars.length);

  const pair = new Float64Array(V * V);
  const rowTotal = new Float64Array(V);
  for (let i = 0; i + 1 < chars.length; i++) {
    const c = id.get(chars[i]!)!;
    const n = id.get(chars[i + 1]!)!;
    pair[c * V + n]! += 1;
    rowTotal[c]! += 1;
  }

  const logProbs = new Float64Array(V * V);
  for (let c = 0; c < V; c++) {
    for (let n = 0; n < V; n++) {
      let lp: number;
      if (n === UNK_ID) lp = LOG_ZERO;
      else if (c === UNK_ID) lp = Math.log(unigramP[n]!);
      else lp = Math.log((pair[c * V + n]! + SMOOTHING * unigramP[n]!) / (rowTotal[c]! + SMOOTHING));
      logProbs[c * V + n] = lp;
    }
  }

  const model: ModelDesc = {
    producerVersion: DEMO_CHAT_VERSION,
    docString:
      `demo-chat version ${DEMO_CHAT_VERSION}: character bigram language model (vocabulary ${V}), ` +
      "logits[0, t, :] = log P(next character | input_ids[0, t])",
    graph: {
      name: "demo_chat",
      initializers: [{ name: "log_probs", elemType: OnnxType.FLOAT, dims: [V, V], values: logProbs }],
      nodes: [
        {
          opType: "Gather",
          name: "next_char_log_probs",
          inputs: ["log_probs", "input_ids"],
          outputs: ["logits"],
          attributes: [{ name: "axis", i: 0 }],
        },
      ],
      inputs: [{ name: "input_ids", elemType: OnnxType.INT64, shape: [1, "sequence"] }],
      outputs: [{ name: "logits", elemType: OnnxType.FLOAT, shape: [1, "sequence", V] }],
    },
  };

  const tokenizer: Record<string, unknown> = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [
      { id: UNK_ID, content: UNK_TOKEN, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    ],
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: { type: "Fuse" },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: UNK_TOKEN,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(vocab.map((t, i) => [t, i])),
      merges: [],
    },
  };

  return { vocab, logProbs, model, tokenizer };
}

export interface CharModelFiles {
  /** Absolute path of `demo-chat.v1.onnx`. */
  modelPath: string;
  /** Absolute path of `demo-chat.tokenizer.json`. */
  tokenizerPath: string;
  vocabSize: number;
}

/** Writes `demo-chat.v1.onnx` and `demo-chat.tokenizer.json` into dir (created if missing). */
export async function makeCharModel(dir: string, corpusFile = CORPUS_PATH): Promise<CharModelFiles> {
  const root = path.resolve(dir);
  await mkdir(root, { recursive: true });
  const built = buildCharModel(await readCorpus(corpusFile));
  const modelPath = path.join(root, CHAR_MODEL_FILE);
  const tokenizerPath = path.join(root, CHAR_TOKENIZER_FILE);
  await writeFile(modelPath, encodeModel(built.model));
  await writeFile(tokenizerPath, `${JSON.stringify(built.tokenizer, null, 2)}\n`);
  return { modelPath, tokenizerPath, vocabSize: built.vocab.length };
}

const runAsMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href;
if (runAsMain) {
  const dir = process.argv[2] ?? ".mesh/models";
  const files = await makeCharModel(dir);
  console.log(`${DEMO_CHAT_NAME} v${DEMO_CHAT_VERSION} (vocabulary ${files.vocabSize}) -> ${path.relative(process.cwd(), files.modelPath)}`);
  console.log(`${DEMO_CHAT_NAME} tokenizer -> ${path.relative(process.cwd(), files.tokenizerPath)}`);
}
