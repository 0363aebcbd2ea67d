// Unit tests of the node's text side (pure logic, no model): incremental detokenization over a
// byte-level BPE tokenizer.json run by @huggingface/tokenizers (each byte its own token, so
// multi-byte characters are split over tokens), stop sequences across tokens, chat templates
// and eos ids from a bundle's files.
import { describe, expect, it } from "vitest";
import { HfTokenizer, loadAnyTokenizer, makeTextSide } from "../gpu-node/text-side.js";
import { IncrementalDetokenizer, StopWindow } from "../gpu-node/token-text.js";

/** GPT-2's bytes_to_unicode: each byte as the printable character byte-level BPE writes it as. */
function byteChars(): string[] {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) out.push(String.fromCodePoint(keep(b) ? b : 256 + n++));
  return out;
}

const SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/** A byte-level BPE tokenizer.json with one token per byte and a couple of merges ("Ġt", "he"). */
function byteLevelTokenizerJson(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  byteChars().forEach((c, i) => (vocab[c] = i));
  vocab["Ġt"] = 256;
  vocab["he"] = 257;
  SPECIALS.forEach((s, i) => (vocab[s] = 258 + i));
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: SPECIALS.map((content, i) => ({ id: 258 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: ["Ġ t", "h e"] },
  };
}

const CHATML =
  "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

function streamText(tok: HfTokenizer, ids: number[]): string[] {
  const d = new IncrementalDetokenizer((x) => tok.decode(x));
  return ids.map((id) => d.push(id));
}

describe("incremental detokenizer", () => {
  const tok = loadAnyTokenizer(byteLevelTokenizerJson()) as HfTokenizer;
  const text = "héllo wörld, the 日本語 text 🙂🎉 ok";

  it("loads a byte-level tokenizer.json through the Hugging Face library and round-trips", () => {
    expect(tok).toBeInstanceOf(HfTokenizer);
    const ids = tok.encode(text);
    expect(tok.decode(ids)).toBe(text);
    // Two-byte é, three-byte 日, four-byte 🙂: one token a byte, plus the merges.
    expect(ids.length).toBeGreaterThan([...text].length);
    expect(ids).toContain(256); // "Ġt"
    expect(ids).toContain(257); // "he"
  });

  it("never splits a UTF-8 character: tokens inside one give '', the one that completes it carries it", () => {
    const ids = tok.encode(text);
    const pieces = streamText(tok, ids);
    expect(pieces.join("")).toBe(text);
    for (const p of pieces) expect(p).not.toContain("\uFFFD");
    // 🙂 is four byte tokens: three empty pieces, then the character.
    const smile = [...Buffer.from("🙂")].map((b) => tok.tokenToId(byteChars()[b]!)!);
    const at = ids.findIndex((_, i) => smile.every((s, k) => ids[i + k] === s));
    expect(at).toBeGreaterThan(0);
    expect(pieces.slice(at, at + 4)).toEqual(["", "", "", "🙂"]);
  });

  it("gives each token what decode() of the whole sequence adds, for every prefix", () => {
    const ids = tok.encode(text);
    const pieces = streamText(tok, ids);
    for (let n = 1; n <= ids.length; n++) {
      const whole = tok.decode(ids.slice(0, n));
      const streamed = pieces.slice(0, n).join("");
      // The streamed text is the whole decode less a character still being completed.
      expect(whole.startsWith(streamed)).toBe(true);
      expect(whole.slice(streamed.length).replace(/\uFFFD/g, "")).toBe("");
    }
  });
});

describe("stop window", () => {
  it("holds tokens that may start a stop sequence, drops the stop text, cuts a token it starts inside", () => {
    const w = new StopWindow(["END"]);
    expect(w.push(1, "ab")).toEqual([{ id: 1, text: "ab" }]);
    expect(w.push(2, "cE")).toEqual([]); // "E" may start END
    expect(w.push(3, "N")).toEqual([]);
    expect(w.push(4, "Dxy")).toEqual([{ id: 2, text: "c" }]);
    expect(w.stopped).toBe(true);
    expect(w.finish()).toEqual([]);
  });

  it("lets held tokens go once the stop sequence does not follow, and at the end", () => {
    const w = new StopWindow(["END"]);
    expect(w.push(1, "E")).toEqual([]);
    expect(w.push(2, "x")).toEqual([
      { id: 1, text: "E" },
      { id: 2, text: "x" },
    ]);
    expect(w.push(3, "EN")).toEqual([]);
    expect(w.finish()).toEqual([{ id: 3, text: "EN" }]);
  });

  it("works on detokenized text: a stop sequence made of a multi-byte character split over tokens", () => {
    const tok = loadAnyTokenizer(byteLevelTokenizerJson()) as HfTokenizer;
    const ids = tok.encode("ab日c");
    const d = new IncrementalDetokenizer((x) => tok.decode(x));
    const w = new StopWindow(["日"]);
    const out: string[] = [];
    for (const id of ids) {
      for (const p of w.push(id, d.push(id))) out.push(p.text);
      if (w.stopped) break;
    }
    expect(out.join("")).toBe("ab");
    expect(w.stopped).toBe(true);
  });
});

describe("a bundle's text side", () => {
  it("renders the chat template with a generation prompt, encodes its special tokens as such, and knows the eos ids", () => {
    const side = makeTextSide({
      tokenizer: byteLevelTokenizerJson(),
      tokenizerConfig: { chat_template: CHATML, eos_token: "<|im_end|>", bos_token: { content: "<|endoftext|>" } },
      config: { eos_token_id: 258 },
      generationConfig: { eos_token_id: [258, 260] },
    });
    const ids = side.encodePrompt("", [
      { role: "system", content: "Be brief." },
      { role: "user", content: "hi" },
    ]);
    expect(side.tokenizer.decode(ids)).toBe("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    expect(ids[0]).toBe(259);
    expect(ids.filter((id) => id === 259)).toHaveLength(3);
    expect(new Set(side.stopTokenIds)).toEqual(new Set([258, 260]));
    expect(side.encodePrompt("the")).toEqual(side.tokenizer.encode("the"));
  });

  it("refuses a chat when the bundle has no template", () => {
    const side = makeTextSide({ tokenizer: byteLevelTokenizerJson() });
    expect(() => side.encodePrompt("", [{ role: "user", content: "hi" }])).toThrow(/no chat template/);
  });
});
