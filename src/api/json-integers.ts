/** The Go integer types of the v1 API's fields. */
export type GoInteger = "int32" | "int64";

const RANGE: Record<GoInteger, readonly [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
};

const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
const INTEGER = /^-?\d+$/;
const WHITESPACE = /[ \t\n\r]*/y;

/**
 * The values of integer fields of a JSON object body, read as Go's encoding/json reads them into
 * an int32 or int64: from the number's own text, which JSON.parse does not keep (it reads `1.0`
 * as 1 and rounds past 2^53). Go refuses a number that is not an integer literal (`1.0`, `1e3`) or
 * is out of the type's range, even when the same key comes again later; so does this. `null` and
 * non-numbers are left to the schema. `text` must be JSON that has already parsed.
 */
export function goIntegers(
  text: string,
  fields: Readonly<Record<string, GoInteger>>,
): { ok: true; values: Map<string, bigint> } | { ok: false; field: string; problem: string } {
  const values = new Map<string, bigint>();
  for (const { key, token } of topLevelNumbers(text)) {
    const type = Object.hasOwn(fields, key) ? fields[key] : undefined;
    if (type === undefined) continue;
    const [min, max] = RANGE[type];
    const value = INTEGER.test(token) ? BigInt(token) : undefined;
    if (value === undefined || value < min || value > max) {
      return { ok: false, field: key, problem: `must be an ${type} (an integer from ${min} to ${max}), not ${token.slice(0, 40)}` };
    }
    values.set(key, value);
  }
  return { ok: true, values };
}

/** Each member of the top-level object whose value is a number, with that number's text, in order. */
function topLevelNumbers(text: string): Array<{ key: string; token: string }> {
  const found: Array<{ key: string; token: string }> = [];
  let at = skipWhitespace(text, 0);
  if (text[at] !== "{") return found;
  at = skipWhitespace(text, at + 1);
  while (text[at] === '"') {
    const keyEnd = stringEnd(text, at);
    const key = JSON.parse(text.slice(at, keyEnd)) as string;
    at = skipWhitespace(text, skipWhitespace(text, keyEnd) + 1);
    NUMBER.lastIndex = at;
    const number = NUMBER.exec(text);
    if (number !== null) {
      found.push({ key, token: number[0] });
      at += number[0].length;
    } else {
      at = valueEnd(text, at);
    }
    at = skipWhitespace(text, at);
    if (text[at] !== ",") break;
    at = skipWhitespace(text, at + 1);
  }
  return found;
}

function skipWhitespace(text: string, at: number): number {
  WHITESPACE.lastIndex = at;
  WHITESPACE.exec(text);
  return WHITESPACE.lastIndex;
}

/** The index just past the string that opens at `at`. */
function stringEnd(text: string, at: number): number {
  let i = at + 1;
  while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
  return i + 1;
}

/** The index just past the value (string, object, array or literal; not a number) that starts at `at`, without recursion. */
function valueEnd(text: string, at: number): number {
  const first = text[at];
  if (first === '"') return stringEnd(text, at);
  let i = at;
  if (first !== "{" && first !== "[") {
    while (i < text.length && text[i]! >= "a" && text[i]! <= "z") i += 1;
    return i;
  }
  let depth = 0;
  while (i < text.length) {
    const char = text[i];
    if (char === '"') {
      i = stringEnd(text, i);
      continue;
    }
    if (char === "{" || char === "[") depth += 1;
    else if ((char === "}" || char === "]") && (depth -= 1) === 0) return i + 1;
    i += 1;
  }
  return i;
}
