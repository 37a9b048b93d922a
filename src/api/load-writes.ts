import { isIP } from "node:net";
import { z } from "zod";
import { isEngineAddress } from "../config/schema.js";
import type { LoadBound, LoadStore } from "../load/store.js";
import type { Logger } from "../log.js";
import { splitAddress, type PoolDirectory } from "../pools/pools.js";
import { saturationLimit, type Picker } from "../scheduling/picker.js";
import type { JsonBody } from "./body.js";
import { EarlyDeletes, type DeleteKinds } from "./early-deletes.js";
import { describeError, ErrorCode, type ApiError } from "./envelope.js";
import type { GoInteger } from "./json-integers.js";
import { engineStats } from "./load-snapshot.js";
import { validateBody } from "./validation.js";

const requestId = z.string().min(1);
/** The Go client's Unix nanoseconds: any int64 (its text is checked by `validateBody`); `null` is 0, as Go decodes it. */
const timestamp = z.number().nullish();

/** An int32 ≥ 0 in the Go service; `null` or absent is 0. */
const promptLength = z
  .number()
  .min(0)
  .nullish()
  .transform((length) => length ?? 0);

const boundValue = z.number().int().min(0).max(2 ** 31 - 1).optional();

/** A conditional add's bound, on the numbers `GET /v1/load/stats` shows; an unknown key is refused, as a typo must not drop the bound. */
const boundSchema = z.strictObject({ max_queued_req_num: boundValue, max_prompt_length: boundValue });

const addSchema = z.object({
  cluster: z.string().min(1),
  request_id: requestId,
  prompt_length: promptLength,
  ip: z.string().refine((ip) => isIP(ip) === 4, { error: "must be an IPv4 address" }),
  timestamp,
  if: boundSchema.nullish(),
});

/** Engines a pick may choose from: as `ip:port`, or a bare IPv4 as the write API reports them. */
const candidate = z.string().refine((value) => isIP(value) === 4 || isEngineAddress(value), { error: "must be an IPv4 address or ip:port" });

const pickSchema = z.object({
  cluster: z.string().min(1),
  request_id: requestId,
  prompt_length: promptLength,
  candidates: z.array(candidate).min(1).max(4096).nullish(),
  timestamp,
});

const deleteSchema = z.object({ request_id: requestId, timestamp });

/** The integer fields of the Go service's InferenceRequest and DeletionInferenceRequest. */
const addIntegers: Readonly<Record<string, GoInteger>> = { prompt_length: "int32", timestamp: "int64" };
const deleteIntegers: Readonly<Record<string, GoInteger>> = { timestamp: "int64" };

/** What the HTTP layer answers: OK with the envelope's data (null when absent), or an error with its HTTP status (and data, when it says more). */
export type WriteResult = { ok: true; data?: unknown } | { ok: false; status: number; error: ApiError; data?: unknown };

const refused = (status: number, code: number, message: string, reason: string, data?: unknown): WriteResult => ({
  ok: false,
  status,
  error: { code, message, reason },
  ...(data === undefined ? {} : { data }),
});

const ok: WriteResult = { ok: true };

/** Ledger ids of API-reported requests, kept apart from the ext_proc stream's own ids. */
export const ledgerId = (requestId: string): string => `api:${requestId}`;

/**
 * The engine key for an IP reported by the Go API (which sends no port): the `ip:port` of the
 * pool's endpoint with that IP when there is exactly one, so API and ext_proc traffic on one
 * engine add up; otherwise the bare IP.
 */
export function engineKey(directory: PoolDirectory, cluster: string, ip: string): string {
  const matches = (directory.named(cluster)?.endpoints ?? []).filter((endpoint) => splitAddress(endpoint).ip === ip);
  return matches.length === 1 && matches[0] !== undefined ? matches[0] : ip;
}

export interface LoadWritesOptions {
  store: LoadStore;
  directory: () => PoolDirectory;
  /** The scheduling chain of the current config, for `POST /v1/load/pick`. */
  picker: () => Picker;
  log: Logger;
  /**
   * Told how old each write's `timestamp` (the sender's clock, Unix ns) is, in ms, when it is
   * positive and not in the future: the Go service's replication_latency_ms.
   */
  observeLatency?: (milliseconds: number) => void;
  /** Deletes whose id is not open: retried once after `retryMs`; at most `capacity` wait. */
  earlyDelete?: { retryMs: number; capacity: number };
}

/** The metadata-center v1 write API: requests reported by a gateway instead of seen on ext_proc. */
export class LoadWrites {
  private readonly store: LoadStore;
  private readonly log: Logger;
  private readonly early: EarlyDeletes;

  constructor(private readonly options: LoadWritesOptions) {
    const { retryMs, capacity } = options.earlyDelete ?? { retryMs: 1000, capacity: 10_000 };
    this.store = options.store;
    this.log = options.log;
    this.early = new EarlyDeletes(
      retryMs,
      capacity,
      (id, kinds) => void this.retry(id, kinds),
      (limit) => this.log.warn({ capacity: limit }, "too many deletes wait for their add; further ones are dropped until some are retried"),
    );
  }

