// The API key format, as pure functions: `mesh_` + 32 base62 characters (~190 random bits) + a
// 6-character base62 CRC-32 of them. The checksum lets the edge refuse a mistyped or made-up key
// with no lookup at all (no D1 read, no cache entry). There is no other form: the 37-character
// form without a checksum was dropped, since it let any junk of that length cost a lookup.
// The checksum is public, so it stops typos and lazy junk, not a determined guesser; the
// per-address limit on failed authentications (middleware.ts) bounds those. Only sha256 of a
// key is ever stored.

import { sha256Hex } from "../protocol/signing.js";

export const KEY_PREFIX = "mesh_";
const KEY_BODY_CHARS = 32;
const KEY_CHECK_CHARS = 6;
export const KEY_LENGTH = KEY_PREFIX.length + KEY_BODY_CHARS + KEY_CHECK_CHARS;
const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_RE = /^mesh_[0-9A-Za-z]+$/;

/** Uniform base62 (rejection sampling: no modulo bias). */
export function randomBase62(n: number): string {
  let s = "";
  while (s.length < n) {
    for (const b of crypto.getRandomValues(new Uint8Array(n * 2))) {
      if (b < 248) s += BASE62[b % 62];
      if (s.length === n) break;
    }
  }
  return s;
}

export function randomId(prefix: string, chars = 16): string {
  return prefix + randomBase62(chars);
}

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(s: string): number {
  let c = 0xffffffff;
  for (let i = 0; i < s.length; i++) c = CRC_TABLE[(c ^ s.charCodeAt(i)) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export function keyChecksum(body: string): string {
  let v = crc32(body);
  let s = "";
  for (let i = 0; i < KEY_CHECK_CHARS; i++) {
    s = BASE62[v % 62] + s;
    v = Math.floor(v / 62);
  }
  return s;
}

/** True when `key` could be one of ours (format and checksum); no lookup. */
export async function plausibleKey(key: string): Promise<boolean> {
  if (key.length !== KEY_LENGTH || !KEY_RE.test(key)) return false;
  const body = key.slice(KEY_PREFIX.length, KEY_PREFIX.length + KEY_BODY_CHARS);
  // A plain compare: the checksum is a public function of the body (CRC-32), so its timing tells
  // a caller nothing they could not compute. (Hono's timingSafeEqual hashes both sides with
  // WebCrypto, about 5% of the edge's time per call when this and verifyKey both used it.)
  return keyChecksum(body) === key.slice(KEY_PREFIX.length + KEY_BODY_CHARS);
}

/** A new key (shown to its owner once), its hash (stored) and its start (for display). */
export async function newApiKey(): Promise<{ key: string; hash: string; start: string }> {
  const body = randomBase62(KEY_BODY_CHARS);
  const key = KEY_PREFIX + body + keyChecksum(body);
  return { key, hash: await sha256Hex(key), start: key.slice(0, KEY_PREFIX.length + 6) };
}
