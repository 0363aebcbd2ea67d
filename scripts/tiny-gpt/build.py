#!/usr/bin/python3
"""Builds the tiny-gpt bundle (models/tiny-gpt/): a byte-level BPE tokenizer and a small GPT
decoder trained on the King James Bible, exported to ONNX with a KV cache in the Hugging Face /
optimum layout (input_ids, attention_mask, position_ids, past_key_values.{i}.key/value ->
logits, present.{i}.key/value).

Everything is here, with no Hugging Face Python library: the corpus comes from Debian's
`bible-kjv` package, the BPE trainer and encoder are written below (GPT-2 byte-to-unicode map
and pre-tokenizer regex), the model is plain PyTorch. The tokenizer it writes is checked
against @huggingface/tokenizers by scripts/tiny-gpt/check-tokenizer.ts, and the ONNX graph by
test/tiny-gpt-model.test.ts (onnxruntime-node); `npm run models:gpt` runs all three. fp16.py
derives model_fp16.onnx (float16 weights and cache) from model.onnx.

Debian packages: python3-torch (1.13) python3-onnx (1.12) bible-kjv
Run with Debian's interpreter (the pyenv python3 on PATH has no torch):
  /usr/bin/python3 scripts/tiny-gpt/build.py [--minutes 8] [--untrained] [--out models/tiny-gpt]
"""

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fp16  # noqa: E402  (scripts/tiny-gpt/fp16.py)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOT, IM_START, IM_END = 0, 1, 2
N_SPECIAL = len(SPECIALS)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SYSTEM_PROMPT = "You speak in the words of the King James Bible."


# ---------------------------------------------------------------------------------------------
# Corpus

def load_chapters():
    """Returns [(book, chapter, [verse texts])] in canonical order, verse labels stripped."""
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    label = re.compile(r"^(\d?[A-Za-z]+)(\d+):(\d+) (.*)$")
    chapters = []
    for line in out.splitlines():
        if not line.strip():
            continue
        m = label.match(line)
        if not m:
            raise SystemExit(f"unexpected bible line: {line!r}")
        book, chap, text = m.group(1), int(m.group(2)), m.group(4).strip()
        if not chapters or chapters[-1][0] != book or chapters[-1][1] != chap:
            chapters.append((book, chap, []))
        chapters[-1][2].append(text)
    return chapters


def chat_sample(rng, verses, i):
    """One ChatML conversation built from verse i: either the user gives the start of a verse
    and the assistant finishes it, or the user gives a verse and the assistant says the next."""
    msgs = []
    if rng.random() < 0.2:
        msgs.append(("system", SYSTEM_PROMPT))
    words = verses[i].split(" ")
    if rng.random() < 0.5 and len(words) > 4:
        k = rng.randint(2, min(8, len(words) - 2))
        msgs.append(("user", " ".join(words[:k])))
        reply = " ".join(words[k:])
        if i + 1 < len(verses) and rng.random() < 0.5:
            reply += "\n" + verses[i + 1]
    else:
        if i + 1 >= len(verses):
            return None
        msgs.append(("user", verses[i]))
        reply = verses[i + 1]
    msgs.append(("assistant", reply))
    return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in msgs)


def build_documents(chapters, seed):
    """Training documents (chapter texts and chat samples) and the held-out chapter texts.
    Every 40th chapter is held out, so the held-out text spans the whole book."""
    rng = random.Random(seed)
    train, heldout = [], []
    for n, (_, _, verses) in enumerate(chapters):
        text = "\n".join(verses)
        if n % 40 == 17:
            heldout.append(text)
            continue
        train.append(text)
        for i in range(len(verses)):
            if rng.random() < 0.45:
                s = chat_sample(rng, verses, i)
                if s:
                    train.append(s)
    rng.shuffle(train)
    return train, heldout


# ---------------------------------------------------------------------------------------------
# Byte-level BPE (GPT-2 scheme)

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENCODER = bytes_to_unicode()

