import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

const binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].find((path) => existsSync(path));

/**
 * Why the browser tests cannot run here, or undefined when they can. With
 * METADATA_CENTER_REQUIRE_CHROMIUM set (as .ci/run sets it) a missing Chromium fails them instead.
 */
export const chromiumMissing: string | undefined = (() => {
  if (binary !== undefined) return undefined;
  const reason = "Chromium not installed (apt-get install chromium)";
  if (process.env["METADATA_CENTER_REQUIRE_CHROMIUM"]) throw new Error(reason);
  return reason;
})();

/** Debian's Chromium, headless, driven through playwright-core (which brings no browser of its own). */
export function launchChromium(): Promise<Browser> {
  if (binary === undefined) throw new Error(chromiumMissing);
  return chromium.launch({ executablePath: binary, headless: true, args: ["--no-sandbox"] });
}
