import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rawRequest } from "../support/raw-http.js";
import { idle, LogCapture, startTestSidecar, totalLoad } from "../support/sidecar.js";

// Fuzzing the HTTP API over real sockets: whatever the body or target, every request is answered,
// nothing escapes as a 500 or a crash, and once the traffic stops everything reported is gone.
const capture = new LogCapture();
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let base: string;
beforeAll(async () => {
  // A short expiry, so that every cluster and engine the fuzz reported can be seen to go.
  sidecar = await startTestSidecar([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }], { load: { ttlSeconds: 1, sweepSeconds: 0.1 } }, capture);
  base = `http://127.0.0.1:${sidecar.ports.http}`;
});
afterAll(async () => {
  await sidecar.stop(0);
});

const IDS = Array.from({ length: 20 }, (_, i) => `fz-${i}`);
const WRITES = [
  ["POST", "/v1/load/stats"],
  ["DELETE", "/v1/load/prompt"],
  ["DELETE", "/v1/load/stats"],
  ["POST", "/v1/load/pick"],
  ["POST", "/log/level"],
] as const;

/** Refusals a write may answer besides 400 / 40001400: a pick's duplicate id, a conditional add over its bound. */
const REFUSALS: Record<number, number[]> = { 400: [40001400, 40001000], 409: [40901000] };

/** A member's raw JSON text: a value, or a number spelled as a client might (1.0, 1e3, past int32). */
const rawValue = fc.oneof(
  fc.jsonValue().map((value) => JSON.stringify(value)),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }).map(String),
  fc.constantFrom("1.0", "1e3", "2147483647", "2147483648", "-1", "null", '"5"', "9223372036854775807", "9223372036854775808", "-0", "0.5", "1E400"),
);
/** Mostly a field's valid value, sometimes anything. */
const mostly = (valid: fc.Arbitrary<string>, weight = 5) => fc.oneof({ weight, arbitrary: valid }, { weight: 1, arbitrary: rawValue });
/** Bodies close to what the write API takes, so that many are accepted and counted. */
const nearValid = fc
  .record(
    {
      cluster: mostly(fc.constantFrom('"alpha"', '"zeta"', '"\u00e9t\u00e9"')),
      request_id: mostly(fc.constantFrom(...IDS.map((id) => JSON.stringify(id)))),
      prompt_length: mostly(fc.oneof(fc.nat(2 ** 31 - 1).map(String), fc.constantFrom("null", "2147483647"))),
      ip: mostly(fc.constantFrom('"10.0.0.1"', '"10.0.0.9"', '"1.2.3.4"')),
      timestamp: mostly(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map(String)),
      LevelParam: mostly(fc.constantFrom('"TRACE"', '"INFO"', '"ERROR"', '"WARN"')),
      candidates: mostly(fc.constantFrom('["10.0.0.1"]', '["10.0.0.1:8000","10.0.0.2:8000"]', '["10.0.0.9:1"]', "null"), 10),
      if: mostly(fc.constantFrom('{"max_queued_req_num":1}', '{"max_prompt_length":100}', '{"max_queued_req_num":3,"max_prompt_length":0}', "{}", "null"), 10),
    },
    { requiredKeys: ["cluster", "request_id", "ip"] },
  )
  .map((members) => `{${Object.entries(members).map(([key, value]) => `${JSON.stringify(key)}:${value}`).join(",")}}`);
const body = fc.oneof(
  { weight: 3, arbitrary: nearValid },
  { weight: 1, arbitrary: fc.jsonValue().map((value) => JSON.stringify(value)) },
  { weight: 1, arbitrary: fc.string({ maxLength: 80 }) },
);

/** request_ids of every accepted add, to end them all afterwards (a fuzzed id may be any string). */
const added = new Set<string>(IDS);

