// The edge's logger: the shared one-line JSON format, with the request id on every line.

import { makeLogger, type LogLevel } from "../protocol/log.js";

const logger = makeLogger("edge");

export function log(level: LogLevel, requestId: string, msg: string, fields: Record<string, unknown> = {}): void {
  logger(level, msg, { requestId, ...fields });
}
