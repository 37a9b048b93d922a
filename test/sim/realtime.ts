import { EnvoyExtProcClient, httpUpstream, type DownstreamObserver } from "../envoy/ext-proc-client.js";
import { promptText } from "./prompt-text.js";
import type { SimRequest } from "./routers.js";
import type { RequestOutcome } from "./run.js";

/**
 * Who chooses each request's engine: the sidecar, or the client naming the engines in turn
 * (round robin) in a GIE subset hint of one engine, which leaves the sidecar no choice: the same
 * path either way, only the choice differs.
 */
export type Chooser = "sidecar" | "round-robin";

export interface RealTimeRun {
  /** host:port of the sidecar's ext_proc listener. */
  readonly extProc: string;
  /** The engines' addresses, in the pool; an outcome's `engine` is an index into it. */
  readonly engines: readonly string[];
  readonly chooser: Chooser;
  /** Wall ms per model ms: the engines run this much slower than the model the list was drawn for, and the arrivals are spread as much. */
  readonly timeScale: number;
  /** The `model` field of every request. */
  readonly model: string;
  /** Told every `progressMs` of the run. */
  readonly progress?: (state: RunProgress) => void;
  readonly progressMs?: number;
}

export interface RunProgress {
  readonly elapsedMs: number;
  readonly sent: number;
  readonly done: number;
}

/** How one request went, as the client saw it, in model ms from the run's start (wall ms over the time scale). */
export interface LiveOutcome extends Omit<RequestOutcome, "cachedTokens"> {
  /** Wall ms by which the client sent it after its arrival time: the driver's own delay. */
  readonly sendLateMs: number;
}

/**
 * A list's requests renamed so that they share no block with any other list, their answers cut to
 * `outputTokens`: run first, they pay what a cold cluster pays once (connections, compiling, the
 * tokenizers' tables) before the requests measured.
 */
export function warmUpRequests(requests: readonly SimRequest[], outputTokens: number): SimRequest[] {
  return requests.map((request, i) => ({
    ...request,
    id: `warm${i}`,
    blockHashes: request.blockHashes.map((hash) => `warm/${hash}`),
    outputTokens: Math.min(request.outputTokens, outputTokens),
  }));
}

const SUBSET_HINT = "envoy.lb.subset_hint";
const SUBSET_KEY = "x-gateway-destination-endpoint-subset";

/** The chat request the real-time run sends for one simulated request. */
export function requestBody(request: SimRequest, model: string): string {
  return JSON.stringify({ model, messages: [{ role: "user", content: promptText(request) }], max_tokens: request.outputTokens, stream: true });
}

/**
 * Runs one request list in real time: each request is sent at its arrival time through the
 * sidecar with the Envoy-faithful ext_proc client (Envoy's side of the stream, then its router to
 * the engine the routing header names, over HTTP), streaming; its first token is the first
 * response body byte the client gets. Any request that does not end in a whole 200 stream fails
 * the run.
 */
export async function runRealTime(requests: readonly SimRequest[], run: RealTimeRun): Promise<LiveOutcome[]> {
  // Rendered before the clock starts, so that sending costs the driver nothing.
  const bodies = requests.map((request) => requestBody(request, run.model));
  const client = new EnvoyExtProcClient(run.extProc);
  const upstream = httpUpstream();
  const started = performance.now();
  const modelMs = (wall: number): number => (wall - started) / run.timeScale;
  let sent = 0;
  let done = 0;
  const ticker =
    run.progress === undefined ? undefined : setInterval(() => run.progress?.({ elapsedMs: performance.now() - started, sent, done }), run.progressMs ?? 5000);

  async function send(request: SimRequest, index: number): Promise<LiveOutcome> {
    const sentAt = performance.now();
    sent += 1;
    let firstAt: number | undefined;
    const downstream: DownstreamObserver = {
      onHeaders() {},
      onData: () => {
        firstAt ??= performance.now();
      },
      onTrailers() {},
      onEnd() {},
      onReset() {},
    };
    const hint = run.chooser === "round-robin" ? { [SUBSET_HINT]: { [SUBSET_KEY]: [run.engines[index % run.engines.length]!] } } : undefined;
    const result = await client.exchange({
      request: { method: "POST", path: "/v1/chat/completions", headers: { "content-type": "application/json" }, body: bodies[index]! },
      upstream,
      metadataContext: hint,
      downstream,
      timeoutMs: 0,
    });
    const endedAt = performance.now();
    done += 1;
    const engine = run.engines.indexOf(result.routedTo ?? "");
    const whole = result.body.subarray(-64).toString("utf8").includes("data: [DONE]");
    if (result.status !== 200 || result.failure !== undefined || result.reset !== undefined || engine < 0 || firstAt === undefined || !whole) {
      throw new Error(
        `${request.id}: status ${result.status}, routed to ${result.routedTo}, failure ${JSON.stringify(result.failure)}, reset ${JSON.stringify(result.reset)}`,
      );
    }
    return {
      id: request.id,
      engine,
      arrivalMs: modelMs(sentAt),
      firstTokenMs: modelMs(firstAt),
      finishedMs: modelMs(endedAt),
      promptTokens: request.promptTokens,
      sendLateMs: sentAt - (started + request.arrivalMs * run.timeScale),
    };
  }

  const timers: NodeJS.Timeout[] = [];
  try {
    return await Promise.all(
      requests.map(
        (request, index) =>
          new Promise<LiveOutcome>((resolve, reject) => {
            const at = started + request.arrivalMs * run.timeScale;
            timers.push(setTimeout(() => send(request, index).then(resolve, reject), Math.max(0, at - performance.now())));
          }),
      ),
    );
  } finally {
    // After a failure, the requests not sent yet are not sent at all.
    for (const timer of timers) clearTimeout(timer);
    clearInterval(ticker);
    client.close();
  }
}
