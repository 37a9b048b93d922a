import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";

export const root = new URL("../..", import.meta.url).pathname;
const main = join(root, "src/main.ts");
// One process, not the tsx wrapper and its child: a signal (even SIGKILL) reaches the sidecar itself.
export const node = (args: string[]) => [process.execPath, ["--import", "tsx", main, ...args]] as const;

export interface Running {
  child: ChildProcess;
  ports: { extproc: number; health: number; http: number };
  exit: Promise<number | null>;
  /** The log lines written so far, parsed. */
  logged: Array<Record<string, unknown>>;
}

/** Runs `metadata-center serve` as its own process and waits for its "serving" log line. */
export async function serve(args: string[], env: Record<string, string> = {}): Promise<Running> {
  const child = spawn(...node(["serve", ...args]), { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const exit = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const lines = createInterface({ input: child.stdout! });
  const logged: Running["logged"] = [];
  const ports = await new Promise<Running["ports"]>((resolve, reject) => {
    lines.on("line", (line) => {
      const entry = JSON.parse(line) as { msg: string; extproc: number; health: number; http: number };
      logged.push(entry);
      if (entry.msg === "metadata-center serving") resolve({ extproc: entry.extproc, health: entry.health, http: entry.http });
    });
    void exit.then((code) => reject(new Error(`exited with ${code} before serving`)));
  });
  return { child, ports, exit, logged };
}