async function send(method: string, path: string, payload: string | Uint8Array): Promise<{ status: number; envelope: { status: string; error: { code: number } | null } }> {
  const response = await fetch(`${base}${path}`, { method, body: payload });
  if (response.status === 200 && (path === "/v1/load/stats" || path === "/v1/load/pick") && method === "POST") {
    const { request_id } = JSON.parse(Buffer.from(payload).toString("utf8")) as { request_id: string };
    added.add(request_id);
  }
  return { status: response.status, envelope: (await response.json()) as { status: string; error: { code: number } | null } };
}

/** After the run: no request failed, deletes waited within their cap, and once ended and expired nothing is left. */
async function expectDrained(): Promise<void> {
  expect(capture.withMessage("http request failed")).toEqual([]);
  const view = async () => ((await (await fetch(`${base}/debug/pools`)).json()) as { data: { ledger: number; waiting_deletes: number; pools: Array<{ name: string }> } }).data;
  expect((await view()).waiting_deletes).toBeLessThanOrEqual(10_000);
  for (const id of added) await fetch(`${base}/v1/load/stats`, { method: "DELETE", body: JSON.stringify({ request_id: id }) });
  expect(await totalLoad(sidecar)).toEqual(idle);
  // Retries (1 s) ran and engines and clusters the fuzz reported expired (1 s): only the configured pool is left.
  await expect.poll(async () => { const now = await view(); return [now.waiting_deletes, now.ledger, now.pools.map((pool) => pool.name)]; }, { timeout: 10_000 }).toEqual([0, 0, ["alpha"]]);
  expect(await (await fetch(`${base}/healthz`)).text()).toBe("ok");
}

describe("fuzzing the v1 write bodies", () => {
  it.each(WRITES)("%s %s: any JSON or text body is answered 200 or a refusal in the envelope, never 500", async (method, path) => {
    let accepted = 0;
    await fc.assert(
      fc.asyncProperty(body, async (payload) => {
        const { status, envelope } = await send(method, path, payload);
        if (status === 200) accepted += 1;
        expect([200, 400, 409]).toContain(status);
        expect(envelope.status).toBe(status === 200 ? "OK" : "ERROR");
        if (status !== 200) expect(REFUSALS[status]).toContain(envelope.error?.code);
      }),
      { numRuns: 150 },
    );
    // The bodies reach the accepting path too, so the drain below has counts to undo (a pick's id
    // stays open until deleted: one accepted pick per id at most).
    expect(accepted).toBeGreaterThan(path === "/v1/load/pick" ? IDS.length / 2 : 20);
    sidecar.log.level = "info";
    await expectDrained();
  });

  it.each(WRITES)("%s %s: any bytes are answered 200 or 400, never 500", async (method, path) => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 300 }), async (payload) => {
        expect([200, 400]).toContain((await send(method, path, payload)).status);
      }),
      { numRuns: 100 },
    );
    await expectDrained();
  });
});

describe("fuzzing request targets", () => {
  const alphabet = fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom(..."abcz019-._~!$&'()*+,;=") },
    { weight: 4, arbitrary: fc.constantFrom("%", "/", "\\", "@", ":", "?", "#", "%2F", "%zz", "%e9", "//", "..") },
    { weight: 1, arbitrary: fc.constantFrom("é", "中", "\u{1F600}", "\u00ff", "\u0085") },
    { weight: 1, arbitrary: fc.constantFrom("/v1/load/stats", "/metrics", "/healthz", "?cluster=alpha", "http://h") },
  );
  const target = fc.array(alphabet, { maxLength: 24 }).map((parts) => parts.join(""));

  it("any target of path characters, escapes and non-ASCII, by GET or POST, gets an answer, never a 500, and the server serves on", async () => {
    await fc.assert(
      fc.asyncProperty(target, fc.constantFrom("GET", "POST", "DELETE"), async (raw, method) => {
        const answer = await rawRequest(sidecar.ports.http, method, Buffer.from(raw, "utf8"), method === "GET" ? undefined : "{}");
        expect(answer, raw).toBeDefined();
        expect(answer!.status).toBeLessThan(500);
        if (answer!.headers["content-type"] === "application/json") expect(JSON.parse(answer!.body)).toHaveProperty("trace_id");
      }),
      { numRuns: 400 },
    );
    await expectDrained();
  });
});
