#!/usr/bin/env node
import { fileURLToPath } from "node:url";
import { format, parseArgs } from "node:util";
import { setLogger } from "@grpc/grpc-js";
import { durationSeconds } from "./config/duration.js";
import { ConfigError, loadConfig, type Override } from "./config/load.js";
import { watchConfig } from "./config/watch.js";
import { TlsFileError } from "./extproc/tls.js";
import { ListenError } from "./listen-error.js";
import { RedisFileError } from "./load/redis/connect.js";
import { createLogger } from "./log.js";
import { startSidecar } from "./sidecar.js";
import { version } from "./version.js";

const usage = `usage: metadata-center serve [options]
       metadata-center --version | --help

  --config FILE        config file (YAML or JSON); default: the embedded deploy/default.yaml
  --extproc-host HOST  ext_proc gRPC listen host     (env METADATA_CENTER_EXTPROC_HOST)
  --extproc-port PORT  ext_proc gRPC listen port     (env METADATA_CENTER_EXTPROC_PORT)
  --health-host HOST   gRPC health listen host       (env METADATA_CENTER_HEALTH_HOST)
  --health-port PORT   gRPC health listen port       (env METADATA_CENTER_HEALTH_PORT)
  --http-host HOST     HTTP API listen host          (env METADATA_CENTER_HTTP_HOST)
  --http-port PORT     HTTP API listen port          (env METADATA_CENTER_HTTP_PORT)
  --log-level LEVEL    trace|debug|info|warn|error   (env METADATA_CENTER_LOG_LEVEL)
  -h, --help           this text
Also: METADATA_CENTER_CONFIG (config file), METADATA_CENTER_HTTP_TOKEN (bearer token for the
HTTP write endpoints; required when the HTTP host is not loopback), METADATA_CENTER_LOAD_REQ_EXPIRE and
METADATA_CENTER_LOAD_GC_INTERVAL (durations as the Go metadata-center reads them: 660s, 1m,
1h30m, 500ms; a bare number is seconds).`;

/** Flag, environment variable, config path, kind of value. Flags win over the environment. */
const settings = [
  ["extproc-host", "METADATA_CENTER_EXTPROC_HOST", ["extproc", "host"], "text"],
  ["extproc-port", "METADATA_CENTER_EXTPROC_PORT", ["extproc", "port"], "number"],
  ["health-host", "METADATA_CENTER_HEALTH_HOST", ["health", "host"], "text"],
  ["health-port", "METADATA_CENTER_HEALTH_PORT", ["health", "port"], "number"],
  ["http-host", "METADATA_CENTER_HTTP_HOST", ["http", "host"], "text"],
  ["http-port", "METADATA_CENTER_HTTP_PORT", ["http", "port"], "number"],
  ["log-level", "METADATA_CENTER_LOG_LEVEL", ["log", "level"], "text"],
  [undefined, "METADATA_CENTER_HTTP_TOKEN", ["http", "token"], "text"],
  [undefined, "METADATA_CENTER_LOAD_REQ_EXPIRE", ["load", "ttlSeconds"], "duration"],
  [undefined, "METADATA_CENTER_LOAD_GC_INTERVAL", ["load", "sweepSeconds"], "duration"],
] as const;

function overridesFrom(flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv): Override[] {
  const overrides: Override[] = [];
  for (const [flag, variable, path, kind] of settings) {
    const fromFlag = flag === undefined ? undefined : flags[flag];
    const [value, source] = fromFlag !== undefined ? [fromFlag, `--${flag}`] : [env[variable], `env ${variable}`];
    if (value === undefined) continue;
    if (kind !== "duration") {
      overrides.push({ path, value, source, numeric: kind === "number" });
      continue;
    }
    try {
      overrides.push({ path, value: String(durationSeconds(value)), source, numeric: true });
    } catch (error) {
      throw new ConfigError(`${source} (${path.join(".")}): ${(error as Error).message}`);
    }
  }
  return overrides;
}

async function serve(args: string[]): Promise<void> {
  const options = Object.fromEntries(settings.flatMap(([flag]) => (flag === undefined ? [] : [[flag, { type: "string" as const }]])));
  const { values } = parseArgs({ args, options: { ...options, config: { type: "string" }, help: { type: "boolean", short: "h" } }, strict: true });
  if (values.help === true) {
    console.log(usage);
    return;
  }
  const file =
    (values.config as string | undefined) ??
    process.env["METADATA_CENTER_CONFIG"] ??
    fileURLToPath(new URL("../deploy/default.yaml", import.meta.url));
  const overrides = overridesFrom(values as Record<string, string | undefined>, process.env);
  const config = loadConfig(file, overrides);
  const log = createLogger(config.log.level, config.log);
  // grpc-js writes its own errors to stderr (a failed bind as a stack trace): they go to the log, at debug.
  setLogger({ error: (...args: unknown[]) => log.debug({ grpc: format(...args) }, "grpc"), info: () => undefined, debug: () => undefined });
  log.info({ config: file }, "config loaded");
  const sidecar = await startSidecar(config, log).catch((error: unknown) => {
    // A TLS or Redis file that exists but cannot be used is a config error like any other.
    throw error instanceof TlsFileError || error instanceof RedisFileError ? new ConfigError(`config ${file} is invalid:\n  - ${error.message}`) : error;
  });
  const watcher = watchConfig(
    file,
    overrides,
    (next) => sidecar.reload(next),
    (error) => log.error({ reason: error.message }, "config reload refused; keeping the last good config"),
  );

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal, graceSeconds: config.shutdown.graceSeconds }, "draining");
    watcher.close();
    void sidecar.stop(config.shutdown.graceSeconds * 1000).then(() => {
      log.info("stopped");
      log.flush(() => process.exit(process.exitCode ?? 0));
    });
  };
  // A tokenizer file that exists but cannot be loaded is a config error like any other at start,
  // found a moment after serving began (requests are estimated while it loads).
  sidecar.tokenizers.catch((error: unknown) => {
    console.error(`config ${file} is invalid: ${(error as Error).message}`);
    process.exitCode = 1;
    stop("config error");
  });
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

/** A command line the CLI does not take: said with the usage, exit 2. */
class UsageError extends Error {}

/** parseArgs's refusals (an unknown option, a missing value, a stray argument) are the caller's mistake. */
const isArgumentError = (error: unknown): error is TypeError =>
  error instanceof TypeError && /^ERR_PARSE_ARGS_/.test((error as NodeJS.ErrnoException).code ?? "");

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve(rest);
    case "--version":
      console.log(version);
      return;
    case undefined:
    case "-h":
    case "--help":
    case "help":
      console.log(usage);
      return;
    default:
      throw new UsageError(command.startsWith("-") ? `unknown option '${command}'` : `unknown command '${command}'`);
  }
}

main(process.argv.slice(2)).catch((error: unknown) => {
  if (error instanceof UsageError || isArgumentError(error)) {
    console.error(`metadata-center: ${error.message}\n\n${usage}`);
    process.exit(2);
  }
  console.error(error instanceof ConfigError || error instanceof ListenError ? error.message : error);
  process.exit(1);
});
