import type { Upstream } from "../envoy/ext-proc-client.js";

/** An engine streaming one token then [DONE], once `held` (if given) has settled: its requests stay open until then. */
export const sseEngine =
  (held: Promise<void> = Promise.resolve()): Upstream =>
  async () => {
    await held;
    return {
      status: 200,
      headers: { "content-type": "text/event-stream" },
      body: (async function* () {
        yield 'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n';
        yield "data: [DONE]\n\n";
      })(),
      ending: "eos-on-last",
    };
  };
