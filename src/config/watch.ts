import { watch, type FSWatcher } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { ConfigError, parseConfig, type Override } from "./load.js";
import type { Config } from "./schema.js";

export interface ConfigWatch {
  close(): void;
}

/**
 * Reloads the config when its file changes. The folder is watched, not the file: editors
 * replace files by rename and Kubernetes swaps a ConfigMap's symlinked folder, both of which
 * a watch on the file itself would miss. A bad file is reported and the last good config kept.
 */
export function watchConfig(
  file: string,
  overrides: readonly Override[],
  onReload: (config: Config) => void,
  onRejected: (error: ConfigError) => void,
  debounceMs = 100,
): ConfigWatch {
  const path = resolve(file);
  let lastText: string | undefined;
  let timer: NodeJS.Timeout | undefined;
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
  const watcher: FSWatcher = watch(dirname(path), () => {
    clearTimeout(timer);
    timer = setTimeout(() => void reload(), debounceMs);
  });
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      watcher.close();
    },
  };
}
