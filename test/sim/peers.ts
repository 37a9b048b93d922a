import { LruSet } from "../../src/scheduling/lru.js";
import type { EngineMetrics } from "./cluster.js";
import type { Router, SimRequest } from "./routers.js";

// The peers' policies, re-implemented from their published descriptions (facts, not code). The
// sources named are where each rule and default was read.

/** A router reading engine gauges polled every `pollMs` (vLLM's num_requests_running/waiting and KV-cache usage). */
export interface PollingRouter extends Router {
  readonly pollMs: number;
  observe(metrics: readonly EngineMetrics[]): void;
}

export const isPolling = (router: Router): router is PollingRouter => "pollMs" in router;

/** Does nothing with the traffic it sees: for policies that learn only from their own picks or polls. */
abstract class Deaf implements Router {
  abstract readonly name: string;
  abstract readonly source: string;
  abstract route(request: SimRequest, now: number): number;
  firstToken(): void {}
  tokens(): void {}
  finished(_id: string, _now: number): void {}
}

/** Indexes of the highest score; the choice among them at random (the peers break ties so). */
function bestOf(scores: readonly number[], random: () => number): number {
  const best = Math.max(...scores);
  const tied = scores.flatMap((score, i) => (score >= best - 1e-12 ? [i] : []));
  return tied[Math.floor(random() * tied.length)]!;
}

export class RandomRouter extends Deaf {
  readonly name = "random";
  readonly source = "uniform choice (Envoy RANDOM)";
  constructor(private readonly engines: number, private readonly random: () => number) {
    super();
  }
  route(): number {
    return Math.floor(this.random() * this.engines);
  }
}

export class RoundRobinRouter extends Deaf {
  readonly name = "round-robin";
  readonly source = "in turn (Envoy ROUND_ROBIN, the default lb_policy)";
  private next = 0;
  constructor(private readonly engines: number) {
    super();
  }
  route(): number {
    const engine = this.next;
    this.next = (this.next + 1) % this.engines;
    return engine;
  }
}

/** Fewest requests (running + waiting) on the last polled gauges. */
export class PolledLeastRequestsRouter extends Deaf implements PollingRouter {
  readonly name = "least-requests@50ms";
  readonly source = "fewest running+waiting requests on vLLM metrics polled every 50 ms (GIE --refresh-metrics-interval default)";
  readonly pollMs = 50;
  private polled: readonly EngineMetrics[];
  constructor(engines: number, private readonly random: () => number) {
    super();
    this.polled = Array.from({ length: engines }, () => ({ running: 0, waiting: 0, kvUsage: 0 }));
  }
  observe(metrics: readonly EngineMetrics[]): void {
    this.polled = metrics;
  }
  route(): number {
    return bestOf(this.polled.map((m) => -(m.running + m.waiting)), this.random);
  }
}

/**
 * Block hashes an engine is believed to hold, learnt from the router's own picks (the request's
 * blocks added to the chosen engine), least recently used evicted past `capacity`.
 */
class PrefixIndex {
  private readonly perEngine: Array<LruSet<string>>;
  constructor(engines: number, private readonly capacity: number) {
    this.perEngine = Array.from({ length: engines }, () => new LruSet());
  }
  /** Leading blocks of `hashes` the engine holds, stopping at the first it lacks. */
  matched(engine: number, hashes: readonly string[]): number {
    const held = this.perEngine[engine]!;
    let count = 0;
    while (count < hashes.length && held.has(hashes[count]!)) count += 1;
    return count;
  }
  add(engine: number, hashes: readonly string[]): void {
    const held = this.perEngine[engine]!;
    for (const hash of hashes) held.touch(hash);
    while (held.size > this.capacity) held.takeOldest();
  }
}

/**
 * The GIE / llm-d default profile: queue scorer (weight 2), KV-cache utilisation scorer (2) and
 * approximate prefix-cache scorer (3) on gauges polled every 50 ms; the highest total wins, ties
 * at random.
 */
export class GieDefaultRouter extends Deaf implements PollingRouter {
  readonly name = "gie-default";
  readonly source =
    "GIE/llm-d default profile: 2·queue + 2·kv-cache + 3·approx-prefix, metrics every 50 ms, max-score picker (gateway-api-inference-extension pkg/epp/config/loader/defaults.go, llm-d-inference-scheduler same)";
  readonly pollMs = 50;
  private polled: readonly EngineMetrics[];
  private readonly prefixes: PrefixIndex;
  /** The approximate prefix index matches at most this many leading blocks. */
  private static readonly MAX_BLOCKS = 256;

  constructor(engines: number, kvBlocks: number, private readonly random: () => number) {
    super();
    this.polled = Array.from({ length: engines }, () => ({ running: 0, waiting: 0, kvUsage: 0 }));
    // With autoTune the per-pod index holds as many blocks as the engine's cache.
    this.prefixes = new PrefixIndex(engines, kvBlocks);
  }
  observe(metrics: readonly EngineMetrics[]): void {
    this.polled = metrics;
  }
  route(request: SimRequest): number {
    const queues = this.polled.map((m) => m.waiting);
    const [minQ, maxQ] = [Math.min(...queues), Math.max(...queues)];
    const hashes = request.blockHashes.slice(0, GieDefaultRouter.MAX_BLOCKS);
    const scores = this.polled.map((m, engine) => {
      const queue = maxQ === minQ ? 1 : (maxQ - m.waiting) / (maxQ - minQ);
      const kv = 1 - m.kvUsage;
      const prefix = hashes.length === 0 ? 0 : this.prefixes.matched(engine, hashes) / hashes.length;
      return 2 * queue + 2 * kv + 3 * prefix;
    });
    const engine = bestOf(scores, this.random);
    this.prefixes.add(engine, hashes);
    return engine;
  }
}

