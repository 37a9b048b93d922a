import { randomUUID } from "node:crypto";
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";

/** metadata-center error codes: the Go service's, and ours for what it has no answer for (in its pattern: HTTP status, then 01, then a detail). */
export const ErrorCode = {
  duplicate: 40001000,
  invalidInput: 40001400,
  unauthenticated: 40101001,
  /** A conditional add whose engine is at the bound. */
  overBound: 40901000,
  /** Every candidate of a pick is at its limit. */
  saturated: 42901000,
  internal: 50001000,
  /** A pick found no engine to place the request on. */
  noEngine: 50301000,
} as const;

export interface ApiError {
  code: number;
  message: string;
  reason: string;
}

/** What was thrown, as text for the caller and the log; never throws itself (a value may refuse to become a string). */
export function describeError(error: unknown): string {
  try {
    return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  } catch {
    return "an error that cannot be printed";
  }
}

/** A 500 / 50001000 whose reason names what failed. */
export function internalError(error: unknown): ApiError {
  return { code: ErrorCode.internal, message: "internal server error", reason: describeError(error) };
}

/** `trace_id` echoes the `TraceId` request header, or is made up when absent. */
export function traceIdOf(request: IncomingMessage): string {
  const header = request.headers["traceid"];
  return (Array.isArray(header) ? header[0] : header) || randomUUID();
}

/** Every JSON answer: `{status, error, data, trace_id}`. */
export function sendEnvelope(
  request: IncomingMessage,
  response: ServerResponse,
  httpStatus: number,
  data: unknown,
  error: ApiError | null = null,
): void {
  const body = JSON.stringify({ status: error === null ? "OK" : "ERROR", error, data, trace_id: traceIdOf(request) });
  response.writeHead(httpStatus, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
  response.end(body);
}

/**
 * A whole HTTP/1.1 response carrying the envelope, for a connection whose request could not be
 * parsed (there is no ServerResponse to write it with); it closes the connection.
 */
export function rawEnvelope(httpStatus: number, error: ApiError): string {
  const body = JSON.stringify({ status: "ERROR", error, data: null, trace_id: randomUUID() });
  return (
    `HTTP/1.1 ${httpStatus} ${STATUS_CODES[httpStatus] ?? ""}\r\ncontent-type: application/json\r\n` +
    `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
  );
}
