// From generated token ids to the text a stream sends, token by token:
//  - IncrementalDetokenizer: each token's share of the decoded text, never half a character. A
//    byte-level BPE token can end inside a multi-byte UTF-8 character; decoding it alone gives
//    U+FFFD. Its bytes are held (the token's text is "") until a later token completes the
//    character, which then carries it (bytes of a character the model never finishes are
//    dropped at the end). The text is what decode() of a short window of recent
//    tokens adds, so decoders that join tokens (spaces, word prefixes) stream what decode()
//    of the whole sequence gives.
//  - StopWindow: stop sequences on that text. Tokens whose text may be the start of a stop
//    sequence are held until it is clear whether it follows (then they are dropped with it, a
//    token it starts inside cut short) or not (then they go out).
// Pure logic: no onnxruntime, no I/O (the session child and full-context-generator.ts both drive it).

const REPLACEMENT = "\uFFFD";

export class IncrementalDetokenizer {
  private readonly ids: number[] = [];
  /** Start of the window decoded for context, and of the part not yet turned into text. */
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private readonly decode: (ids: readonly number[]) => string) {}

  /** The text token `id` adds; "" while it ends inside a character (its bytes wait for the next). */
  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const full = this.decode(this.ids.slice(this.prefixOffset));
    if (full.length <= prefix.length || full.endsWith(REPLACEMENT)) return "";
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return full.slice(prefix.length);
  }
}

export interface TextPiece {
  id: number;
  text: string;
}

/** Length of the longest suffix of text that is a proper prefix of some stop sequence. */
export function partialStopLength(text: string, stop: readonly string[]): number {
  let longest = 0;
  for (const s of stop) {
    for (let n = Math.min(s.length - 1, text.length); n > longest; n--) {
      if (text.endsWith(s.slice(0, n))) {
        longest = n;
        break;
      }
    }
  }
  return longest;
}

export class StopWindow {
  private generated = ""; // text of every token pushed so far
  private emittedLength = 0; // how much of it has gone out
  private readonly held: { id: number; start: number; end: number }[] = [];
  private readonly maxStop: number;
  /** True once a stop sequence was seen: push() takes nothing more. */
  stopped = false;

  constructor(private readonly stop: readonly string[]) {
    this.maxStop = stop.reduce((m, s) => Math.max(m, s.length), 0);
  }

  /** Takes a token and its text; returns the tokens that can go out now, in order. */
  push(id: number, text: string): TextPiece[] {
    if (this.stopped) return [];
    const start = this.generated.length;
    this.generated += text;
    this.held.push({ id, start, end: this.generated.length });
    const out: TextPiece[] = [];
    if (this.maxStop > 0) {
      // A stop sequence can only have just been completed within the last maxStop - 1 + text.length characters.
      let cut = -1;
      const from = Math.max(this.emittedLength, start - this.maxStop + 1);
      for (const s of this.stop) {
        const at = this.generated.indexOf(s, from);
        if (at >= 0 && (cut < 0 || at < cut)) cut = at;
      }
      if (cut >= 0) {
        // What comes before the stop text goes out (a token it starts inside cut short); the rest is dropped.
        for (const h of this.held) {
          if (h.start >= cut) break;
          out.push({ id: h.id, text: this.generated.slice(h.start, Math.min(h.end, cut)) });
        }
        this.held.length = 0;
        this.stopped = true;
        return out;
      }
    }
    const safeEnd = this.generated.length - partialStopLength(this.generated, this.stop);
    while (this.held.length > 0 && this.held[0]!.end <= safeEnd) {
      const h = this.held.shift()!;
      this.emittedLength = h.end;
      out.push({ id: h.id, text: this.generated.slice(h.start, h.end) });
    }
    return out;
  }

  /** At the end without a stop sequence: the held tokens are ordinary text after all. */
  finish(): TextPiece[] {
    if (this.stopped) return [];
    const out = this.held.map((h) => ({ id: h.id, text: this.generated.slice(h.start, h.end) }));
    this.held.length = 0;
    return out;
  }
}
