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

/** A request the sidecar answers itself; its body is written in the request's API shape (apis/). */
export interface Refusal {
  status: number;
  /** The reason: OpenAI's `error.code`, and the reason label in logs and metrics. */
  code: RefusalReason;
  message: string;
}
