// Affinity keys: hashes that the edge, the router and the node all compute the same way without a
// tokenizer, naming a KV cache a node kept so a later request that continues it can be sent there.
// One scheme, two kinds of request:
//  - a chat: a node that finished a turn keys its cache by the conversation *including* its
//    answer; a follow-up turn names the key of its messages *before its last user turn*, which
//    is that same conversation when the client sent the answer back unchanged;
//  - a plain prompt (completions, generate): a node that finished one keys its cache by the text
//    it covers (prompt + completion) at a few character lengths: the whole text and the last
//    PREFIX_STEP boundaries below it. The edge keys the new prompt's prefixes at its own length
//    and every boundary below it (the longest few); a continuation (the previous prompt and
//    completion, then more) shares the boundary keys up to the old text's length, so the
//    longest key some node holds names the node with the most of it. No client cooperation.
// The account and model key are inside every hash, so one tenant's keys never match (or reveal)
// another's texts. Collisions (128 bits) could only misroute: the node reuses a cache only for
// the same account's token prefix (gpu-node/decoder/prefix-cache.ts).

import type { ChatMessage } from "./messages.js";
import { sha256Hex } from "./signing.js";

/** Hex characters kept of the SHA-256 (128 bits: collisions only misroute, they never share a cache). */
const KEY_HEX = 32;

/** A key looks like this on the wire: checked wherever one is received. */
export const CONVERSATION_KEY_RE = /^[0-9a-f]{32}$/;

export async function conversationKey(account: string, modelKey: string, messages: readonly ChatMessage[]): Promise<string> {
  const canonical = JSON.stringify([account, modelKey, messages.map((m) => [m.role, m.content])]);
  return (await sha256Hex(canonical)).slice(0, KEY_HEX);
}

/**
 * The key of the conversation a follow-up turn continues: its messages before the last user
 * message, when those include an assistant answer (a first turn has nothing to continue).
 */
export async function followUpKey(account: string, modelKey: string, chat: readonly ChatMessage[] | undefined): Promise<string | undefined> {
  if (!chat) return undefined;
  let lastUser = -1;
  for (let i = chat.length - 1; i >= 0; i--) {
    if (chat[i]!.role === "user") {
      lastUser = i;
      break;
    }
  }
  if (lastUser <= 0) return undefined;
  const before = chat.slice(0, lastUser);
  if (!before.some((m) => m.role === "assistant")) return undefined;
  return conversationKey(account, modelKey, before);
}

// ---------------------------------------------------------------- plain prompts

/** Prefix keys fall at multiples of this many characters (UTF-16 code units), besides a text's own length. */
export const PREFIX_STEP = 256;
/**
 * Keys a node records per kept text: its whole length and the boundaries just below it. The
 * boundaries below the whole still match a continuation whose client changed the completion's
 * last characters (trimmed it, say); PREFIX_STEP * (this - 1) characters of slack.
 */
export const HELD_TEXT_KEYS = 3;
/**
 * Keys the edge asks for per prompt: its own length and the longest boundaries below it. A
 * continuation that added more than about PREFIX_STEP * (this - 2) characters to the text it
 * continues misses (it is mostly new prefill then anyway).
 */
export const PROMPT_PREFIX_KEYS = 16;

/** The prefix lengths keyed for a text of `length` characters, longest first, at most `max` (none for an empty text). */
export function prefixLengths(length: number, max: number): number[] {
  const out: number[] = [];
  if (length <= 0 || max <= 0) return out;
  out.push(length);
  for (let b = Math.floor((length - 1) / PREFIX_STEP) * PREFIX_STEP; b > 0 && out.length < max; b -= PREFIX_STEP) out.push(b);
  return out;
}

/**
 * The keys of `text`'s prefixes of the given lengths (each at most text.length), in that order:
 * each the SHA-256 of the JSON array ["text", account, model key] followed by the prefix. The
 * array ends where its closing bracket does, so the three and the prefix are never ambiguous;
 * a chat key's input is one JSON array (of three, the last not a string), never one of these.
 * The digests run at once: a chain of block hashes would hash less but wait for each block in
 * turn (about 10x slower for a 32k-character prompt in Node, measured).
 */
export function textPrefixKeys(account: string, modelKey: string, text: string, lengths: readonly number[]): Promise<string[]> {
  const maxLength = Math.max(0, ...lengths);
  if (maxLength > text.length) return Promise.reject(new RangeError(`a prefix of ${maxLength} characters of a ${text.length}-character text`));
  const head = JSON.stringify(["text", account, modelKey]);
  return Promise.all(lengths.map(async (n) => (await sha256Hex(head + text.slice(0, n))).slice(0, KEY_HEX)));
}

/** What a node records for a finished plain generation: the keys of its text (prompt + completion), with the characters each covers. */
export async function heldTextKeys(account: string, modelKey: string, text: string): Promise<{ key: string; chars: number }[]> {
  const lengths = prefixLengths(text.length, HELD_TEXT_KEYS);
  const keys = await textPrefixKeys(account, modelKey, text, lengths);
  return keys.map((key, i) => ({ key, chars: lengths[i]! }));
}

/** What the edge asks for with a plain prompt: the keys of its prefixes, longest first (at most PROMPT_PREFIX_KEYS). */
export function promptPrefixKeys(account: string, modelKey: string, prompt: string): Promise<string[]> {
  return textPrefixKeys(account, modelKey, prompt, prefixLengths(prompt.length, PROMPT_PREFIX_KEYS));
}
