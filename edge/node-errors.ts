// A node's error message as a caller may see it: onnxruntime's messages name the failing graph
// node and input (useful to the caller) but also its own source files and C++ signatures
// (internal detail), which are cut here. Pure, so it is unit-tested.

export function publicMessage(message: string): string {
  return message
    .replace(/\s*\/[\w./-]+\.(?:h|hpp|cc|cpp|c):\d+/g, "")
    .replace(/\b\w+(?:::\w+)+\([^)]*\)\s*/g, "")
    .replace(/\s+/g, " ")
    .trim()
    .slice(0, 500);
}
