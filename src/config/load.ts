import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import type { z } from "zod";
import { configSchema, type Config } from "./schema.js";

/** Refused config: the message names the file, each field and its problem. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** One setting given outside the file (flag or environment), applied over it. */
export interface Override {
  path: readonly string[];
  value: string;
  /** Where it came from, for error messages: `--http-port`, `env METADATA_CENTER_HTTP_PORT`. */
  source: string;
  numeric: boolean;
}

const fieldName = (path: readonly PropertyKey[]): string =>
  path.reduce<string>((name, key) => (typeof key === "number" ? `${name}[${key}]` : name ? `${name}.${String(key)}` : String(key)), "") ||
  "(top level)";

/** Each problem on its field, and where the value came from when a flag or the environment set it. */
function describe(issues: readonly z.core.$ZodIssue[], overrides: readonly Override[]): string {
  return issues
    .map((issue) => {
      const field = fieldName(issue.path);
      const override = overrides.findLast((candidate) => candidate.path.join(".") === field);
      return `  - ${field}${override === undefined ? "" : ` (from ${override.source})`}: ${issue.message}`;
    })
    .join("\n");
}

function applyOverride(target: Record<string, unknown>, override: Override): string | undefined {
  let value: string | number = override.value;
  if (override.numeric) {
    value = Number(override.value);
    if (override.value.trim() === "" || !Number.isFinite(value)) {
      return `  - ${override.path.join(".")} (from ${override.source}): ${JSON.stringify(override.value)} is not a number`;
    }
  }
  let node = target;
  for (const key of override.path.slice(0, -1)) {
    const next = node[key];
    node[key] = typeof next === "object" && next !== null && !Array.isArray(next) ? next : {};
    node = node[key] as Record<string, unknown>;
  }
  node[override.path[override.path.length - 1] ?? ""] = value;
  return undefined;
}

/** Validates config text (YAML, or JSON which is YAML too) with overrides applied over it. */
export function parseConfig(text: string, file: string, overrides: readonly Override[] = []): Config {
  let raw: unknown;
  try {
    raw = parseYaml(text, { prettyErrors: true });
  } catch (error) {
    throw new ConfigError(`config ${file} is not valid YAML: ${(error as Error).message}`);
  }
  if (raw === null || raw === undefined) raw = {};
  if (typeof raw !== "object" || Array.isArray(raw)) throw new ConfigError(`config ${file}: the top level must be a mapping`);
  const problems = overrides
    .map((override) => applyOverride(raw as Record<string, unknown>, override))
    .filter((problem): problem is string => problem !== undefined);
  if (problems.length > 0) throw new ConfigError(`config ${file} is invalid:\n${problems.join("\n")}`);
  const result = configSchema.safeParse(raw);
  if (!result.success) throw new ConfigError(`config ${file} is invalid:\n${describe(result.error.issues, overrides)}`);
  return result.data;
}

export function loadConfig(file: string, overrides: readonly Override[] = []): Config {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    throw new ConfigError(`config ${file} cannot be read: ${(error as Error).message}`);
  }
  return parseConfig(text, file, overrides);
}
