// A region's or node's error message as a caller may see it. onnxruntime's messages name the
// failing graph node and input (useful to the caller) but also the node's file paths
// (".../cache/us-west-node-1/<sha>.onnx"), its C++ source references ("tensorprotoutils.cc:461")
// and signatures; a JavaScript failure may bring stack lines, internal URLs and addresses. A
// tenant is hostile, so none of that reaches it: every message that comes from a region is
// passed through regionMessage() where it enters the edge (unary answers, stream frames), which
// logs the original with the request id and hands on the scrubbed text. Nodes scrub their own
// messages too; this is the edge's own line, not a trust in theirs. Pure except for the log.

import { publicMessage } from "../protocol/public-message.js";
import { log } from "./log.js";

export { publicMessage };

/**
 * A message that came from a region, ready for the caller: scrubbed, with the original logged
 * under the request id when anything was cut, so an operator can still read the whole story.
 */
export function regionMessage(requestId: string, message: string, fields: Record<string, unknown> = {}): string {
  const scrubbed = publicMessage(message);
  if (scrubbed !== message) log("info", requestId, "region error message scrubbed for the caller", { ...fields, original: message.slice(0, 4096) });
  return scrubbed;
}
