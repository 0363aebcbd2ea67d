// Conversation affinity keys: a hash of (account, model version, chat messages) that the edge,
// the router and the node all compute the same way without a tokenizer. A node that finished a
// chat turn keys the KV cache it kept by the conversation *including* its answer; a follow-up
// turn's request names the key of its messages *before its last user turn*, which is that same
// conversation when the client sent the answer back unchanged. The account and model key are
// inside the hash, so one tenant's keys never match (or reveal) another's conversations.

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
