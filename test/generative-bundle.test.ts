// edge/generative-bundle.ts: the checks a bundle's Hugging Face files get before a version is
// recorded (bounds, JSON of each file's format; other names untouched), and what the data plane
// asks of a version (its bundled tokenizer, whether it has a chat template). The bucket is an
// in-memory stand-in holding bytes by key (only `get` is used).
import { describe, expect, it } from "vitest";
import { MeshError } from "../protocol/errors.js";
import type { BundleFile } from "../protocol/messages.js";

// Imported by path at run time: the Worker's files are type-checked against workers-types
// (edge/tsconfig.json), which this Node project does not load.
const modulePath = "../edge/generative-bundle.js";
type Files = Pick<{ files?: BundleFile[] }, "files">;
const G = (await import(modulePath)) as {
  GENERATIVE_FILES: Record<string, number>;
  checkGenerativeFiles(bucket: unknown, files: BundleFile[], keyOf: (sha: string) => string): Promise<void>;
  bundleTokenizer(v: Files): BundleFile | undefined;
  hasChatTemplate(bucket: unknown, v: Files, keyOf: (sha: string) => string): Promise<boolean>;
};
const { bundleTokenizer, checkGenerativeFiles, GENERATIVE_FILES, hasChatTemplate } = G;

const enc = new TextEncoder();
let n = 0;

class Bucket {
  readonly objects = new Map<string, Uint8Array>();
  gets = 0;
  async get(key: string) {
    this.gets++;
    const b = this.objects.get(key);
    if (!b) return null;
    return { arrayBuffer: async () => b.slice().buffer, text: async () => new TextDecoder().decode(b) };
  }
  /** Stores `content` and names it `name` in a bundle. */
  file(name: string, content: string | Uint8Array): BundleFile {
    const bytes = typeof content === "string" ? enc.encode(content) : content;
    const sha256 = (++n).toString(16).padStart(64, "0");
    this.objects.set(key(sha256), bytes);
    return { name, sha256, size: bytes.length };
  }
}
const key = (sha: string) => `artifacts/${sha}.onnx`;
const r2 = (b: Bucket): unknown => b;

const TOKENIZER = JSON.stringify({ version: "1.0", added_tokens: [], pre_tokenizer: { type: "ByteLevel" }, decoder: null, model: { type: "BPE", vocab: { a: 0 }, merges: [] } });

async function refusal(b: Bucket, files: BundleFile[]): Promise<MeshError> {
  const err = await checkGenerativeFiles(r2(b), files, key).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(MeshError);
  return err as MeshError;
}

describe("checkGenerativeFiles", () => {
  it("accepts a Hugging Face bundle and leaves other names (ONNX data) unread", async () => {
    const b = new Bucket();
    const files = [
      b.file("tokenizer.json", TOKENIZER),
      b.file("tokenizer_config.json", JSON.stringify({ chat_template: "{{ messages }}", eos_token: "<|im_end|>" })),
      b.file("config.json", JSON.stringify({ vocab_size: 2048, num_hidden_layers: 4, architectures: ["X"] })),
      b.file("generation_config.json", JSON.stringify({ max_new_tokens: 128, eos_token_id: [0, 2] })),
      b.file("special_tokens_map.json", JSON.stringify({ eos_token: "x" })),
      b.file("weights.bin", new Uint8Array([0xff, 0xfe, 0x00])),
    ];
    await checkGenerativeFiles(r2(b), files, key);
    expect(b.gets).toBe(5);
  });

  it("refuses each file that is not its format, naming it", async () => {
    const cases: [string, string][] = [
      ["tokenizer.json", JSON.stringify({ vocab: {} })],
      ["tokenizer.json", JSON.stringify({ model: { vocab: 3 } })],
      ["tokenizer.json", JSON.stringify({ model: { vocab: {} }, added_tokens: {} })],
      ["tokenizer.json", JSON.stringify({ model: { vocab: {} }, pre_tokenizer: "ByteLevel" })],
      ["tokenizer.json", "[1, 2]"],
      ["tokenizer.json", "{not json"],
      ["tokenizer_config.json", JSON.stringify({ chat_template: [{ name: "default", template: "x" }] })],
      ["config.json", JSON.stringify({ vocab_size: -1 })],
      ["generation_config.json", JSON.stringify({ max_new_tokens: 1.5 })],
    ];
    for (const [name, content] of cases) {
      const b = new Bucket();
      const err = await refusal(b, [b.file(name, content)]);
      expect(err.code, content).toBe("invalid_model_file");
      expect(err.message).toContain(`'${name}'`);
    }
    const b = new Bucket();
    expect((await refusal(b, [b.file("config.json", new Uint8Array([0x7b, 0xff, 0x7d]))])).message).toContain("not UTF-8 JSON");
  });

  it("bounds each file by its name before reading it", async () => {
    const b = new Bucket();
    const big: BundleFile = { name: "generation_config.json", sha256: "f".repeat(64), size: GENERATIVE_FILES["generation_config.json"]! + 1 };
    expect((await refusal(b, [big])).message).toContain("at most");
    expect(b.gets).toBe(0);
  });
});

describe("bundleTokenizer and hasChatTemplate", () => {
  it("a template needs a bundled tokenizer and a non-empty chat_template; the answer is kept per file", async () => {
    const b = new Bucket();
    const tok = b.file("tokenizer.json", TOKENIZER);
    const withTemplate = b.file("tokenizer_config.json", JSON.stringify({ chat_template: "{% for m in messages %}{{ m.content }}{% endfor %}" }));
    const empty = b.file("tokenizer_config.json", JSON.stringify({ chat_template: "" }));
    expect(bundleTokenizer({ files: [tok] })).toEqual(tok);
    expect(bundleTokenizer({})).toBeUndefined();
    expect(await hasChatTemplate(r2(b), { files: [tok, withTemplate] }, key)).toBe(true);
    expect(await hasChatTemplate(r2(b), { files: [tok, empty] }, key)).toBe(false);
    expect(await hasChatTemplate(r2(b), { files: [withTemplate] }, key)).toBe(false);
    expect(await hasChatTemplate(r2(b), { files: [tok] }, key)).toBe(false);
    const reads = b.gets;
    expect(await hasChatTemplate(r2(b), { files: [tok, withTemplate] }, key)).toBe(true);
    expect(b.gets).toBe(reads);
  });
});
