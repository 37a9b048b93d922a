import { mulberry32 } from "../support/random.js";
import type { SimRequest } from "./routers.js";

/** Tokens per KV block, as the engines and the block hashes count them. */
export const BLOCK_TOKENS = 16;

/** A prompt as the segments it is made of: equal segment ids in the same order mean equal tokens. */
type Segment = { id: string; tokens: number };

/** The chained hash of each full block: the identity of every token up to the block's end. */
export function blockHashes(segments: readonly Segment[]): string[] {
  const hashes: string[] = [];
  let covered = 0;
  let prefix = "";
  for (const { id, tokens } of segments) {
    for (let end = Math.ceil((covered + 1) / BLOCK_TOKENS) * BLOCK_TOKENS; end <= covered + tokens; end += BLOCK_TOKENS) {
      hashes.push(`${prefix}${id}@${end - covered}`);
    }
    covered += tokens;
    prefix += `${id}|`;
  }
  return hashes;
}

const promptOf = (id: string, arrivalMs: number, segments: Segment[], outputTokens: number): SimRequest => ({
  id,
  arrivalMs,
  promptTokens: segments.reduce((sum, s) => sum + s.tokens, 0),
  blockHashes: blockHashes(segments),
  outputTokens,
});

export interface Arrivals {
  /** Mean requests per second. */
  rate: number;
  /** On/off bursts: `on` s at `factor`× the mean rate's share, then `off` s nearly idle, keeping the mean. */
  bursts?: { on: number; off: number };
}

/** Arrival times (ms) of `count` requests: Poisson, or Poisson modulated by on/off bursts of the same mean rate. */
function arrivalTimes(count: number, arrivals: Arrivals, random: () => number): number[] {
  const times: number[] = [];
  let at = 0;
  const { bursts } = arrivals;
  // Within a burst the rate is such that the bursts alone carry the mean (90 %), the quiet rest 10 %.
  const period = bursts === undefined ? 0 : bursts.on + bursts.off;
  const rateAt = (seconds: number): number => {
    if (bursts === undefined) return arrivals.rate;
    const inBurst = seconds % period < bursts.on;
    return inBurst ? (0.9 * arrivals.rate * period) / bursts.on : (0.1 * arrivals.rate * period) / bursts.off;
  };
  while (times.length < count) {
    const rate = rateAt(at / 1000);
    at += (-Math.log(1 - random()) / rate) * 1000;
    times.push(at);
  }
  return times;
}

/** Log-normal with the given mean and spread (σ of the log), clipped to [min, max]. */
function lengthOf(random: () => number, mean: number, sigma: number, min: number, max: number): number {
  const normal = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const mu = Math.log(mean) - (sigma * sigma) / 2;
  return Math.round(Math.min(max, Math.max(min, Math.exp(mu + sigma * normal))));
}

export interface Workload {
  readonly name: string;
  readonly description: string;
  requests(count: number, arrivals: Arrivals, seed: number): SimRequest[];
}

/** ShareGPT-like chat: mean ≈ 220 prompt and ≈ 200 output tokens, prompts ≤ 1024, total ≤ 2048 (vLLM's ShareGPT filter); nothing shared. */
export const chat: Workload = {
  name: "chat",
  description: "ShareGPT-like lengths (prompt ≈ 220, output ≈ 200 tokens), no shared prefix",
  requests(count, arrivals, seed) {
    const random = mulberry32(seed);
    return arrivalTimes(count, arrivals, random).map((at, i) => {
      const prompt = lengthOf(random, 220, 0.9, 4, 1024);
      const output = Math.min(2048 - prompt, lengthOf(random, 200, 0.9, 4, 1024));
      return promptOf(`chat${i}`, at, [{ id: `u${i}`, tokens: prompt }], output);
    });
  },
};

/** Long-prompt RAG: prompts of 4–32k tokens (log-uniform), short answers. */
export const rag: Workload = {
  name: "rag",
  description: "retrieval-augmented prompts of 4k–32k tokens (log-uniform), answers ≈ 250 tokens",
  requests(count, arrivals, seed) {
    const random = mulberry32(seed);
    return arrivalTimes(count, arrivals, random).map((at, i) => {
      const prompt = Math.round(4096 * 8 ** random());
      return promptOf(`rag${i}`, at, [{ id: `d${i}`, tokens: prompt }], lengthOf(random, 250, 0.5, 16, 1024));
    });
  },
};

/** Chat with 80 % ShareGPT-like and 20 % long (2–8k) prompts: the mixed lengths where picking by load matters most. */
export const mixed: Workload = {
  name: "mixed",
  description: "80 % chat lengths, 20 % long prompts of 2k–8k tokens",
  requests(count, arrivals, seed) {
    const random = mulberry32(seed);
    return arrivalTimes(count, arrivals, random).map((at, i) => {
      const long = random() < 0.2;
      const prompt = long ? Math.round(2048 * 4 ** random()) : lengthOf(random, 220, 0.9, 4, 1024);
      return promptOf(`mix${i}`, at, [{ id: `m${i}`, tokens: prompt }], lengthOf(random, 200, 0.9, 4, 1024));
    });
  },
};

/**
 * Shared prefixes: 16 system prompts of 2k tokens (SGLang's generated-shared-prefix shape), and
 * multi-turn conversations whose every turn resends the history before a new question.
 */
export const sharedPrefix: Workload = {
  name: "shared-prefix",
  description: "16 system prompts of 2,048 tokens; conversations of up to 6 turns resending their history; questions ≈ 128, answers ≈ 200 tokens",
  requests(count, arrivals, seed) {
    const random = mulberry32(seed);
    const conversations: Array<{ segments: Segment[]; turns: number }> = [];
    return arrivalTimes(count, arrivals, random).map((at, i) => {
      // A new conversation, or the next turn of an open one (each ends after up to 6 turns).
      let conversation = conversations.length > 0 && random() < 0.6 ? conversations[Math.floor(random() * conversations.length)] : undefined;
      if (conversation === undefined) {
        conversation = { segments: [{ id: `sys${Math.floor(random() * 16)}`, tokens: 2048 }], turns: 0 };
        conversations.push(conversation);
      }
      const question = { id: `q${i}`, tokens: lengthOf(random, 128, 0.5, 8, 1024) };
      const output = lengthOf(random, 200, 0.7, 8, 1024);
      const request = promptOf(`sp${i}`, at, [...conversation.segments, question], output);
      conversation.segments.push(question, { id: `a${i}`, tokens: output });
      conversation.turns += 1;
      if (conversation.turns >= 6) conversations.splice(conversations.indexOf(conversation), 1);
      return request;
    });
  },
};

/**
 * One hot prefix: every request opens with the same 4k-token system prompt (one agent or app
 * behind the whole pool), then a question of its own. A policy that follows cached prefixes
 * without weighing the queue piles the pool onto one engine.
 */
export const hotPrefix: Workload = {
  name: "hot-prefix",
  description: "one system prompt of 4,096 tokens before every question (≈ 128 tokens), answers ≈ 200 tokens",
  requests(count, arrivals, seed) {
    const random = mulberry32(seed);
    return arrivalTimes(count, arrivals, random).map((at, i) => {
      const question = { id: `h${i}`, tokens: lengthOf(random, 128, 0.5, 8, 1024) };
      return promptOf(`hot${i}`, at, [{ id: "system", tokens: 4096 }, question], lengthOf(random, 200, 0.7, 8, 1024));
    });
  },
};

export const WORKLOADS: readonly Workload[] = [chat, rag, mixed, sharedPrefix, hotPrefix];
