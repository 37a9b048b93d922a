import type { Refusal } from "../refusal.js";
import type { ParseResult } from "../request.js";
import type { OutputCounter, ResponseScanner } from "../response.js";

/**
 * Everything the sidecar knows about one API shape (OpenAI-style, Anthropic Messages, …): how its
 * requests carry the prompt, how its responses show progress, and how its clients expect an error.
 * The lifecycle sees only the common parsed request and progress these produce.
 */
export interface ApiAdapter {
  /** Names the adapter across threads: a parse job carries it (functions do not cross). */
  readonly name: string;
  /** Normalised paths this shape serves; the default adapter serves every path no other claims. */
  readonly paths: readonly string[];
  /** The whole request body, parsed once at its end; `path` is normalised (apiPath). */
  parse(path: string, body: Buffer | undefined, includeUsage: boolean): ParseResult;
  /** A fresh scanner for one response; `outputTokens` counts what it generates. */
  scanner(contentType: string | undefined, maxJsonBytes: number, outputTokens: OutputCounter): ResponseScanner;
  /** The JSON body of a refusal, as this shape's clients read errors. */
  errorBody(refusal: Refusal, requestId: string | undefined): string;
}