# The GPT-2 pattern that ByteLevel(use_regex=true) applies:
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# without the `regex` module: \p{L} as [^\W\d_] (word chars less digits and underscore) and
# \p{N} as \d. These agree with the Unicode classes on the corpus (ASCII); check-tokenizer.ts
# verifies the ids against @huggingface/tokenizers on the whole corpus.
PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
SPECIAL_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def pretokenize(text):
    return ["".join(BYTE_ENCODER[b] for b in piece.encode("utf-8")) for piece in PRETOKENIZE.findall(text)]


def train_bpe(texts, vocab_size):
    """Returns merges [(a, b)] in rank order. Incremental pair counts: each merge only revisits
    the words that contain the merged pair."""
    word_counts = Counter()
    for t in texts:
        for seg in SPECIAL_SPLIT.split(t):
            if seg in SPECIALS or not seg:
                continue
            word_counts.update(pretokenize(seg))
    words = [list(w) for w in word_counts]
    counts = list(word_counts.values())
    pair_counts = Counter()
    where = defaultdict(set)
    for wi, w in enumerate(words):
        for a, b in zip(w, w[1:]):
            pair_counts[(a, b)] += counts[wi]
            where[(a, b)].add(wi)
    merges = []
    n_merges = vocab_size - N_SPECIAL - 256
    while len(merges) < n_merges and pair_counts:
        best = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pair_counts[best] < 2:
            break
        merges.append(best)
        merged = best[0] + best[1]
        for wi in list(where[best]):
            w = words[wi]
            c = counts[wi]
            for a, b in zip(w, w[1:]):
                pair_counts[(a, b)] -= c
                if pair_counts[(a, b)] <= 0:
                    del pair_counts[(a, b)]
            nw = []
            i = 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == best[0] and w[i + 1] == best[1]:
                    nw.append(merged)
                    i += 2
                else:
                    nw.append(w[i])
                    i += 1
            words[wi] = nw
            for a, b in zip(nw, nw[1:]):
                pair_counts[(a, b)] += c
                where[(a, b)].add(wi)
        del where[best]
    return merges


