import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const made: string[] = [];
const removeAll = (): void => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true });
};
// A benchmark's process exits; a vitest worker may be ended without its exit handlers, so a test file removes them when it is done.
process.once("exit", removeAll);
if (process.env["VITEST"] !== undefined) (await import("vitest")).afterAll(removeAll);

/** A new folder under the system's temp folder, removed when the test file (or the benchmark's process) is done. */
export function tempFolder(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}
