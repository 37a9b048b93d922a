// The one place that chooses an API shape's adapter, from the request's normalised path.
import type { ParseResult } from "../request.js";
import type { ApiAdapter } from "./api.js";
import { anthropic } from "./anthropic/index.js";
import { openAi } from "./openai/index.js";

export type { ApiAdapter } from "./api.js";

/** Every adapter; a new API shape is one folder beside these and one entry here. */
const ADAPTERS: readonly ApiAdapter[] = [openAi, anthropic];
const DEFAULT_ADAPTER = openAi;

const byPath = new Map(ADAPTERS.flatMap((adapter) => adapter.paths.map((path) => [path, adapter] as const)));
const byName = new Map(ADAPTERS.map((adapter) => [adapter.name, adapter]));

/** A request's API shape, chosen once from its path, and the path as it was normalised. */
export interface ApiRoute {
  api: ApiAdapter;
  path: string;
}

/**
 * The API path as the engines route it: no query or fragment, percent-escapes decoded, runs of
 * slashes merged, no trailing slash. `/v1/chat/%63ompletions/` and `//v1/chat/completions?x` are
 * chat completions to an engine, so they are priced as such here.
 */
export function apiPath(target: string): string {
  let path = target;
  const end = path.search(/[?#]/);
  if (end !== -1) path = path.slice(0, end);
  if (path.includes("%")) {
    try {
      path = decodeURIComponent(path);
    } catch {
      // A malformed escape stays as sent: no engine route matches it either.
    }
  }
  path = path.replace(/\/+/g, "/");
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

/** The adapter for a request target (its `:path`), chosen from the normalised path. */
export function apiRoute(target: string): ApiRoute {
  const path = apiPath(target);
  return { api: byPath.get(path) ?? DEFAULT_ADAPTER, path };
}

/** The adapter named in a parse job; an unknown name is a defect of the sender. */
export function apiNamed(name: string): ApiAdapter {
  const adapter = byName.get(name);
  if (adapter === undefined) throw new Error(`no API adapter named '${name}'`);
  return adapter;
}

/** The shape of an error written before any path is known (a failure before the request's headers). */
export const defaultApi: ApiAdapter = DEFAULT_ADAPTER;

/** Parses a body sent to `route`: a target as sent (its adapter is chosen here) or one already routed. */
export function parseInferenceRequest(route: ApiRoute | string, body: Buffer | undefined, includeUsage = false): ParseResult {
  const { api, path } = typeof route === "string" ? apiRoute(route) : route;
  return api.parse(path, body, includeUsage);
}