class BpeTokenizer:
    """Encoder with Hugging Face semantics: special tokens split out first, then pre-tokenize,
    then merge the lowest-ranked pair until none applies."""

    def __init__(self, merges):
        self.merges = merges
        self.ranks = {m: r for r, m in enumerate(merges)}
        self.vocab = {s: i for i, s in enumerate(SPECIALS)}
        for b in range(256):
            self.vocab[BYTE_ENCODER[b]] = N_SPECIAL + b
        for a, b in merges:
            self.vocab.setdefault(a + b, len(self.vocab))
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            ranked = [(self.ranks.get((a, b), math.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            r, i = min(ranked)
            if r == math.inf:
                break
            pair = (parts[i], parts[i + 1])
            out, j = [], 0
            while j < len(parts):
                if j + 1 < len(parts) and (parts[j], parts[j + 1]) == pair:
                    out.append(parts[j] + parts[j + 1])
                    j += 2
                else:
                    out.append(parts[j])
                    j += 1
            parts = out
        ids = [self.vocab[p] for p in parts]
        self.cache[word] = ids
        return ids

    def encode(self, text):
        ids = []
        for seg in SPECIAL_SPLIT.split(text):
            if not seg:
                continue
            if seg in SPECIALS:
                ids.append(self.vocab[seg])
                continue
            for w in pretokenize(seg):
                ids.extend(self.bpe(w))
        return ids

    def to_json(self):
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [
                {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                for i, s in enumerate(SPECIALS)
            ],
            "normalizer": None,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {
                "type": "BPE",
                "dropout": None,
                "unk_token": None,
                "continuing_subword_prefix": None,
                "end_of_word_suffix": None,
                "fuse_unk": False,
                "byte_fallback": False,
                "ignore_merges": False,
                "vocab": self.vocab,
                "merges": [f"{a} {b}" for a, b in self.merges],
            },
        }


# ---------------------------------------------------------------------------------------------
# Model: pre-LN GPT, learned positions, tied embeddings

class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.hd = d // heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x, bias, past_k, past_v):
        B, T, D = x.shape
        hd = self.hd  # a constant, not the traced shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q = q.view(B, T, self.heads, hd).transpose(1, 2)
        k = torch.cat([past_k, k.view(B, T, self.heads, hd).transpose(1, 2)], dim=2)
        v = torch.cat([past_v, v.view(B, T, self.heads, hd).transpose(1, 2)], dim=2)
        att = torch.softmax(q @ k.transpose(2, 3) * (1.0 / math.sqrt(hd)) + bias, dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, D)
        x = x + self.proj(y)
        x = x + self.out(F.gelu(self.fc(self.ln2(x))))
        return x, k, v


class TinyGpt(nn.Module):
    def __init__(self, vocab, d, layers, heads, max_pos):
        super().__init__()
        self.heads = heads
        self.head_dim = d // heads
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(max_pos, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d)
        self.apply(self._init)
        for b in self.blocks:  # GPT-2's scaled init of the residual projections
            nn.init.normal_(b.proj.weight, std=0.02 / math.sqrt(2 * layers))
            nn.init.normal_(b.out.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, input_ids, attention_mask, position_ids, past):
        """past: [(key, value)] per layer, [B, heads, P, head_dim] (P may be 0).
        attention_mask: [B, P+T], 0 marks padding. Returns logits and the presents."""
        T = input_ids.shape[1]
        S = attention_mask.shape[1]
        P = S - T
        # Query t sits at absolute slot P+t and may see key slots <= P+t that are not padding.
        # A large finite negative (not -inf) keeps fully masked rows (padding queries) NaN-free.
        k_idx = torch.arange(S, device=input_ids.device)
        q_idx = torch.arange(T, device=input_ids.device) + P
        causal = (k_idx.unsqueeze(0) <= q_idx.unsqueeze(1)).unsqueeze(0).unsqueeze(0)
        allowed = causal & (attention_mask > 0).unsqueeze(1).unsqueeze(2)
        bias = (1.0 - allowed.to(torch.float32)) * -1e9
        x = self.wte(input_ids) + self.wpe(position_ids)
        presents = []
        for blk, (pk, pv) in zip(self.blocks, past):
            x, k, v = blk(x, bias, pk, pv)
            presents.append((k, v))
        logits = self.ln_f(x) @ self.wte.weight.t()
        return logits, presents

    def empty_past(self, B):
        z = torch.zeros(B, self.heads, 0, self.head_dim)
        return [(z, z) for _ in self.blocks]


class OnnxWrapper(nn.Module):
    """Flat inputs/outputs for torch.onnx.export, in the contract's order."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, position_ids, *flat_past):
        past = [(flat_past[2 * i], flat_past[2 * i + 1]) for i in range(len(flat_past) // 2)]
        logits, presents = self.model(input_ids, attention_mask, position_ids, past)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


# ---------------------------------------------------------------------------------------------
# Training

def train(model, stream, args, log):
    torch.manual_seed(args.seed)
    data = torch.tensor(stream, dtype=torch.long)
    T = args.block
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    mask = torch.ones(args.batch, T, dtype=torch.long)
    start = time.time()
    budget = args.minutes * 60
    step, ema = 0, None
    model.train()
    while step < args.max_steps:
        frac = max(step / args.max_steps, (time.time() - start) / budget)
        if frac >= 1:
            break
        warm = min(1.0, (step + 1) / 30)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(0, len(data) - T - 1, (args.batch,), generator=gen)
        x = torch.stack([data[i:i + T] for i in ix])
        # Windows are shorter than max_pos (attention cost), so half of them start at a random
        # position: every learned position embedding up to max_pos gets trained.
        off = torch.randint(0, model.wpe.num_embeddings - T + 1, (args.batch, 1), generator=gen)
        off = off * (torch.rand(args.batch, 1, generator=gen) < 0.5)
        pos = torch.arange(T).unsqueeze(0) + off
        y = torch.stack([data[i + 1:i + T + 1] for i in ix])
        logits, _ = model(x, mask, pos, model.empty_past(args.batch))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        step += 1
        if step % 25 == 0:
            log(f"step {step} loss {ema:.3f} lr {lr:.2e} {time.time() - start:.0f}s")
    return step, time.time() - start


@torch.no_grad()
def evaluate(model, ids, block, max_windows=40):
    model.eval()
    data = torch.tensor(ids, dtype=torch.long)
    total, n = 0.0, 0
    for w in range(min(max_windows, (len(data) - 1) // block)):
        x = data[w * block:(w + 1) * block].unsqueeze(0)
        y = data[w * block + 1:(w + 1) * block + 1].unsqueeze(0)
        logits, _ = model(x, torch.ones_like(x), torch.arange(block).unsqueeze(0), model.empty_past(1))
        total += F.cross_entropy(logits[0], y[0], reduction="sum").item()
        n += block
    return total / max(n, 1)


@torch.no_grad()
def sample(model, tok, prompt_ids, n, stop):
    model.eval()
    ids = list(prompt_ids)
    for _ in range(n):
        x = torch.tensor([ids[-model.wpe.num_embeddings:]])
        logits, _ = model(x, torch.ones_like(x), torch.arange(x.shape[1]).unsqueeze(0), model.empty_past(1))
        nxt = int(logits[0, -1].argmax())
        ids.append(nxt)
        if nxt in stop:
            break
    inv = {i: s for s, i in tok.vocab.items()}
    dec = {c: b for b, c in BYTE_ENCODER.items()}
    out = []
    for i in ids[len(prompt_ids):]:
        s = inv[i]
        out.append(s if s in SPECIALS else bytes(dec[c] for c in s).decode("utf-8", "replace"))
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Export

def export_onnx(model, path, layers, opset):
    model.eval()
    B, P, T = 2, 3, 4  # non-degenerate sizes so the tracer cannot fold any axis into a constant
    ids = torch.randint(0, 100, (B, T))
    mask = torch.ones(B, P + T, dtype=torch.long)
    pos = torch.arange(P, P + T).unsqueeze(0).expand(B, T).contiguous()
    past = []
    names_in = ["input_ids", "attention_mask", "position_ids"]
    names_out = ["logits"]
    axes = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    for i in range(layers):
        for kind in ("key", "value"):
            past.append(torch.randn(B, model.heads, P, model.head_dim))
            names_in.append(f"past_key_values.{i}.{kind}")
            names_out.append(f"present.{i}.{kind}")
            axes[f"past_key_values.{i}.{kind}"] = {0: "batch_size", 2: "past_sequence_length"}
            axes[f"present.{i}.{kind}"] = {0: "batch_size", 2: "total_sequence_length"}
    torch.onnx.export(
        OnnxWrapper(model), (ids, mask, pos, *past), path,
        input_names=names_in, output_names=names_out, dynamic_axes=axes,
        opset_version=opset, do_constant_folding=True,
    )
    import onnx
    m = onnx.load(path)
    onnx.checker.check_model(m)
    m.producer_name = "tiny-gpt build.py"
    onnx.save(m, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="models/tiny-gpt")
    ap.add_argument("--work", default="/tmp/tiny-gpt-build", help="scratch: corpus ids for check-tokenizer.ts")
    ap.add_argument("--heldout", default="scripts/tiny-gpt/heldout.txt")
    ap.add_argument("--vocab", type=int, default=2048)
    # Small on purpose: it must learn in minutes on a shared 2-core CPU (see README).
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--max-pos", type=int, default=512)
    ap.add_argument("--block", type=int, default=128, help="training window (tokens)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--minutes", type=float, default=8.0, help="training wall-time cap")
    ap.add_argument("--max-steps", type=int, default=100000)
    ap.add_argument("--threads", type=int, default=1, help="one thread: on a busy shared CPU, more spin-wait")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--opset", type=int, default=14)
    ap.add_argument("--untrained", action="store_true", help="export random weights (layout only)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(args.work, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)

    chapters = load_chapters()
    train_docs, heldout = build_documents(chapters, args.seed)
    log(f"{len(chapters)} chapters, {len(train_docs)} training documents, {len(heldout)} held-out chapters")

    t0 = time.time()
    merges = train_bpe(train_docs, args.vocab)
    tok = BpeTokenizer(merges)
    log(f"BPE: {len(merges)} merges, vocab {len(tok.vocab)} in {time.time() - t0:.0f}s")

    stream = []
    for d in train_docs:
        stream.extend(tok.encode(d))
        stream.append(EOT)
    heldout_text = "\n".join(heldout)
    heldout_ids = tok.encode(heldout_text)
    log(f"training stream {len(stream)} tokens ({sum(map(len, train_docs)) / len(stream):.2f} chars/token), held-out {len(heldout_ids)} tokens")

    # Scratch for check-tokenizer.ts: the same texts and the ids this encoder gives them.
    with open(os.path.join(args.work, "corpus.json"), "w") as f:
        json.dump({"texts": train_docs[:4000] + heldout, "ids": [tok.encode(t) for t in train_docs[:4000] + heldout]}, f)
    with open(args.heldout, "w") as f:
        f.write(heldout_text + "\n")

    vocab = len(tok.vocab)
    model = TinyGpt(vocab, args.d, args.layers, args.heads, args.max_pos)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params} parameters")
    stats = {"parameters": n_params, "trained": not args.untrained}
    if not args.untrained:
        steps, secs = train(model, stream, args, log)
        stats.update(steps=steps, seconds=round(secs), tokens_seen=steps * args.batch * args.block,
                     heldout_loss=round(evaluate(model, heldout_ids, args.block), 4))
        log(f"trained {steps} steps in {secs:.0f}s, held-out loss {stats['heldout_loss']}")
        torch.save(model.state_dict(), os.path.join(args.work, "model.pt"))
        for p in ["In the beginning", "And Jesus said unto them,"]:
            log(f"  {p!r} -> {sample(model, tok, tok.encode(p), 40, {EOT})!r}")
        chat = f"<|im_start|>user\nThe LORD is my shepherd<|im_end|>\n<|im_start|>assistant\n"
        log(f"  chat -> {sample(model, tok, tok.encode(chat), 40, {EOT, IM_END})!r}")

    export_onnx(model, os.path.join(args.out, "model.onnx"), args.layers, args.opset)
    fp16.convert(os.path.join(args.out, "model.onnx"), os.path.join(args.out, "model_fp16.onnx"))

    with open(os.path.join(args.out, "tokenizer.json"), "w") as f:
        json.dump(tok.to_json(), f, ensure_ascii=False)
    write_json(os.path.join(args.out, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": args.max_pos,
        "bos_token": SPECIALS[EOT],
        "eos_token": SPECIALS[IM_END],
        "pad_token": SPECIALS[EOT],
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    })
    write_json(os.path.join(args.out, "config.json"), {
        "architectures": ["TinyGptForCausalLM"],
        "model_type": "tiny-gpt",
        "vocab_size": vocab,
        "hidden_size": args.d,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.heads,
        "head_dim": args.d // args.heads,
        "intermediate_size": 4 * args.d,
        "max_position_embeddings": args.max_pos,
        "position_embedding_type": "learned",
        "tie_word_embeddings": True,
        "bos_token_id": EOT,
        "eos_token_id": EOT,
        "pad_token_id": EOT,
        "torch_dtype": "float32",
        "use_cache": True,
        "tiny_gpt_build": stats,
    })
    write_json(os.path.join(args.out, "generation_config.json"), {
        "bos_token_id": EOT,
        "eos_token_id": [EOT, IM_END],
        "pad_token_id": EOT,
        "max_new_tokens": 128,
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 40,
        "top_p": 0.95,
        "repetition_penalty": 1.0,
    })
    log(f"wrote {args.out}: " + ", ".join(f"{n} {os.path.getsize(os.path.join(args.out, n))}" for n in sorted(os.listdir(args.out))))


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
