// A tokenizer worker thread (started by worker.ts): loads one tokenizer.json, then counts the
// texts posted to it, answering each in the order received.
import { parentPort, workerData } from "node:worker_threads";
import { loadHuggingFaceTokenizer } from "./huggingface.js";

/** The thread's first message: the file is loaded, or why not (the message names the file). */
export type LoadReply = { loaded: true } | { loaded: false; message: string };
/** One per text posted: its tokens, or null when the tokenizer failed on it (the host estimates it). */
export type CountReply = number | null;

const port = parentPort;
if (port === null) throw new Error("thread.ts runs as a worker thread only");
const { file } = workerData as { file: string };

try {
  const tokenizer = await loadHuggingFaceTokenizer(file);
  port.on("message", (text: string) => {
    let reply: CountReply;
    try {
      reply = tokenizer.count(text);
    } catch {
      reply = null;
    }
    port.postMessage(reply);
  });
  port.postMessage({ loaded: true } satisfies LoadReply);
} catch (error) {
  port.postMessage({ loaded: false, message: (error as Error).message } satisfies LoadReply);
}
