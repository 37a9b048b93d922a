import { randomUUID } from "node:crypto";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { apiClient } from "../support/http.js";
import { redisMissing, startRedis, type RedisServer } from "../support/redis.js";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";

// The CAS API for schedulers that pick for themselves (AIGW and others on the v1 API), over real
// HTTP: 200 callers at once, on one sidecar and on three replicas sharing one Redis.

const ENGINES = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000", "10.0.0.4:8000"];
const pools = [{ name: "llama", models: ["llama"], endpoints: ENGINES }];
const CALLERS = 200;

type Sidecar = Awaited<ReturnType<typeof startTestSidecar>>;
type Call = ReturnType<typeof apiClient>;

interface Stats {
  endpoint: string;
  queued_req_num: number;
  prompt_length: number;
}

/** Open requests per engine, as `GET /v1/load/stats` shows them on one replica. */
async function queued(call: Call): Promise<number[]> {
  const { data } = await call<Stats[]>("GET", "/v1/load/stats?cluster=llama");
  return ENGINES.map((engine) => data.find((stats) => stats.endpoint === engine)?.queued_req_num ?? 0);
}

const spread = (counts: number[]): number => Math.max(...counts) - Math.min(...counts);

function casTests(replicaCount: number, extra: () => Record<string, unknown>): void {
  const started: Sidecar[] = [];
  let calls: Call[] = [];
  beforeAll(async () => {
    for (let i = 0; i < replicaCount; i++) started.push(await startTestSidecar(pools, extra()));
    calls = started.map((sidecar) => apiClient(sidecar.ports.http));
  });
  afterAll(async () => {
    await Promise.all(started.splice(0).map((sidecar) => sidecar.stop(0)));
  });
  afterEach(async () => {
    for (const sidecar of started) await expect.poll(() => totalLoad(sidecar)).toEqual(idle);
  });
  const on = (i: number): Call => calls[i % calls.length]!;

  it(`${CALLERS} callers pick at once: identical requests spread within 1 over the engines, every replica shows the same numbers, deletes anywhere end them`, async () => {
    const picks = await Promise.all(
      Array.from({ length: CALLERS }, (_, i) => on(i)<{ endpoint: string }>("POST", "/v1/load/pick", { cluster: "llama", request_id: `pick-${i}`, prompt_length: 512 })),
    );
    expect(picks.filter((pick) => pick.httpStatus !== 200)).toEqual([]);
    const perEngine = ENGINES.map((engine) => picks.filter((pick) => pick.data.endpoint === engine).length);
    expect(spread(perEngine)).toBeLessThanOrEqual(1);
    const views = await Promise.all(calls.map(queued));
    for (const view of views) expect(view).toEqual(perEngine);
    await Promise.all(Array.from({ length: CALLERS }, (_, i) => on(i + 1)("DELETE", "/v1/load/stats", { request_id: `pick-${i}` })));
    for (const call of calls) expect(await queued(call)).toEqual([0, 0, 0, 0]);
  }, 60_000);

  it(`${CALLERS} callers add with a bound while others end theirs: no engine is ever seen over the bound, and every refusal says why`, async () => {
    const bound = 5;
    let observing = true;
    let highest = 0;
    const observer = (async () => {
      while (observing) for (const call of calls) highest = Math.max(highest, ...(await queued(call)));
    })();
    let admitted = 0;
    let refused = 0;
    const caller = async (i: number): Promise<void> => {
      for (let round = 0; round < 3; round++) {
        const id = `add-${i}-${round}`;
        const ip = ENGINES[(i + round) % ENGINES.length]!.split(":")[0];
        const answer = await on(i)<Stats | null>("POST", "/v1/load/stats", { cluster: "llama", request_id: id, prompt_length: 100, ip, if: { max_queued_req_num: bound } });
        if (answer.httpStatus === 409) {
          refused += 1;
          expect(answer.error?.code).toBe(40901000);
          expect(answer.data?.queued_req_num).toBe(bound);
          continue;
        }
        expect(answer.httpStatus).toBe(200);
        admitted += 1;
        highest = Math.max(highest, ...(await queued(on(i + 2))));
        await new Promise((resolve) => setTimeout(resolve, (i * 7 + round) % 20));
        await on(i + 1)("DELETE", "/v1/load/stats", { request_id: id });
      }
    };
    await Promise.all(Array.from({ length: CALLERS }, (_, i) => caller(i)));
    observing = false;
    await observer;
    expect(highest).toBe(bound);
    expect(refused).toBeGreaterThan(0);
    expect(admitted + refused).toBe(CALLERS * 3);
    for (const call of calls) expect(await queued(call)).toEqual([0, 0, 0, 0]);
  }, 120_000);
}

describe("POST /v1/load/pick and conditional adds on one sidecar (memory store)", () => {
  casTests(1, () => ({}));
});

if (redisMissing !== undefined) it.skip(`CAS API on Redis replicas: ${redisMissing}`, () => undefined);

describe.skipIf(redisMissing !== undefined)("POST /v1/load/pick and conditional adds on three replicas sharing one Redis", () => {
  let redis: RedisServer;
  const keyPrefix = `mc-${randomUUID()}:`;
  beforeAll(async () => {
    redis = await startRedis();
  });
  afterAll(() => redis.stop());
  casTests(3, () => ({ load: { store: "redis", redis: { url: redis.url, keyPrefix, timeoutMs: 1000 } } }));
});
