/** Why a bind failed, as an operator reads it, from the system's error code. */
const REASONS: Record<string, string> = {
  EADDRINUSE: "the port is already in use",
  EACCES: "permission denied (a port below 1024 needs privileges)",
  EADDRNOTAVAIL: "no such address on this host",
};

/** A listener that could not start: which one, where, and why, said in one line. */
export class ListenError extends Error {
  override readonly name = "ListenError";

  constructor(listener: string, host: string, port: number, cause: unknown) {
    const text = cause instanceof Error ? cause.message : String(cause);
    // grpc-js folds the system error into its own message: the code is found in the text.
    const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? /\b(E[A-Z]+)\b/.exec(text)?.[1];
    const where = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    super(`cannot listen for ${listener} on ${where}: ${(code !== undefined ? REASONS[code] : undefined) ?? text}`, { cause });
  }
}
