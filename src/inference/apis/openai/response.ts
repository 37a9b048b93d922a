import type { ReportedUsage } from "../../../load/store.js";
import { countProblem, isObject, MAX_ERROR_TEXT, type JsonObject, type ProgressSink, type ResponseReader } from "../../response.js";

/**
 * `usage` as chat and completions report it (prompt/completion) or as the Responses API does
 * (input/output); a string when it is there but not a sane count (it is then ignored).
 */
function readUsage(holder: JsonObject): ReportedUsage | string | undefined {
  const usage = holder["usage"];
  if (!isObject(usage)) return undefined;
  const [promptField, prompt] = "prompt_tokens" in usage ? ["usage.prompt_tokens", usage["prompt_tokens"]] : ["usage.input_tokens", usage["input_tokens"]];
  const [completionField, completion] =
    "completion_tokens" in usage ? ["usage.completion_tokens", usage["completion_tokens"]] : ["usage.output_tokens", usage["output_tokens"]];
  if (prompt === undefined || prompt === null || completion === undefined || completion === null) return undefined;
  const details = usage["prompt_tokens_details"] ?? usage["input_tokens_details"];
  const cached = isObject(details) ? details["cached_tokens"] : undefined;
  const problem =
    countProblem(promptField, prompt) ?? countProblem(completionField, completion) ?? (typeof cached === "number" ? countProblem("cached_tokens", cached) : undefined);
  if (problem !== undefined) return problem;
  const counts = { promptTokens: prompt as number, completionTokens: completion as number };
  return typeof cached === "number" ? { ...counts, cachedTokens: cached } : counts;
}

/** The engine's error, as text for the log; never throws (an error nested deeper than the stack allows is named so). */
function readError(body: JsonObject): string | undefined {
  const error = body["error"];
  if (error === undefined || error === null) return undefined;
  if (isObject(error) && typeof error["message"] === "string") return error["message"].slice(0, MAX_ERROR_TEXT);
  if (typeof error === "string") return error.slice(0, MAX_ERROR_TEXT);
  try {
    return (JSON.stringify(error) ?? "error").slice(0, MAX_ERROR_TEXT);
  } catch {
    return "error (nested too deeply to show)";
  }
}

const OUTPUT_FIELDS = ["content", "reasoning_content", "reasoning"] as const;

/**
 * The output a streamed chat or completions choice carries (text, reasoning, tool-call name and
 * arguments), "" for a tool-call delta with no text yet, undefined when it carries none (a
 * role-only delta).
 */
function choiceOutput(choice: unknown): string | undefined {
  if (!isObject(choice)) return undefined;
  if (typeof choice["text"] === "string" && choice["text"].length > 0) return choice["text"];
  const delta = choice["delta"];
  if (!isObject(delta)) return undefined;
  let output: string | undefined;
  // Engines differ in which they leave empty or null beside the other (content "" next to reasoning).
  for (const key of OUTPUT_FIELDS) {
    const text = delta[key];
    if (typeof text === "string" && text.length > 0) output = (output ?? "") + text;
  }
  const calls = delta["tool_calls"];
  if (!Array.isArray(calls) || calls.length === 0) return output;
  output ??= "";
  for (const call of calls) {
    const fn = isObject(call) ? call["function"] : undefined;
    if (!isObject(fn)) continue;
    if (typeof fn["name"] === "string") output += fn["name"];
    if (typeof fn["arguments"] === "string") output += fn["arguments"];
  }
  return output;
}

/** Responses API stream events that carry generated output in `delta`. */
const RESPONSES_OUTPUT_EVENTS = new Set([
  "response.output_text.delta",
  "response.refusal.delta",
  "response.reasoning_text.delta",
  "response.reasoning_summary_text.delta",
  "response.function_call_arguments.delta",
]);
/** Responses API stream events that end the response, carrying it (and its `usage`). */
const RESPONSES_END_EVENTS = new Set(["response.completed", "response.incomplete", "response.failed"]);

/** Chat and completions: `choices` deltas, and `usage` (final chunk, or every chunk with continuous usage). */
function choicesEvent(name: string | undefined, body: JsonObject, into: ProgressSink): void {
  into.usage(readUsage(body));
  const error = name === "error" ? (readError(body) ?? "error event") : readError(body);
  if (error !== undefined) into.error(error);
  const choices = body["choices"];
  if (!Array.isArray(choices)) return;
  for (const choice of choices) {
    const output = choiceOutput(choice);
    if (output !== undefined) into.output(output);
  }
}

/** Responses API: typed events; output in `*.delta` events, usage in the response that ends it. */
function responsesEvent(type: string, body: JsonObject, into: ProgressSink): void {
  if (type === "error") {
    into.error(typeof body["message"] === "string" ? body["message"].slice(0, MAX_ERROR_TEXT) : "error event");
    return;
  }
  const delta = body["delta"];
  if (RESPONSES_OUTPUT_EVENTS.has(type) && typeof delta === "string") {
    into.output(delta);
    return;
  }
  const response = body["response"];
  if (!RESPONSES_END_EVENTS.has(type) || !isObject(response)) return;
  into.usage(readUsage(response));
  if (type === "response.failed") into.error(readError(response) ?? "response failed");
}

/** Reads OpenAI-style responses: chat and completions chunks, Responses API events, a JSON body's `usage`. Keeps no state. */
export const openAiResponses: ResponseReader = {
  event(name, body, into) {
    const type = body["type"];
    if (typeof type === "string" && (type.startsWith("response.") || type === "error")) responsesEvent(type, body, into);
    else choicesEvent(name, body, into);
  },
  json(body, into) {
    into.usage(readUsage(body));
  },
};
