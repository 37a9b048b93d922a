import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { watchFolders, type FolderWatch } from "../file-watch.js";
import { ConfigError, parseConfig, type Override } from "./load.js";
import type { Config } from "./schema.js";

/** Reloads the config when its file changes (see watchFolders). A bad file is reported and the last good config kept. */
export function watchConfig(
  file: string,
  overrides: readonly Override[],
  onReload: (config: Config) => void,
  onRejected: (error: ConfigError) => void,
  debounceMs = 100,
): FolderWatch {
  const path = resolve(file);
  let lastText: string | undefined;
  let closed = false;

  const reload = async (): Promise<void> => {
    let text: string;
    try {
      text = await readFile(path, "utf8");
    } catch (error) {
      // Mid-swap the file can be missing for a moment; the next event brings it back.
      if ((error as NodeJS.ErrnoException).code !== "ENOENT") onRejected(new ConfigError(`config ${file} cannot be read: ${(error as Error).message}`));
      return;
    }
    if (closed || text === lastText) return;
    lastText = text;
    try {
      onReload(parseConfig(text, file, overrides));
    } catch (error) {
      if (error instanceof ConfigError) onRejected(error);
      else throw error;
    }
  };

  // Remember what is loaded now, so the first event compares against it.
  void readFile(path, "utf8").then((text) => (lastText ??= text), () => undefined);
  const watch = watchFolders([path], () => void reload(), debounceMs);
  return {
    close() {
      closed = true;
      watch.close();
    },
  };
}
