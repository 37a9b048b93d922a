import { readFileSync } from "node:fs";

/**
 * This build's version, from the package.json beside `src/` or `dist/` (as the Go service reads
 * its VERSION file, and says v0.0.0 when it cannot).
 */
export const version: string = (() => {
  try {
    const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version?: unknown };
    return typeof manifest.version === "string" && manifest.version.trim() !== "" ? manifest.version.trim() : "v0.0.0";
  } catch {
    return "v0.0.0";
  }
})();
