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
      // Whatever failed, the watcher's timer must not take the process down: the last good config stays.
      onRejected(error instanceof ConfigError ? error : new ConfigError(`config ${file} could not be applied: ${(error as Error).message}`));
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
