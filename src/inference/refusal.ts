export type RefusalReason =
  | "invalid_request"
  | "model_not_found"
  | "no_engine_available"
  | "rate_limit_exceeded"
  | "request_too_large"
  | "request_timeout"
  /** Too much is held for picking across all requests (extproc.maxHeldBodyBytes). */
  | "overloaded"
  | "internal_error";

/** A request the sidecar answers itself, with an OpenAI-style error body. */
export interface Refusal {
  status: number;
  /** OpenAI `error.code`, also the reason label in logs and metrics. */
  code: RefusalReason;
  message: string;
}

const errorType = (status: number): string => (status >= 500 ? "server_error" : "invalid_request_error");

/** The JSON body OpenAI clients understand: `{"error": {message, type, param, code}}`. */
export function refusalBody(refusal: Refusal): string {
  return JSON.stringify({
    error: { message: refusal.message, type: errorType(refusal.status), param: null, code: refusal.code },
  });
}
