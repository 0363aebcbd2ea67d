// The KV-cache decode engine's public surface (see docs/decoder.md): a session child loads the
// model, builds a DecodeEngine from the bundle's config.json, and drives it with a DecodeLoop.

export { DecoderError, detectLayout, isKvDecoder, parseDecoderConfig } from "./config.js";
export type { DecoderConfig, DecoderLayout, DecoderSession, KvType } from "./config.js";
export { DecodeEngine, DEFAULT_MAX_BATCH, DEFAULT_PREFILL_CHUNK } from "./engine.js";
export type { EngineEvent, EngineOptions } from "./engine.js";
export { DecodeLoop } from "./loop.js";
export type { SamplingParams } from "./sampler.js";
export type { KeptCache, KvPrefix } from "./engine.js";
export { commonPrefix, PrefixCache } from "./prefix-cache.js";
export type { PrefixCacheOptions, PrefixEntry, PrefixMatch } from "./prefix-cache.js";
