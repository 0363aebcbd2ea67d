// The one error envelope of the whole mesh and the one map from stable code to HTTP status.
// The Open Inference Protocol's clients read `error` as a string, so it stays one; programs
// branch on `code`. Never put a stack or an internal detail in `error`.

export const ERROR_STATUS = {
  bad_request: 400,
  invalid_json: 400,
  invalid_tensor: 400,
  invalid_model_file: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  model_not_found: 404,
  version_not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  rate_limited: 429,
  internal_error: 500,
  region_error: 502,
  node_error: 502,
  inference_failed: 500,
  no_region_available: 503,
  no_capacity: 503,
  deadline_exceeded: 504,
  /** The caller cancelled the call (nginx's convention for a client that went away). */
  cancelled: 499,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface ErrorBody {
  error: string;
  code: ErrorCode;
  requestId: string;
}

/** Thrown at HTTP boundaries (edge and router); turned into the envelope by one handler. */
export class MeshError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(code: ErrorCode, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = "MeshError";
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.headers = headers;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(ERROR_STATUS, value);
}

export function errorBody(code: ErrorCode, message: string, requestId: string): ErrorBody {
  return { error: message, code, requestId };
}
