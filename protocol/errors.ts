// The one error envelope of the whole mesh and the one map from stable code to HTTP status.
// The Open Inference Protocol's clients read `error` as a string, so it stays one; programs
// branch on `code`. Never put a stack or an internal detail in `error`.

export const ERROR_STATUS = {
  bad_request: 400,
  invalid_json: 400,
  invalid_tensor: 400,
  /** The inputs match the signature, but the model's graph cannot compute with them. */
  input_rejected: 400,
  invalid_model_file: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  model_not_found: 404,
  version_not_found: 404,
  method_not_allowed: 405,
  conflict: 409,
  version_in_use: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  /** Between the mesh's parts: no wire-protocol version in common (protocol/wire-version.ts). */
  wire_version_unsupported: 426,
  rate_limited: 429,
  quota_exceeded: 429,
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

/** What each code means, for the API reference (docs/api.md "Errors" and /openapi.json). */
export const ERROR_DESCRIPTIONS: Record<ErrorCode, string> = {
  bad_request: "The request is wrong (a parameter or a field of the body); the message says which and how.",
  invalid_json: "The body is not valid JSON.",
  invalid_tensor: "An inference input does not match the model's signature (name, datatype, shape, data).",
  input_rejected:
    "The inputs match the model's signature, but its graph cannot compute with them (e.g. dynamic dimensions that do not agree inside it, an index out of range); the message names the operator. Do not retry unchanged.",
  invalid_model_file: "An uploaded file is not an ONNX model the mesh can read.",
  unauthorized: "Missing, unknown or revoked API key (or a wrong admin token or signature).",
  forbidden: "The key lacks the scope the route needs.",
  not_found: "No such route or resource (also for another account's resource).",
  model_not_found: "No such model in the caller's account (another account's model answers the same).",
  version_not_found: "The model has no such version or alias.",
  method_not_allowed: "The route does not take this method.",
  conflict: "The resource exists already (e.g. a model with that name).",
  version_in_use: "The version is named by an alias or a traffic rule; move those first.",
  payload_too_large: "The body is over the route's limit.",
  unsupported_media_type: "The body's Content-Type is not one the route takes.",
  wire_version_unsupported:
    "Between the mesh's own parts only: a region refused the edge (or a node) because they share no wire-protocol version; the message names both. Callers get no_region_available instead.",
  rate_limited: "The key's rate limit is spent; retry after `Retry-After` seconds.",
  quota_exceeded: "The account's monthly request quota is spent; `Retry-After` says when the month turns.",
  internal_error: "A bug or a misconfiguration; details only in the logs.",
  region_error: "A region failed mid-call.",
  node_error: "A node failed mid-call.",
  inference_failed: "The runtime refused the call (the model could not run on these inputs).",
  no_region_available: "No region can take the call now; retry after `Retry-After` seconds.",
  no_capacity: "The region has no free capacity now; retry after `Retry-After` seconds.",
  deadline_exceeded: "The call's deadline passed before an answer came.",
  cancelled: "The caller went away before the answer.",
};

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
