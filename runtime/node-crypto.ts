// node:crypto's hash and MAC for protocol/signing.ts, in Node processes (the router installs them
// at start). WebCrypto in Node runs every digest and MAC as a job on libuv's thread pool: the
// request waits for another thread to be scheduled and to hand the result back, which on a busy
// host is most of the cost of checking a small grant. node:crypto computes a small input on the
// spot. A large input (a tensor body) still goes to WebCrypto, so hashing it does not hold the
// event loop that every other call and stream of the router shares.

import { createHash, createHmac } from "node:crypto";
import { useCryptoPrimitives, webCryptoPrimitives, type CryptoPrimitives } from "../protocol/signing.js";

/** Inputs up to this many bytes are hashed on the event loop (a few µs); larger ones off it. */
export const INLINE_HASH_BYTES = 64 * 1024;

export const nodeCryptoPrimitives: CryptoPrimitives = {
  sha256: (data) => (data.length <= INLINE_HASH_BYTES ? createHash("sha256").update(data).digest() : webCryptoPrimitives.sha256(data)),
  hmacSha256: (secret, data) => (data.length <= INLINE_HASH_BYTES ? createHmac("sha256", secret).update(data).digest() : webCryptoPrimitives.hmacSha256(secret, data)),
};

/** Makes protocol/signing.ts use node:crypto in this process. */
export function useNodeCrypto(): void {
  useCryptoPrimitives(nodeCryptoPrimitives);
}
