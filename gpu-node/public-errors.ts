// What a caller may read of the node's failures. onnxruntime's messages carry the node's file
// paths (".../cache/<sha>/model.onnx"), its C++ source references ("tensorprotoutils.cc:461")
// and function signatures: the agent logs those in full, with the call's id, and sends callers
// this shortened text, which keeps the part that says what is wrong with the model or input.

const MAX_PUBLIC_CHARS = 300;

export function publicMessage(raw: string): string {
  const m = raw
    .replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*/g, "")
    // C++ signatures: onnxruntime::Model::Model(onnx::ModelProto&&, ...) and bare qualified names.
    .replace(/[\w:~<>]*::[\w~<>]+\([^)]*\)(\s*const)?/g, "")
    .replace(/\b[\w:]+::[\w:]+/g, "")
    // Source references: file.cc:461 (with any directory before it).
    .replace(/(?:[^\s:'"]*[\\/])?[\w.-]+\.(?:cc|cpp|cxx|c|h|hpp|hh):\d+/g, "")
    // Absolute paths, with or without a drive letter.
    .replace(/(^|[\s'"(=:])(?:[A-Za-z]:)?(?:[\\/][^\s'"`,()]+)+/g, "$1the model file")
    .replace(/\s+/g, " ")
    .replace(/\s+([.,:;])/g, "$1")
    .trim();
  return (m || "the runtime failed").slice(0, MAX_PUBLIC_CHARS);
}
