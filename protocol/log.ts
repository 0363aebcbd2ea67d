// One JSON object per line, tagged with the part (edge, router, node) and whatever identifies
// the call (request id, region), so a call can be followed across parts. Console only, so the
// Worker and Node share it.

export type LogLevel = "debug" | "info" | "warn" | "error";
export type Logger = (level: LogLevel, msg: string, extra?: Record<string, unknown>) => void;

// `process` exists in Node only; the Worker never logs debug lines.
const proc = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
const debugOn = (): boolean => !!proc?.env?.MESH_DEBUG;

export function makeLogger(part: string, fields: Record<string, unknown> = {}): Logger {
  return (level, msg, extra = {}) => {
    if (level === "debug" && !debugOn()) return;
    const line = JSON.stringify({ t: new Date().toISOString(), level, part, ...fields, msg, ...extra });
    if (level === "error" || level === "warn") console.error(line);
    else console.log(line);
  };
}
