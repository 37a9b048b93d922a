// The request parsing thread (started by request-parser.ts): parses large request bodies so that
// JSON.parse of megabytes (~170 ms for 16 MiB of chat turns) never holds the event loop.
import { parentPort } from "node:worker_threads";
import { parseInferenceRequest, promptText } from "./request.js";
import { countingCost, sizeOf } from "./estimate.js";
import { SAMPLE_COST, samplePrompt } from "./prompt-sample.js";
import type { OffThreadParse, ParseJob } from "./request-parser.js";

const port = parentPort;
if (port === null) throw new Error("parse-thread.ts runs as a worker thread only");

port.on("message", (job: ParseJob) => {
  const body = Buffer.from(job.body.buffer, job.body.byteOffset, job.body.byteLength);
  const parsed = parseInferenceRequest(job.path, body);
  let reply: OffThreadParse;
  if (!parsed.ok) reply = parsed;
  else {
    const { withUsage, texts, ...request } = parsed.request;
    const text = promptText(parsed.request);
    const size = sizeOf(text);
    // Only a sample crosses back when the text is longer than any tokenizer counts whole.
    reply =
      countingCost(size) > job.wholeUpToCost
        ? { ok: true, request: { ...request, texts: [], sample: samplePrompt(text, SAMPLE_COST, size) } }
        : { ok: true, request: { ...request, texts } };
    if (job.includeUsage && withUsage !== undefined) reply.withUsageBody = withUsage();
  }
  port.postMessage({ id: job.id, reply });
});