/** In-flight requests per engine as the router itself counts them (routed, not yet ended). */
class InFlight {
  readonly counts: number[];
  private readonly engineOf = new Map<string, number>();
  constructor(engines: number) {
    this.counts = Array.from({ length: engines }, () => 0);
  }
  open(id: string, engine: number): void {
    this.engineOf.set(id, engine);
    this.counts[engine]! += 1;
  }
  close(id: string): number | undefined {
    const engine = this.engineOf.get(id);
    if (engine === undefined) return undefined;
    this.engineOf.delete(id);
    this.counts[engine]! -= 1;
    return engine;
  }
  engine(id: string): number | undefined {
    return this.engineOf.get(id);
  }
}

/** Prompt bytes per token the AIGW signals count (it reports bytes, not tokens). */
const BYTES_PER_TOKEN = 4;
/** AIGW hashes 512-byte chunks: 128 tokens, 8 blocks of 16. */
const AIGW_CHUNK_BLOCKS = 8;

/**
 * AIGW on the Go metadata-center: score = 2·cache_ratio − w·request_load − 3·prefill_load, with
 * request_load the in-flight count over max(2, spread), w = ceil(max(2, spread)/5), prefill_load
 * the prompt bytes in prefill over max(1024, the largest); the best 5 % at random (the best one
 * below 40 engines). Its load numbers are exact (the gateway reports every request).
 */
export class AigwRouter implements Router {
  readonly name = "aigw";
  readonly source = "AIGW inference LB on metadata-center load (aigw pkg/aigateway/loadbalancer/inferencelb/inference_lb.go)";
  private readonly inFlight: InFlight;
  private readonly prefillBytes: number[];
  private readonly promptOf = new Map<string, number>();
  private readonly chunks: PrefixIndex;

  constructor(private readonly engines: number, private readonly random: () => number) {
    this.inFlight = new InFlight(engines);
    this.prefillBytes = Array.from({ length: engines }, () => 0);
    this.chunks = new PrefixIndex(engines, Number.MAX_SAFE_INTEGER);
  }

  route(request: SimRequest): number {
    const counts = this.inFlight.counts;
    const [minQ, maxQ] = [Math.min(...counts), Math.max(...counts)];
    const delta = Math.max(2, maxQ - minQ);
    const weight = Math.ceil(delta / 5);
    const maxPrefill = Math.max(1024, ...this.prefillBytes);
    const chunks = request.blockHashes.filter((_, i) => (i + 1) % AIGW_CHUNK_BLOCKS === 0);
    const scores = counts.map((count, engine) => {
      const cache = chunks.length === 0 ? 0 : this.chunks.matched(engine, chunks) / chunks.length;
      return 2 * cache - weight * ((count - minQ) / delta) - 3 * (this.prefillBytes[engine]! / maxPrefill);
    });
    const order = scores.map((score, engine) => ({ score, engine })).sort((a, b) => b.score - a.score);
    const candidates = Math.min(this.engines, Math.max(1, Math.floor((this.engines * 5) / 100)));
    const engine = order[Math.floor(this.random() * candidates)]!.engine;
    this.inFlight.open(request.id, engine);
    const bytes = request.promptTokens * BYTES_PER_TOKEN;
    this.promptOf.set(request.id, bytes);
    this.prefillBytes[engine]! += bytes;
    this.chunks.add(engine, chunks);
    return engine;
  }

  firstToken(id: string): void {
    const engine = this.inFlight.engine(id);
    const bytes = this.promptOf.get(id);
    if (engine === undefined || bytes === undefined) return;
    this.promptOf.delete(id);
    this.prefillBytes[engine]! -= bytes;
  }

  tokens(): void {}

  finished(id: string): void {
    this.firstToken(id);
    this.inFlight.close(id);
  }
}

/**
 * SGLang's gateway, cache_aware (its default): when the in-flight loads are imbalanced (max − min
 * > 64 and max > 1.5·min) the least loaded; else the engine with the longest prefix match if it
 * covers more than 30 % of the prompt, else the least loaded; the prompt is then recorded for the
 * chosen engine, whose record is trimmed past its size limit.
 */
export class SglangCacheAwareRouter implements Router {
  readonly name = "sglang-cache-aware";
  readonly source = "SGLang model gateway cache_aware defaults: cache 0.3, balance abs 64 / rel 1.5 (sgl-model-gateway src/policies/cache_aware.rs, router_args.py)";
  private readonly inFlight: InFlight;
  private readonly trees: PrefixIndex;

  constructor(engines: number, private readonly random: () => number) {
    this.inFlight = new InFlight(engines);
    // max_tree_size 2^26 characters ≈ 2^24 tokens = 2^20 blocks of 16.
    this.trees = new PrefixIndex(engines, 2 ** 20);
  }

  route(request: SimRequest): number {
    const loads = this.inFlight.counts;
    const [min, max] = [Math.min(...loads), Math.max(...loads)];
    const leastLoaded = (): number => bestOf(loads.map((load) => -load), this.random);
    let engine: number;
    if (max - min > 64 && max > 1.5 * min) engine = leastLoaded();
    else {
      const matches = loads.map((_, i) => this.trees.matched(i, request.blockHashes));
      const best = Math.max(...matches);
      const rate = request.blockHashes.length === 0 ? 0 : best / request.blockHashes.length;
      engine = rate > 0.3 ? matches.indexOf(best) : leastLoaded();
    }
    this.inFlight.open(request.id, engine);
    this.trees.add(engine, request.blockHashes);
    return engine;
  }

  firstToken(): void {}
  tokens(): void {}
  finished(id: string): void {
    this.inFlight.close(id);
  }
}
