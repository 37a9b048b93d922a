import { afterEach, describe, expect, it } from "vitest";
import { FAULT_HEADER } from "../engine-sim/engine.js";
import { LogCapture } from "../support/sidecar.js";
import { chat, chatRequest, ROUTE_HEADER, startRig, type Rig } from "./harness.js";

/**
 * With another picker in front (role: observer), the load view must be what this sidecar would
 * show as the picker: the same requests held open on the same engines give the same numbers.
 */
const rigs: Rig[] = [];
afterEach(async () => {
  for (const rig of rigs.splice(0)) {
    await rig.expectIdle();
    await rig.close();
  }
});

const prompts = ["short", "a somewhat longer prompt about load balancing ".repeat(3), "x y z ".repeat(40), "hello there", "tokens ".repeat(90)];

type View = Array<{ requests: number; prefillRequests: number; prefillTokens: number; tokensHeld: number }>;

async function hold(rig: Rig, routeOf: (index: number) => string | undefined): Promise<{ view: View; release: () => Promise<void> }> {
  const stop = new AbortController();
  const open = prompts.map((prompt, i) => {
    const route = routeOf(i);
    const headers: Record<string, string> = { [FAULT_HEADER]: "hang", "x-request-id": `parity-${i}` };
    if (route !== undefined) headers[ROUTE_HEADER] = route;
    return rig.exchange({ request: chatRequest(chat("llama", prompt, { stream: true }), headers), signal: stop.signal, timeoutMs: 0 });
  });
  await expect.poll(() => rig.engines.reduce((n, engine) => n + engine.stats().inFlight, 0)).toBe(prompts.length);
  const loads = await rig.sidecar.store.loads(rig.engines.map((engine) => engine.address));
  const view = rig.engines.map((engine) => {
    const { requests, prefillRequests, prefillTokens, tokensHeld } = loads.get(engine.address)!;
    return { requests, prefillRequests, prefillTokens, tokensHeld };
  });
  return {
    view,
    release: async () => {
      stop.abort();
      await Promise.all(open);
    },
  };
}

describe("observer parity", () => {
  it("an observer behind another picker shows the load view the picker role would show", async () => {
    const capture = new LogCapture();
    const picker = await startRig({ engines: 3, capture });
    rigs.push(picker);
    const asPicker = await hold(picker, () => undefined);
    await asPicker.release();
    // Which engine the picker chose for each request, from its one log line per request.
    await expect.poll(() => capture.withMessage("request finished").length).toBe(prompts.length);
    const chosenIndex = prompts.map((_, i) => {
      const line = capture.lines.find((l) => l["requestId"] === `parity-${i}`)!;
      return picker.engines.findIndex((engine) => engine.address === line["engine"]);
    });

    const observer = await startRig({ engines: 3, sidecar: { role: "observer", extproc: { port: 0, trustedHeaders: ["x-gateway-destination-endpoint"] } } });
    rigs.push(observer);
    const asObserver = await hold(observer, (i) => observer.engines[chosenIndex[i]!]!.address);
    expect(asObserver.view).toEqual(asPicker.view);
    expect(asObserver.view.reduce((n, engine) => n + engine.requests, 0)).toBe(prompts.length);
    await asObserver.release();
  });
});
