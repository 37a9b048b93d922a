import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { goIntegers } from "../../src/api/json-integers.js";

const fields = { prompt_length: "int32", timestamp: "int64" } as const;

describe("goIntegers: integer fields read from the number's text, as Go's encoding/json reads them", () => {
  it.each([
    ['{"prompt_length": 1}', 1n],
    ['{"prompt_length":2147483647}', 2147483647n],
    ['{"prompt_length": -2147483648}', -2147483648n],
    ['{"prompt_length": -0}', 0n],
    ['{ "a": {"prompt_length": 1.0}, "b": [1.5, "x"], "prompt_length" : 7 }', 7n],
    ['{"s": "\\"prompt_length\\": 1.0", "prompt_length": 3}', 3n],
    ['{"prompt\\u005flength": 4}', 4n],
  ])("reads %s", (text, value) => {
    JSON.parse(text);
    expect(goIntegers(text, fields)).toEqual({ ok: true, values: new Map([["prompt_length", value]]) });
  });

  it.each([
    ['{"prompt_length": 1.0}', "1.0"],
    ['{"prompt_length": 1e3}', "1e3"],
    ['{"prompt_length": 2147483648}', "2147483648"],
    ['{"prompt_length": 1, "prompt_length": 1.5}', "1.5"],
    ['{"prompt\\u005flength": 0.5}', "0.5"],
  ])("refuses %s naming the field and the number", (text, token) => {
    JSON.parse(text);
    const result = goIntegers(text, fields);
    expect(result).toMatchObject({ ok: false, field: "prompt_length" });
    expect(result.ok ? "" : result.problem).toContain(`must be an int32 (an integer from -2147483648 to 2147483647), not ${token}`);
  });

  it("takes any int64 timestamp exactly, past 2^53 too, and nothing beyond", () => {
    expect(goIntegers('{"timestamp": 9223372036854775807}', fields)).toEqual({ ok: true, values: new Map([["timestamp", 2n ** 63n - 1n]]) });
    expect(goIntegers('{"timestamp": -9223372036854775808}', fields)).toEqual({ ok: true, values: new Map([["timestamp", -(2n ** 63n)]]) });
    expect(goIntegers('{"timestamp": 1735689600123456789}', fields)).toEqual({ ok: true, values: new Map([["timestamp", 1735689600123456789n]]) });
    expect(goIntegers('{"timestamp": 9223372036854775808}', fields)).toMatchObject({ ok: false, field: "timestamp" });
  });

  it("leaves null, strings, non-objects and other keys to the schema", () => {
    for (const text of ['{"prompt_length": null}', '{"prompt_length": "1.0"}', "[1.0]", "1.0", '"x"', '{"other": 1.5}', "{}"]) {
      expect(goIntegers(text, fields)).toEqual({ ok: true, values: new Map() });
    }
  });

  it("finds exactly the top-level numbers of the fields, whatever the other members and spacing", () => {
    const space = fc.constantFrom("", " ", "\n", "\t ", "\r\n");
    const number = fc.oneof(
      fc.bigInt({ min: -(2n ** 64n), max: 2n ** 64n }).map(String),
      fc.double({ noNaN: true, noDefaultInfinity: true }).map((value) => JSON.stringify(value)),
      fc.tuple(fc.nat(99), fc.nat(99)).map(([whole, part]) => `${whole}.${part}`),
      fc.tuple(fc.nat(9), fc.integer({ min: -5, max: 5 })).map(([whole, exponent]) => `${whole}e${exponent}`),
    );
    const member = fc.record({
      key: fc.constantFrom("prompt_length", "timestamp", "cluster", "prompt_length ", "x"),
      value: fc.oneof(number.map((token) => ({ token })), fc.jsonValue().map((value) => ({ json: JSON.stringify(value) }))),
      before: space,
      after: space,
    });
    fc.assert(
      fc.property(fc.array(member, { maxLength: 6 }), (members) => {
        const text = `{${members.map(({ key, value, before, after }) => `${before}${JSON.stringify(key)}${after}:${before}${"token" in value ? value.token : value.json}${after}`).join(",")}}`;
        JSON.parse(text);
        let expected: ReturnType<typeof goIntegers> = { ok: true, values: new Map() };
        for (const { key, value } of members) {
          // A generated JSON value may be a number too.
          const token = "token" in value ? value.token : typeof JSON.parse(value.json) === "number" ? value.json : undefined;
          if (token === undefined || (key !== "prompt_length" && key !== "timestamp")) continue;
          const bits = key === "prompt_length" ? 31n : 63n;
          const integer = /^-?\d+$/.test(token) ? BigInt(token) : undefined;
          if (integer === undefined || integer < -(2n ** bits) || integer >= 2n ** bits) {
            expected = { ok: false, field: key, problem: expect.any(String) as unknown as string };
            break;
          }
          if (expected.ok) expected.values.set(key, integer);
        }
        expect(goIntegers(text, fields)).toEqual(expected);
      }),
      { numRuns: 500 },
    );
  });
});
