import { scannerFor } from "../../response.js";
import type { ApiAdapter } from "../api.js";
import { openAiErrorBody } from "./refusal.js";
import { parseOpenAiRequest } from "./request.js";
import { openAiResponses } from "./response.js";

/**
 * The OpenAI-style API (chat, completions, embeddings, responses) and the default for every
 * other path: engines speak it, so a path no adapter claims is read as theirs.
 */
export const openAi: ApiAdapter = {
  name: "openai",
  paths: [],
  parse: parseOpenAiRequest,
  scanner: (contentType, maxJsonBytes, outputTokens) => scannerFor(contentType, maxJsonBytes, openAiResponses, outputTokens),
  errorBody: (refusal) => openAiErrorBody(refusal),
};
