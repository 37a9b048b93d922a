// The stand-in proxy end to end: HTTP client -> stand-in (ext_proc client) -> HTTP upstream.
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { echoOf, type EchoUpstream, startEchoUpstream } from "./echo-upstream.js";
import type { ExchangeResult } from "./ext-proc-client.js";
import { echoAndRoute, type ProcessorServer, startProcessor } from "./fake-processors.js";
import { startEnvoyStandIn } from "./proxy.js";

/** An SSE upstream that sends its second event only when the test says so. */
async function startGatedSseUpstream(): Promise<{ endpoint: string; release: () => void; close: () => Promise<void> }> {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const server = http.createServer(async (req, res) => {
    for await (const _ of req) void _;
    res.writeHead(200, { "content-type": "text/event-stream" });
    res.write("data: first\n\n");
    await gate;
    res.end("data: [DONE]\n\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `127.0.0.1:${port}`,
    release: () => release(),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

function post(url: string, body: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" } }, resolve);
    req.on("error", reject);
    req.end(body);
  });
}

async function readAll(res: http.IncomingMessage): Promise<string> {
  let text = "";
  for await (const chunk of res) text += String(chunk);
  return text;
}

describe("Envoy stand-in proxy", () => {
  let upstream: EchoUpstream;
  beforeAll(async () => {
    upstream = await startEchoUpstream();
  });
  afterAll(() => upstream.close());

  async function withStandIn(
    endpoint: string,
    test: (url: string, processor: ProcessorServer, firstResult: Promise<ExchangeResult>) => Promise<void>,
  ): Promise<void> {
    const processor = await startProcessor(echoAndRoute({ endpoint }));
    let onFirst: (result: ExchangeResult) => void = () => undefined;
    const firstResult = new Promise<ExchangeResult>((resolve) => {
      onFirst = resolve;
    });
    const standIn = await startEnvoyStandIn({ extProcAddress: processor.address, onExchange: (r) => onFirst(r) });
    try {
      await test(standIn.url, processor, firstResult);
    } finally {
      await standIn.close();
      await processor.close();
    }
  }

  it("proxies requests through the processor to the routed upstream, several over one channel", async () => {
    await withStandIn(upstream.endpoint, async (url, processor) => {
      const bodies = ['{"model":"a","prompt":"one"}', '{"model":"b","prompt":"two ✓"}'];
      const texts = await Promise.all(bodies.map(async (body) => readAll(await post(url, body))));
      expect(texts).toEqual(bodies.map((b) => Buffer.concat(echoOf(Buffer.from(b))).toString()));
      expect(processor.streams.length).toBe(2);
      expect(upstream.requests.map((r) => r.body.toString()).sort()).toEqual(expect.arrayContaining(bodies));
    });
  });

  it("streams SSE events to the client as the upstream produces them", async () => {
    const sse = await startGatedSseUpstream();
    try {
      await withStandIn(sse.endpoint, async (url) => {
        const res = await post(url, '{"model":"m","stream":true}');
        expect(res.statusCode).toBe(200);
        const iterator = res[Symbol.asyncIterator]();
        // The second event is held back by the upstream: the first must arrive on its own.
        const first = await iterator.next();
        expect(String(first.value)).toBe("data: first\n\n");
        sse.release();
        let rest = "";
        for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) rest += String(next.value);
        expect(rest).toBe("data: [DONE]\n\n");
      });
    } finally {
      sse.release();
      await sse.close();
    }
  });

  it("a client disconnecting mid-response resets the exchange and cancels the stream", async () => {
    const sse = await startGatedSseUpstream();
    try {
      await withStandIn(sse.endpoint, async (url, processor, firstResult) => {
        const res = await post(url, '{"model":"m","stream":true}');
        await res[Symbol.asyncIterator]().next();
        res.destroy();
        const result = await firstResult;
        expect(result.reset?.by).toBe("client");
        expect(result.body.toString()).toBe("data: first\n\n");
        await Promise.race([processor.streams[0]?.closed, delay(2000)]);
        expect(processor.streams[0]?.cancelled).toBe(true);
      });
    } finally {
      sse.release();
      await sse.close();
    }
  });
});
