import type { Refusal } from "../../refusal.js";

const errorType = (status: number): string => (status >= 500 ? "server_error" : "invalid_request_error");

/** The JSON body OpenAI clients understand: `{"error": {message, type, param, code}}`. */
export function openAiErrorBody(refusal: Refusal): string {
  return JSON.stringify({
    error: { message: refusal.message, type: errorType(refusal.status), param: null, code: refusal.code },
  });
}
