import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";

/** metadata-center error codes (the Go service's). */
export const ErrorCode = {
  duplicate: 40001000,
  invalidInput: 40001400,
  alreadyDeleted: 40001404,
  unauthenticated: 40101001,
  internal: 50001000,
} as const;

export interface ApiError {
  code: number;
  message: string;
  reason: string;
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
