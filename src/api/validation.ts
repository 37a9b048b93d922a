import type { z } from "zod";
import { ErrorCode, type ApiError } from "./envelope.js";

/** A 400 / 40001400 whose message names the problem (and the field, when there is one). */
export function invalidInput(detail: string): ApiError {
  return { code: ErrorCode.invalidInput, message: `invalid input parameters: ${detail}`, reason: detail };
}

/** Parse with a schema, or the 400 naming every bad field. */
export function validate<T>(schema: z.ZodType<T>, value: unknown): { ok: true; value: T } | { ok: false; error: ApiError } {
  const result = schema.safeParse(value);
  if (result.success) return { ok: true, value: result.data };
  const detail = result.error.issues
    .map((issue) => (issue.path.length === 0 ? issue.message : `${issue.path.join(".")}: ${issue.message}`))
    .join("; ");
  return { ok: false, error: invalidInput(detail) };
}
