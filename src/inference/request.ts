import type { PromptSample } from "./prompt-sample.js";

/** What the picker needs to know about one request, whatever API shape it came in (apis/ fills it in). */
export interface InferenceRequest {
  /** The `model` field; undefined for paths that carry none (routed to the catch-all pool). */
  model: string | undefined;
  /** Prompt texts, in order; counted by the tokenizer as one text. */
  texts: string[];
  /** Set instead of `texts` when a prompt parsed off the event loop was too long to count whole. */
  sample?: PromptSample;
  /** Prompt tokens given as token ids: counted exactly. */
  tokenIds: number;
  /** Tokens of a body read as a whole, not field by field (an API path without a prompt reader): the estimate of its text. */
  estimatedTokens: number;
  /** Chat messages (or Responses input items), for the chat template's per-message overhead. */
  messages: number;
  /** Images and audio clips in the prompt: their token cost is a configured estimate. */
  images: number;
  audios: number;
  stream: boolean;
  /** A streaming request that asks for `usage` itself (`stream_options.include_usage`): the engine's own counts come at its end. */
  asksUsage: boolean;
  /**
   * Built when asked for, for a streaming chat or completions request that does not ask for
   * `usage`: the body with `stream_options.include_usage: true` added, so the engine reports its
   * own counts.
   */
  withUsageBody?: Buffer;
}

/** The prompt's texts as one text, as they are counted. */
export const promptText = (request: Pick<InferenceRequest, "texts">): string => request.texts.join("\n");

export type ParseResult = { ok: true; request: InferenceRequest } | { ok: false; message: string };

/** A request whose body the picker does not see: routed by headers, zero prompt tokens. */
export const bodilessRequest = (): InferenceRequest => ({
  model: undefined,
  texts: [],
  tokenIds: 0,
  estimatedTokens: 0,
  messages: 0,
  images: 0,
  audios: 0,
  stream: false,
  asksUsage: false,
});
