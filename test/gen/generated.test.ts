import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const root = new URL("../..", import.meta.url).pathname;

function files(dir: string): Map<string, string> {
  const found = new Map<string, string>();
  const walk = (path: string): void => {
    for (const name of readdirSync(path)) {
      const full = join(path, name);
      if (statSync(full).isDirectory()) walk(full);
      else found.set(relative(dir, full), readFileSync(full, "utf8"));
    }
  };
  walk(dir);
  return found;
}

describe("src/gen", () => {
  it("is exactly what `npm run generate` produces from proto/", () => {
    const out = mkdtempSync(join(tmpdir(), "mc-gen-"));
    try {
      execFileSync("npm", ["run", "--silent", "generate", "--", "-o", out], { cwd: root, stdio: "pipe" });
      const fresh = files(join(out, "src/gen"));
      const committed = files(join(root, "src/gen"));
      expect(fresh.size).toBeGreaterThan(10);
      expect([...committed.keys()].sort()).toEqual([...fresh.keys()].sort());
      for (const [path, text] of fresh) expect(committed.get(path), path).toBe(text);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
