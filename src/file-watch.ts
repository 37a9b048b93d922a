import { watch, type FSWatcher } from "node:fs";
import { dirname, resolve } from "node:path";

export interface FolderWatch {
  close(): void;
}

/**
 * Calls `changed`, `debounceMs` after the last event, when any of the files may have changed.
 * Their folders are watched, not the files: editors replace files by rename and Kubernetes swaps
 * a ConfigMap's or Secret's symlinked folder, both of which a watch on the file itself would miss.
 * Any change in those folders calls it, so `changed` must tell for itself what is new.
 */
export function watchFolders(files: readonly string[], changed: () => void, debounceMs: number): FolderWatch {
  let timer: NodeJS.Timeout | undefined;
  const folders = [...new Set(files.map((file) => dirname(resolve(file))))];
  const watchers: FSWatcher[] = folders.map((folder) =>
    watch(folder, () => {
      clearTimeout(timer);
      timer = setTimeout(changed, debounceMs);
    }),
  );
  return {
    close() {
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}
