import type { z } from "zod";
import type { JsonBody } from "./body.js";
import { ErrorCode, type ApiError } from "./envelope.js";
import { goIntegers, type GoInteger } from "./json-integers.js";

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

/**
 * Parse a body as the Go service's decoder would: its integer fields from their text (`1.0` and
 * out-of-range numbers refused, int64 values exact), then the schema. `integers` are those
 * fields' exact values, as sent.
 */
export function validateBody<T>(
  schema: z.ZodType<T>,
  body: JsonBody,
  integerFields: Readonly<Record<string, GoInteger>>,
): { ok: true; value: T; integers: Map<string, bigint> } | { ok: false; error: ApiError } {
  const integers = goIntegers(body.text, integerFields);
  if (!integers.ok) return { ok: false, error: invalidInput(`${integers.field}: ${integers.problem}`) };
  const parsed = validate(schema, body.value);
  return parsed.ok ? { ...parsed, integers: integers.values } : parsed;
}
