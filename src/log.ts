import { pino, type Logger } from "pino";
import pinoPretty from "pino-pretty";

export type { Logger };

export const logLevels = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof logLevels)[number];
/** json: one JSON object per line (for collectors); pretty: aligned, coloured lines for a person at a terminal. */
export const logFormats = ["json", "pretty"] as const;
/** epoch: milliseconds since 1970 (pino's own, cheapest); iso: an ISO 8601 UTC time. */
export const logTimes = ["epoch", "iso"] as const;

export interface LogFormat {
  format: (typeof logFormats)[number];
  time: (typeof logTimes)[number];
}

/** Log lines to stdout through an asynchronous writer, so logging never blocks a stream. */
export function createLogger(level: LogLevel, { format, time }: LogFormat = { format: "json", time: "epoch" }): Logger {
  const options = { level, base: { service: "metadata-center" }, ...(time === "iso" ? { timestamp: pino.stdTimeFunctions.isoTime } : {}) };
  if (format === "json") return pino(options, pino.destination({ sync: false }));
  const pretty = pinoPretty({
    destination: 1,
    sync: false,
    colorize: process.stdout.isTTY === true,
    ignore: "pid,hostname,service",
    translateTime: time === "iso" ? "UTC:yyyy-mm-dd'T'HH:MM:ss.l'Z'" : "SYS:HH:MM:ss.l",
  });
  return pino(options, pretty);
}
