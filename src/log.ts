import { pino, type Logger } from "pino";

export type { Logger };

export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];

/** JSON lines to stdout through pino's asynchronous writer, so logging never blocks a stream. */
export function createLogger(level: LogLevel): Logger {
  return pino({ level, base: { service: "metadata-center" } }, pino.destination({ sync: false }));
}
