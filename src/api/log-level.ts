import { z } from "zod";
import type { Logger } from "../log.js";
import type { WriteResult } from "./load-writes.js";
import { validate } from "./validation.js";

/** The Go service's level names (pkg/log/log.go, matched exactly, upper case), mapped to pino's. */
const levels = { TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error", FATAL: "fatal" } as const;
const names = Object.keys(levels) as [keyof typeof levels, ...Array<keyof typeof levels>];

const schema = z.object({ LevelParam: z.enum(names, { error: `log LevelParam can only be [${names.join(" ")}]` }) });

/** `POST /log/level`: change the log level at run time (until the next config reload sets it), answered as the Go service answers. */
export function setLogLevel(log: Logger, body: unknown): WriteResult {
  const parsed = validate(schema, body);
  if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
  log.level = levels[parsed.value.LevelParam];
  return { ok: true, data: "log level updated successfully" };
}
