import type { Refusal, RefusalReason } from "../../refusal.js";

/** Anthropic's `error.type` for each reason; the HTTP status stays the sidecar's (503 where Anthropic would say 529), which gateways and retries read. */
const ERROR_TYPES: Record<RefusalReason, string> = {
  invalid_request: "invalid_request_error",
  model_not_found: "not_found_error",
  no_engine_available: "overloaded_error",
  rate_limit_exceeded: "rate_limit_error",
  request_too_large: "request_too_large",
  // Anthropic's timeout_error is its own 504; a client too slow to send its body is a 4xx, which it names invalid_request_error.
  request_timeout: "invalid_request_error",
  overloaded: "overloaded_error",
  internal_error: "api_error",
};

/** The error body Anthropic's clients read: `{"type": "error", "error": {type, message}, "request_id"}`. */
export function messagesErrorBody(refusal: Refusal, requestId: string | undefined): string {
  return JSON.stringify({ type: "error", error: { type: ERROR_TYPES[refusal.code], message: refusal.message }, request_id: requestId ?? null });
}
