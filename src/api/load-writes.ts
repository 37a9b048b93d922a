import { isIP } from "node:net";
import { z } from "zod";
import type { LoadStore } from "../load/store.js";
import { splitAddress, type PoolDirectory } from "../pools/pools.js";
import type { Logger } from "../log.js";
import { EarlyDeletes, type DeleteKinds } from "./early-deletes.js";
import { describeError, type ApiError } from "./envelope.js";
import { validate } from "./validation.js";

const requestId = z.string().min(1);

const addSchema = z.object({
  cluster: z.string().min(1),
  request_id: requestId,
  prompt_length: z.number().int().min(0).default(0),
  ip: z.string().refine((ip) => isIP(ip) === 4, { error: "must be an IPv4 address" }),
  /** Sent by the Go client; accepted and ignored: the ledger stamps entries with its own clock for expiry. */
  timestamp: z.number().int().optional(),
});

const deleteSchema = z.object({ request_id: requestId });

/** What the HTTP layer answers: OK, or an error with its HTTP status. */
export type WriteResult = { ok: true } | { ok: false; status: number; error: ApiError };

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

/** The metadata-center v1 write API: requests reported by a gateway instead of seen on ext_proc. */
export class LoadWrites {
  private readonly early: EarlyDeletes;

  constructor(
    private readonly store: LoadStore,
    private readonly directory: () => PoolDirectory,
    private readonly log: Logger,
    earlyDelete: { retryMs: number; capacity: number } = { retryMs: 1000, capacity: 10_000 },
  ) {
    this.early = new EarlyDeletes(
      earlyDelete.retryMs,
      earlyDelete.capacity,
      (id, kinds) => void this.retry(id, kinds),
      (capacity) => log.warn({ capacity }, "too many deletes wait for their add; further ones are dropped until some are retried"),
    );
  }

  /** `POST /v1/load/stats`. A duplicate request_id is ignored: the original stays counted once. */
  async add(body: unknown): Promise<WriteResult> {
    const parsed = validate(addSchema, body);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    const { cluster, request_id, prompt_length, ip } = parsed.value;
    const id = ledgerId(request_id);
    const opened = await this.store.reserve({ id, pool: cluster, engine: engineKey(this.directory(), cluster, ip), promptTokens: prompt_length });
    const waiting = opened ? this.early.pending(id) : undefined;
    if (waiting !== undefined) {
      // Settled only once applied: if applying fails, the retry still comes.
      await this.applyDeletes(id, waiting);
      this.early.settle(id);
    }
    return ok;
  }

  /** `DELETE /v1/load/prompt`: the first token was seen. Answered at once; an id not open is retried later. */
  async deletePrompt(body: unknown): Promise<WriteResult> {
    const parsed = validate(deleteSchema, body);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    const id = ledgerId(parsed.value.request_id);
    if (!(await this.applyDeletes(id, { prompt: true, stats: false }))) this.early.defer(id, "prompt");
    return ok;
  }

  /** `DELETE /v1/load/stats`: the request ended. Answered at once; an id not open is retried later. */
  async deleteStats(body: unknown): Promise<WriteResult> {
    const parsed = validate(deleteSchema, body);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
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
