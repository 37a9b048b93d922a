import { isIP } from "node:net";
import { z } from "zod";
import type { LoadStore } from "../load/store.js";
import type { Logger } from "../log.js";
import { splitAddress, type PoolDirectory } from "../pools/pools.js";
import type { JsonBody } from "./body.js";
import { EarlyDeletes, type DeleteKinds } from "./early-deletes.js";
import { describeError, type ApiError } from "./envelope.js";
import type { GoInteger } from "./json-integers.js";
import { validateBody } from "./validation.js";

const requestId = z.string().min(1);
/** The Go client's Unix nanoseconds: any int64 (its text is checked by `validateBody`); `null` is 0, as Go decodes it. */
const timestamp = z.number().nullish();

const addSchema = z.object({
  cluster: z.string().min(1),
  request_id: requestId,
  /** An int32 ≥ 0 in the Go service; `null` or absent is 0. */
  prompt_length: z
    .number()
    .min(0)
    .nullish()
    .transform((length) => length ?? 0),
  ip: z.string().refine((ip) => isIP(ip) === 4, { error: "must be an IPv4 address" }),
  timestamp,
});

const deleteSchema = z.object({ request_id: requestId, timestamp });

/** The integer fields of the Go service's InferenceRequest and DeletionInferenceRequest. */
const addIntegers: Readonly<Record<string, GoInteger>> = { prompt_length: "int32", timestamp: "int64" };
const deleteIntegers: Readonly<Record<string, GoInteger>> = { timestamp: "int64" };

/** What the HTTP layer answers: OK (with the envelope's data, null when absent), or an error with its HTTP status. */
export type WriteResult = { ok: true; data?: string } | { ok: false; status: number; error: ApiError };

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

  /** `POST /v1/load/stats`. A duplicate request_id is ignored: the original stays counted once. */
  async add(body: JsonBody): Promise<WriteResult> {
    const parsed = validateBody(addSchema, body, addIntegers);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    this.observeTimestamp(parsed.integers.get("timestamp"));
    const { cluster, request_id, prompt_length, ip } = parsed.value;
    const id = ledgerId(request_id);
    const engine = engineKey(this.options.directory(), cluster, ip);
    const opened = (await this.store.reserve({ id, pool: cluster, engine, promptTokens: prompt_length })) === "reserved";
    const waiting = opened ? this.early.pending(id) : undefined;
    if (waiting !== undefined) {
      // Settled only once applied: if applying fails, the retry still comes.
      await this.applyDeletes(id, waiting);
      this.early.settle(id);
    }
    return ok;
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
