// Checks the tokenizer that scripts/tiny-gpt/build.py wrote against the real consumer,
// @huggingface/tokenizers: every text build.py encoded (thousands of training documents,
// ChatML samples with special tokens, all held-out chapters) must get exactly the ids the
// Python encoder gave it, and decode back to the same text. Also renders the bundle's chat
// template with @huggingface/jinja. Exits non-zero on the first mismatch.
//
// Run after build.py:  npx tsx scripts/tiny-gpt/check-tokenizer.ts [bundle dir] [build scratch dir]

import { readFile } from "node:fs/promises";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";

const dir = process.argv[2] ?? "models/tiny-gpt";
const work = process.argv[3] ?? "/tmp/tiny-gpt-build";

const readJson = async (file: string): Promise<Record<string, unknown>> => JSON.parse(await readFile(file, "utf8"));
const tokenizerJson = await readJson(path.join(dir, "tokenizer.json"));
const tokenizerConfig = await readJson(path.join(dir, "tokenizer_config.json"));
const corpus = (await readJson(path.join(work, "corpus.json"))) as unknown as { texts: string[]; ids: number[][] };
const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);

let tokens = 0;
for (const [n, text] of corpus.texts.entries()) {
  const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const want = corpus.ids[n]!;
  const at = ids.findIndex((id, i) => id !== want[i]);
  if (at >= 0 || ids.length !== want.length) {
    const i = at >= 0 ? at : Math.min(ids.length, want.length);
    console.error(`text ${n}: ids differ at ${i}: js ${JSON.stringify(ids.slice(i, i + 8))} python ${JSON.stringify(want.slice(i, i + 8))}`);
    console.error(`  around: ${JSON.stringify(tokenizer.decode(want.slice(Math.max(0, i - 4), i + 8)))}`);
    process.exit(1);
  }
  const back = tokenizer.decode(ids, { skip_special_tokens: false });
  if (back !== text) {
    console.error(`text ${n}: decode does not round-trip: ${JSON.stringify(back.slice(0, 200))}`);
    process.exit(1);
  }
  tokens += ids.length;
}

const template = new Template(String(tokenizerConfig.chat_template));
const rendered = template.render({
  messages: [
    { role: "system", content: "S" },
    { role: "user", content: "In the beginning" },
  ],
  add_generation_prompt: true,
});
const expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nIn the beginning<|im_end|>\n<|im_start|>assistant\n";
if (rendered !== expected) {
  console.error(`chat template renders ${JSON.stringify(rendered)}`);
  process.exit(1);
}
console.log(`tokenizer OK: ${corpus.texts.length} texts, ${tokens} tokens identical to build.py and round-trip; chat template OK`);