  /**
   * `POST /v1/load/stats`. A duplicate request_id is ignored: the original stays counted once.
   * With `if`, a conditional add: counted only while the engine stays within the bound, else 409
   * with its numbers; the check and the add are one atomic step (across replicas on Redis).
   */
  async add(body: JsonBody): Promise<WriteResult> {
    const parsed = validateBody(addSchema, body, addIntegers);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    this.observeTimestamp(parsed.integers.get("timestamp"));
    const { cluster, request_id, prompt_length, ip } = parsed.value;
    const id = ledgerId(request_id);
    const engine = engineKey(this.options.directory(), cluster, ip);
    const bound: LoadBound | undefined =
      parsed.value.if == null ? undefined : { maxRequests: parsed.value.if.max_queued_req_num, maxPrefillTokens: parsed.value.if.max_prompt_length };
    const outcome = await this.store.reserve({ id, pool: cluster, engine, promptTokens: prompt_length, bound });
    if (outcome.kind === "over_bound") {
      return refused(409, ErrorCode.overBound, "engine over the bound", `engine ${engine} of cluster '${cluster}' is at the bound given in 'if'`, engineStats(engine, outcome.load));
    }
    if (outcome.kind === "reserved") await this.openedNow(id);
    return ok;
  }

  /**
   * `POST /v1/load/pick`, for a scheduler that places requests itself: the scheduling chain picks
   * among the candidates (default: the cluster's configured engines) and reserves the engine in
   * the same atomic step, so concurrent callers, on any replica, never pick on stale numbers. The
   * request then ends by the usual deletes.
   */
  async pick(body: JsonBody): Promise<WriteResult> {
    const parsed = validateBody(pickSchema, body, addIntegers);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    this.observeTimestamp(parsed.integers.get("timestamp"));
    const { cluster, request_id, prompt_length, candidates } = parsed.value;
    const directory = this.options.directory();
    const engines = candidates == null ? directory.named(cluster)?.endpoints : [...new Set(candidates.map((engine) => engineKey(directory, cluster, engine)))];
    if (engines === undefined) {
      return refused(400, ErrorCode.invalidInput, "invalid input parameters: candidates", `cluster '${cluster}' is not a configured pool: name its engines in 'candidates'`);
    }
    const id = ledgerId(request_id);
    const result = await this.options.picker().pickAmong(cluster, engines, { id, requestId: request_id, model: undefined, promptTokens: prompt_length, externalId: true });
    switch (result.kind) {
      case "picked": {
        await this.openedNow(id);
        const { engine } = result.reservation;
        return { ok: true, data: { ...splitAddress(engine), endpoint: engine, fallbacks: result.fallbacks } };
      }
      case "duplicate":
        return refused(400, ErrorCode.duplicate, "data duplicate", `request_id '${request_id}' is already open; end it with DELETE /v1/load/stats first`);
      case "saturated":
        return refused(429, ErrorCode.saturated, "every engine is at its limit", `every candidate of cluster '${cluster}' carries ${saturationLimit(result)}; retry later`);
      case "no_engine":
      case "outside_subset":
        return refused(503, ErrorCode.noEngine, "no engine available", `cluster '${cluster}' has no engine to pick (none configured or resolved yet)`);
    }
  }

  /** `DELETE /v1/load/prompt`: the first token was seen. Answered at once; an id not open is retried later. */
  async deletePrompt(body: JsonBody): Promise<WriteResult> {
    const parsed = validateBody(deleteSchema, body, deleteIntegers);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    this.observeTimestamp(parsed.integers.get("timestamp"));
    const id = ledgerId(parsed.value.request_id);
    if (!(await this.applyDeletes(id, { prompt: true, stats: false }))) this.early.defer(id, "prompt");
    return ok;
  }

  /** `DELETE /v1/load/stats`: the request ended. Answered at once; an id not open is retried later. */
  async deleteStats(body: JsonBody): Promise<WriteResult> {
    const parsed = validateBody(deleteSchema, body, deleteIntegers);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    this.observeTimestamp(parsed.integers.get("timestamp"));
    const id = ledgerId(parsed.value.request_id);
    if (!(await this.applyDeletes(id, { prompt: false, stats: true }))) this.early.defer(id, "stats");
    return ok;
  }

  /** Deletes waiting for their add or retry. */
  get waitingDeletes(): number {
    return this.early.size;
  }

  close(): void {
    this.early.close();
  }

  /** A reservation just opened: the deletes that came before it apply now. */
  private async openedNow(id: string): Promise<void> {
    const waiting = this.early.pending(id);
    if (waiting === undefined) return;
    // Settled only once applied: if applying fails, the retry still comes.
    await this.applyDeletes(id, waiting);
    this.early.settle(id);
  }

  private observeTimestamp(sentAtNs: bigint | undefined): void {
    if (sentAtNs === undefined || sentAtNs <= 0n || this.options.observeLatency === undefined) return;
    const ageMs = (performance.timeOrigin + performance.now()) - Number(sentAtNs) / 1e6;
    // A timestamp from the future (clock skew between the hosts) is not counted, as in the Go service.
    if (ageMs >= 0) this.options.observeLatency(ageMs);
  }

  /** Applies deletes to an id; false when it is not open (nothing applied). Ending it covers its prompt. */
  private async applyDeletes(id: string, kinds: DeleteKinds): Promise<boolean> {
    if (kinds.stats) return this.store.release(id, "ok");
    if (!(await this.store.has(id))) return false;
    await this.store.firstToken(id);
    return true;
  }

  /** The one retry of deletes whose add had not come (the add may have reached another sidecar sharing the store). */
  private async retry(id: string, kinds: DeleteKinds): Promise<void> {
    try {
      if (await this.applyDeletes(id, kinds)) this.log.debug({ id, ...kinds }, "early delete applied on retry");
      else this.log.warn({ id, ...kinds }, "delete found no open request, also on its retry; the load may be off until expiry if its add comes later");
    } catch (error) {
      try {
        this.log.error({ id, ...kinds, reason: describeError(error) }, "retrying an early delete failed");
      } catch {
        // Nothing left to tell; the timer must not throw.
      }
    }
  }
}
