/** Request header that injects a fault into one generation request. */
export const FAULT_HEADER = "x-sim-fault";

/** Error message of every simulated failure, so tests can tell it from a real one. */
export const FAULT_MESSAGE = "simulated engine failure";

/**
 * A failure the simulator plays instead of a normal generation. Header spellings:
 * - `status=CODE` — reply at once with CODE (400..599) and an OpenAI error body.
 * - `reset-after=N` — destroy the socket when token N+1 would be sent (N=0: at first-token time,
 *   with only the headers sent); N beyond the answer's length resets before the end of stream.
 * - `error-after=N` — same moment, but a streamed response gets an in-stream error event and
 *   `[DONE]`, a non-streaming one a 500 error body.
 * - `hang` — never produce the first token; a streamed response has its headers sent.
 */
export type Fault =
  | { readonly kind: "status"; readonly status: number }
  | { readonly kind: "reset"; readonly afterTokens: number }
  | { readonly kind: "error"; readonly afterTokens: number }
  | { readonly kind: "hang" };

/** Parses an `x-sim-fault` value; throws an Error naming the problem for anything else. */
export function parseFault(value: string): Fault {
  const text = value.trim();
  if (text === "hang") return { kind: "hang" };
  const match = /^(status|reset-after|error-after)=(\d+)$/.exec(text);
  if (match === null) {
    throw new Error(
      `${FAULT_HEADER}: expected status=CODE, reset-after=N, error-after=N or hang, got "${value}"`,
    );
  }
  const number = Number(match[2]);
  switch (match[1]) {
    case "status":
      if (number < 400 || number > 599) throw new Error(`${FAULT_HEADER}: status must be 400..599, got ${number}`);
      return { kind: "status", status: number };
    case "reset-after":
      return { kind: "reset", afterTokens: number };
    default:
      return { kind: "error", afterTokens: number };
  }
}
