import { Worker } from "node:worker_threads";

/**
 * Starts a worker thread on a module beside the caller. Under vitest and tsx that module is
 * TypeScript source; in dist/ it is compiled. Node 20 applies no module hooks from a worker's
 * execArgv (`--import tsx`) to its entry (nodejs/node#47747), so from source the thread registers
 * tsx's hooks itself, then imports the module.
 */
export function startThread(module: URL, workerData: unknown): Worker {
  if (!module.pathname.endsWith(".ts")) return new Worker(module, { workerData });
  const tsx = import.meta.resolve("tsx/esm/api");
  const bootstrap = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(module.href)}); });`;
  return new Worker(bootstrap, { workerData, eval: true });
}

/** The URL of a thread module `name` (without extension) beside `from`, in the form `from` runs in. */
export function threadModule(name: string, from: string): URL {
  return new URL(`./${name}${from.endsWith(".ts") ? ".ts" : ".js"}`, from);
}
