import { z } from "zod";
import type { Logger } from "../log.js";
import type { WriteResult } from "./load-writes.js";
import { validate } from "./validation.js";

/** The Go service's level names, mapped to pino's. */
const levels = { DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error" } as const;

const schema = z.object({ LevelParam: z.enum(Object.keys(levels) as [keyof typeof levels, ...Array<keyof typeof levels>]) });

/** `POST /log/level`: change the log level at run time (until the next config reload sets it). */
export function setLogLevel(log: Logger, body: unknown): WriteResult {
  const parsed = validate(schema, body);
  if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
  log.level = levels[parsed.value.LevelParam];
  return { ok: true };
}
