// What a caller may read of a failure that happened on a node. onnxruntime's messages name the
// failing graph node and input (useful to the caller) but also the node's file paths
// (".../cache/<sha>/model.onnx"), its C++ source references ("tensorprotoutils.cc:461") and
// signatures; a JavaScript failure may bring stack lines, internal URLs and addresses. Tenants
// are hostile, so none of that reaches them. One scrubber, pure, used twice on purpose: by the
// node before it answers (it logs the original) and by the edge where a region's message enters
// (its own line, not a trust in the node's).

/** Long enough for onnxruntime's useful part ("... Input shape:{1,4}, requested shape:{5}"). */
const MAX_PUBLIC_CHARS = 300;

/** The scrubbed text a caller may read (pure). */
export function publicMessage(message: string): string {
  const m = message
    // Stack lines ("    at fn (file:1:2)", "at file:1:2", "at fn (native)"), before whitespace is
    // collapsed; only lines of that shape, so "at most 64 streams" stays.
    .replace(/(^|\n)[ \t]*at [^\n]*(?::\d+(?::\d+)?\)?|\((?:native|<anonymous>)\))[ \t]*(?=\n|$)/g, "")
    .replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w*\s*:?\s*/g, "")
    // C++ signatures (onnxruntime::ReshapeHelper::ReshapeHelper(const ...&, bool)) and qualified names.
    .replace(/[\w:~<>]*::[\w~<>]+\([^)]*\)(\s*const)?\s*/g, "")
    .replace(/\b\w+(?:::\w+)+/g, "")
    // Source references with any directory before them (reshape_helper.h:91, /src/x.cc:12:3),
    // and the CamelCase function name onnxruntime prints right after one.
    .replace(/(?:[^\s:'"`]*[\\/])?[\w.-]+\.(?:cc|cpp|cxx|c|h|hpp|hh|cu|cuh|py|js|mjs|cjs|ts)(?::\d+)+(?:\s+[A-Za-z_][a-z0-9_]*[A-Z]\w*(?=\s))?/g, "")
    // URLs (a signed artifact URL, an internal router address).
    .replace(/\b[a-z][a-z0-9+.-]*:\/\/[^\s'"`]+/gi, "(a URL)")
    // Absolute paths, with or without a drive letter, and home-relative ones.
    .replace(/(^|[\s'"`(=:[,])(?:[A-Za-z]:)?(?:~|(?=[\\/]))(?:[\\/][^\s'"`,()[\]]+)+/g, "$1(a path)")
    // Addresses with a port (ECONNREFUSED 10.0.0.7:4001).
    .replace(/\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b|\blocalhost:\d+\b|\[[0-9a-f:]+\](?::\d+)?/gi, "(an address)")
    .replace(/\s+/g, " ")
    .replace(/\s+([.,:;])/g, "$1")
    .trim();
  if (m === "") return "the model failed on the node";
  return m.length > MAX_PUBLIC_CHARS ? `${m.slice(0, MAX_PUBLIC_CHARS)}...` : m;
}
