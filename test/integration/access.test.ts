import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { apiClient } from "../support/http.js";
import { idle, startTestSidecar, totalLoad } from "../support/sidecar.js";

const token = "s3cret-token-for-tests-0123456789";
let sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
let call: ReturnType<typeof apiClient>;
beforeAll(async () => {
  // Listening on every address (reached here over 127.0.0.1): writes need the token.
  sidecar = await startTestSidecar([{ name: "alpha", models: ["a"], endpoints: ["10.0.0.1:8000"] }], { http: { host: "0.0.0.0", port: 0, token } });
  call = apiClient(sidecar.ports.http);
});
afterAll(async () => {
  expect(await totalLoad(sidecar)).toEqual(idle);
  await sidecar.stop(0);
});

const unauthenticated = { httpStatus: 401, status: "ERROR", error: { code: 40101001, message: "authentication failed" } };
const add = { cluster: "alpha", request_id: "r1", prompt_length: 3, ip: "10.0.0.1" };

describe("HTTP API exposed beyond loopback", () => {
  it.each([
    ["no Authorization header", {}],
    ["a wrong token", { authorization: `Bearer ${token}x` }],
    ["a token that is a prefix of the right one", { authorization: `Bearer ${token.slice(0, -1)}` }],
    ["another scheme", { authorization: `Basic ${token}` }],
  ])("refuses writes with %s: 401 / 40101001, nothing counted", async (_, headers) => {
    expect(await call("POST", "/v1/load/stats", add, { ...headers, TraceId: "t-401" })).toMatchObject({ ...unauthenticated, trace_id: "t-401" });
    expect(await call("DELETE", "/v1/load/stats", { request_id: "r1" }, headers)).toMatchObject(unauthenticated);
    expect(await call("DELETE", "/v1/load/prompt", { request_id: "r1" }, headers)).toMatchObject(unauthenticated);
    expect(await call("POST", "/log/level", { LevelParam: "ERROR" }, headers)).toMatchObject(unauthenticated);
    expect(await sidecar.store.size()).toBe(0);
  });

  it("takes writes with the right bearer token", async () => {
    const auth = { authorization: `Bearer ${token}` };
    expect(await call("POST", "/v1/load/stats", add, auth)).toMatchObject({ httpStatus: 200, status: "OK" });
    expect(await sidecar.store.size()).toBe(1);
    expect(await call("DELETE", "/v1/load/stats", { request_id: "r1" }, auth)).toMatchObject({ httpStatus: 200, status: "OK" });
    expect(await sidecar.store.size()).toBe(0);
  });

  it("keeps reading endpoints open", async () => {
    expect(await call("GET", "/v1/load/stats?cluster=alpha")).toMatchObject({ httpStatus: 200, status: "OK" });
    expect((await fetch(`http://127.0.0.1:${sidecar.ports.http}/metrics`)).status).toBe(200);
    expect((await fetch(`http://127.0.0.1:${sidecar.ports.http}/readyz`)).status).toBe(200);
    expect(await call("GET", "/debug/picks")).toMatchObject({ httpStatus: 200, status: "OK" });
  });
});
