const UNITS: Readonly<Record<string, bigint>> = {
  ns: 1n,
  us: 1_000n,
  "\u00b5s": 1_000n,
  "\u03bcs": 1_000n,
  ms: 1_000_000n,
  s: 1_000_000_000n,
  m: 60_000_000_000n,
  h: 3_600_000_000_000n,
};

const TWO_63 = 1n << 63n;
const isDigit = (char: string | undefined): boolean => char !== undefined && char >= "0" && char <= "9";

/**
 * A Go duration string (`660s`, `1m`, `1h30m`, `500ms`, `-1.5h`) in nanoseconds, read exactly as
 * Go's `time.ParseDuration` reads it (the Go metadata-center reads its duration variables so),
 * fractions rounded as Go rounds them; or Go's own message for why it is not one.
 */
export function parseGoDuration(text: string): { ok: true; nanoseconds: bigint } | { ok: false; reason: string } {
  const invalid = { ok: false, reason: `time: invalid duration ${JSON.stringify(text)}` } as const;
  let rest = text;
  let negative = false;
  if (rest[0] === "-" || rest[0] === "+") {
    negative = rest[0] === "-";
    rest = rest.slice(1);
  }
  if (rest === "0") return { ok: true, nanoseconds: 0n };
  if (rest === "") return invalid;
  let total = 0n;
  while (rest !== "") {
    if (!(rest[0] === "." || isDigit(rest[0]))) return invalid;
    let at = 0;
    let whole = 0n;
    for (; isDigit(rest[at]); at += 1) {
      if (whole > TWO_63 / 10n) return invalid;
      whole = whole * 10n + BigInt(rest[at]!);
      if (whole > TWO_63) return invalid;
    }
    const hasWhole = at > 0;
    let fraction = 0n;
    let scale = 1;
    let hasFraction = false;
    if (rest[at] === ".") {
      at += 1;
      const start = at;
      let overflow = false;
      for (; isDigit(rest[at]); at += 1) {
        if (overflow) continue;
        // Digits past what a uint64 holds are dropped, as Go drops them.
        const next = fraction * 10n + BigInt(rest[at]!);
        if (fraction > (TWO_63 - 1n) / 10n || next > TWO_63) {
          overflow = true;
          continue;
        }
        fraction = next;
        scale *= 10;
      }
      hasFraction = at > start;
    }
    if (!hasWhole && !hasFraction) return invalid;
    const unitStart = at;
    while (at < rest.length && rest[at] !== "." && !isDigit(rest[at])) at += 1;
    if (at === unitStart) return { ok: false, reason: `time: missing unit in duration ${JSON.stringify(text)}` };
    const name = rest.slice(unitStart, at);
    const unit = Object.hasOwn(UNITS, name) ? UNITS[name] : undefined;
    if (unit === undefined) return { ok: false, reason: `time: unknown unit ${JSON.stringify(name)} in duration ${JSON.stringify(text)}` };
    rest = rest.slice(at);
    if (whole > TWO_63 / unit) return invalid;
    let value = whole * unit;
    if (fraction > 0n) {
      // Go computes the fraction's share in float64 and truncates it; so does this.
      value += BigInt(Math.trunc(Number(fraction) * (Number(unit) / scale)));
      if (value > TWO_63) return invalid;
    }
    total += value;
    if (total > TWO_63) return invalid;
  }
  if (negative) return { ok: true, nanoseconds: -total };
  return total > TWO_63 - 1n ? invalid : { ok: true, nanoseconds: total };
}

/**
 * Seconds in a duration setting: a Go duration string, or (as before) a bare number of seconds.
 * Throws an Error naming the problem when it is neither or is not more than zero.
 */
export function durationSeconds(text: string): number {
  const trimmed = text.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) {
    const seconds = Number(trimmed);
    if (seconds > 0) return seconds;
    throw new Error(`${JSON.stringify(text)} is not more than zero`);
  }
  const parsed = parseGoDuration(trimmed);
  if (!parsed.ok) throw new Error(`${JSON.stringify(text)} is not a duration (${parsed.reason}); write it as Go does, e.g. 660s, 1m, 1h30m, 500ms, or a number of seconds`);
  if (parsed.nanoseconds <= 0n) throw new Error(`${JSON.stringify(text)} is not more than zero`);
  return Number(parsed.nanoseconds) / 1e9;
}
