// The request parsing thread (started by request-parser.ts): parses large request bodies so that
// JSON.parse of megabytes (~170 ms for 16 MiB of chat turns) never holds the event loop.
import { parentPort } from "node:worker_threads";
import { apiNamed } from "./apis/index.js";
import { promptText } from "./request.js";
import { countingCost, sizeOf } from "./estimate.js";
import { SAMPLE_COST, samplePrompt } from "./prompt-sample.js";
import type { OffThreadParse, ParseJob } from "./request-parser.js";

const port = parentPort;
if (port === null) throw new Error("parse-thread.ts runs as a worker thread only");

/** The reply to one job; a throw here would stop the thread and every body it holds, so it becomes an answer too. */
function parseJob(job: ParseJob): OffThreadParse {
  const body = Buffer.from(job.body.buffer, job.body.byteOffset, job.body.byteLength);
  const parsed = apiNamed(job.api).parse(job.path, body, job.includeUsage);
  if (!parsed.ok) return parsed;
  const { withUsageBody, texts, ...request } = parsed.request;
  const text = promptText(parsed.request);
  const size = sizeOf(text);
  // Only a sample crosses back when the text is longer than any tokenizer counts whole.
  const reply: OffThreadParse =
    countingCost(size) > job.wholeUpToCost
      ? { ok: true, request: { ...request, texts: [], sample: samplePrompt(text, SAMPLE_COST, size) } }
      : { ok: true, request: { ...request, texts } };
  if (withUsageBody !== undefined) reply.withUsageBody = withUsageBody;
  return reply;
}

port.on("message", (job: ParseJob) => {
  let reply: OffThreadParse | { failed: string };
  try {
    reply = parseJob(job);
  } catch (error) {
    reply = { failed: error instanceof Error ? error.message : String(error) };
  }
  port.postMessage({ id: job.id, reply });
});
