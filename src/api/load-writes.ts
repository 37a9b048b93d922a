import { isIP } from "node:net";
import { z } from "zod";
import type { LoadStore } from "../load/store.js";
import { splitAddress, type PoolDirectory } from "../pools/pools.js";
import { EarlyDeletes } from "./early-deletes.js";
import { ErrorCode, type ApiError } from "./envelope.js";
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
const alreadyDeleted: WriteResult = {
  ok: false,
  status: 404,
  error: { code: ErrorCode.alreadyDeleted, message: "resource already deleted", reason: "no open request with this request_id" },
};

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
    earlyDelete: { waitMs: number; capacity: number } = { waitMs: 1000, capacity: 10_000 },
  ) {
    this.early = new EarlyDeletes(earlyDelete.waitMs, earlyDelete.capacity);
  }

  /** `POST /v1/load/stats`. A duplicate request_id is ignored: the original stays counted once. */
  async add(body: unknown): Promise<WriteResult> {
    const parsed = validate(addSchema, body);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    const { cluster, request_id, prompt_length, ip } = parsed.value;
    const id = ledgerId(request_id);
    const opened = await this.store.reserve({ id, pool: cluster, engine: engineKey(this.directory(), cluster, ip), promptTokens: prompt_length });
    if (!opened) return ok;
    const waiting = this.early.take(id);
    if (waiting !== undefined) {
      if (waiting.stats) await this.store.release(id, "ok");
      else if (waiting.prompt) await this.store.firstToken(id);
      waiting.settle();
    }
    return ok;
  }

  /** `DELETE /v1/load/prompt`: the first token was seen. */
  async deletePrompt(body: unknown): Promise<WriteResult> {
    const parsed = validate(deleteSchema, body);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    const id = ledgerId(parsed.value.request_id);
    if (await this.store.has(id)) {
      await this.store.firstToken(id);
      return ok;
    }
    return (await this.early.wait(id, "prompt")) ? ok : alreadyDeleted;
  }

  /** `DELETE /v1/load/stats`: the request ended. */
  async deleteStats(body: unknown): Promise<WriteResult> {
    const parsed = validate(deleteSchema, body);
    if (!parsed.ok) return { ok: false, status: 400, error: parsed.error };
    const id = ledgerId(parsed.value.request_id);
    if (await this.store.release(id, "ok")) return ok;
    return (await this.early.wait(id, "stats")) ? ok : alreadyDeleted;
  }

  close(): void {
    this.early.close();
  }
}
