import { scannerFor } from "../../response.js";
import type { ApiAdapter } from "../api.js";
import { messagesErrorBody } from "./refusal.js";
import { parseMessagesRequest } from "./request.js";
import { MessagesResponse } from "./response.js";

/** The Anthropic Messages API. Its streams always carry usage, so no body is rewritten to ask for it. */
export const anthropic: ApiAdapter = {
  name: "anthropic",
  paths: ["/v1/messages"],
  parse: (path, body) => parseMessagesRequest(path, body),
  scanner: (contentType, maxJsonBytes, outputTokens) => scannerFor(contentType, maxJsonBytes, new MessagesResponse(), outputTokens),
  errorBody: messagesErrorBody,
};
