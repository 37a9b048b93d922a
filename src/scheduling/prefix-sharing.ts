import { randomUUID } from "node:crypto";
import type { PrefixIndex } from "./prefix-index.js";

/** A broadcast among the replicas (Redis pub/sub): what one publishes, every subscriber gets. */
export interface Broadcast {
  publish(message: string): Promise<unknown>;
  subscribe(onMessage: (message: string) => void): void;
}

/** Records are sent in batches this often: one message per interval, not one per pick. */
const BATCH_MS = 20;
/** Records per message, so one message stays well under a megabyte. */
const MAX_RECORDS = 64;
/** Hashes are 52-bit: what a JSON number holds exactly. */
const isBlock = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;

/** One message: who sent it, and [engine, blocks] per pick. */
interface Batch {
  from: string;
  records: Array<[string, number[]]>;
}

function batchOf(message: string): Batch | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const { from, records } = parsed as Partial<Batch>;
  if (typeof from !== "string" || !Array.isArray(records)) return undefined;
  const valid = records.filter(
    (record): record is [string, number[]] =>
      Array.isArray(record) && typeof record[0] === "string" && Array.isArray(record[1]) && record[1].every(isBlock),
  );
  return { from, records: valid };
}

/**
 * Prefix affinity across replicas: the blocks each pick sends to an engine reach the other
 * replicas' indexes, so a prompt whose prefix one replica sent to an engine goes there from any
 * replica. Best effort, as the index itself is: a lost message costs a cache hit, never a count;
 * a malformed one is dropped.
 */
export class PrefixSharing {
  private readonly id = randomUUID();
  private pending: Array<[string, number[]]> = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    index: PrefixIndex,
    private readonly broadcast: Broadcast,
    private readonly failed: (error: unknown) => void,
  ) {
    index.onRecord((engine, blocks) => this.queue(engine, blocks));
    broadcast.subscribe((message) => {
      const batch = batchOf(message);
      if (batch === undefined || batch.from === this.id) return;
      for (const [engine, blocks] of batch.records) index.learn(engine, blocks);
    });
  }

  private queue(engine: string, blocks: readonly number[]): void {
    this.pending.push([engine, [...blocks]]);
    if (this.pending.length >= MAX_RECORDS) this.send();
    else this.timer ??= setTimeout(() => this.send(), BATCH_MS).unref();
  }

  private send(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const records = this.pending;
    this.pending = [];
    if (records.length === 0) return;
    this.broadcast.publish(JSON.stringify({ from: this.id, records } satisfies Batch)).catch(this.failed);
  }

  close(): void {
    clearTimeout(this.timer);
  }
}
