import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InferenceExchange, type Decision, type ExchangeEvents, type LifecycleContext } from "../../src/inference/lifecycle.js";
import { parseInferenceRequest } from "../../src/inference/apis/index.js";
import { RequestParser } from "../../src/inference/request-parser.js";
import { TokenizerRegistry } from "../../src/inference/tokenizers/registry.js";
import { approximateTokens } from "../../src/inference/estimate.js";
import { outputTokens } from "../../src/inference/tokens.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { EngineSteps } from "../../src/scheduling/engine-steps.js";
import { Picker } from "../../src/scheduling/picker.js";
import { schedulingDefaults } from "../support/scheduling.js";
import { lifecycleContext, unheardEvents } from "../support/lifecycle-context.js";
import { QWEN3_TOKENIZER } from "../support/model-tokenizers.js";

const ENGINE = "10.0.0.1:8000";
const directory = new PoolDirectory([{ name: "qwen", models: ["qwen3"], endpoints: [ENGINE] }]);
const body = Buffer.from(JSON.stringify({ model: "qwen3", messages: [{ role: "user", content: "The quick brown fox jumps over the lazy dog." }] }));

describe("an exchange whose prompt is counted in a worker thread", () => {
  const tokens = new TokenizerRegistry({ countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 }, () => directory, (error) => {
    throw error;
  });
  beforeAll(() => tokens.configure([{ name: "qwen", tokenizer: { file: QWEN3_TOKENIZER, countWholeUpTo: 16_384 } }]));
  afterAll(() => tokens.close());

  // Parsed inline, or (every body above 0 bytes) on the parsing thread: a second wait before the pick.
  const parsers = { inline: Number.MAX_SAFE_INTEGER, "off the event loop": 0 };
  const cases = (["picker", "observer"] as const).flatMap((role) => Object.entries(parsers).map(([parsing, above]) => ({ role, parsing, above })));
  const openParsers: RequestParser[] = [];
  afterAll(() => Promise.all(openParsers.map((parser) => parser.close())));

  for (const { role, parsing, above } of cases) {
    it(`${role}, body parsed ${parsing}: a stream that ends while the prompt is counted releases its reservation at once, counted once`, async () => {
      const parser = new RequestParser({ offThreadAboveBytes: above, wholeUpToCost: () => 65_536, includeUsage: false, lost: (error) => {
        throw error;
      } });
      openParsers.push(parser);
      const store = new MemoryLoadStore();
      const seen: string[] = [];
      const events: ExchangeEvents = {
        picked: (pool, engine, promptTokens) => seen.push(`picked ${pool} ${engine} ${promptTokens}`),
        refused: (reason) => seen.push(`refused ${reason}`),
        firstToken: () => seen.push("first token"),
        prefillEstimated: () => seen.push("prefill estimated"),
        finished: (_seconds, outcome) => seen.push(`finished ${outcome}`),
      };
      const exchange = new InferenceExchange(
        lifecycleContext({
          store,
          picker: new Picker(store, () => directory, schedulingDefaults),
          parser,
          tokens,
          health: { succeeded: () => seen.push("succeeded"), failed: () => seen.push("failed"), unanswered: () => seen.push("unanswered") },
          events,
          observe: role === "observer" ? () => "qwen" : undefined,
        }),
        "r1",
      );
      const deciding = exchange.decide({
        path: "/v1/chat/completions",
        header: () => undefined,
        modelOverride: undefined,
        body,
        bodySeen: true,
        chosenEngine: role === "observer" ? ENGINE : undefined,
        subset: undefined,
      });
      // Envoy resets the stream while the worker counts (the transport then ignores the decision).
      expect(exchange.current).toBe("deciding");
      exchange.abort("client_reset");
      const parsed = parseInferenceRequest("/v1/chat/completions", body);
      if (!parsed.ok) throw new Error(parsed.message);
      const priced = tokens.forModel("qwen3").promptTokens(parsed.request);
      expect(priced).toBeInstanceOf(Promise);
      const exact = await priced;
      expect((await deciding).kind).toBe(role === "observer" ? "observe" : "route");
      expect(seen).toEqual([`picked qwen ${ENGINE} ${exact}`, "finished client_reset"]);
      expect(store.size()).toBe(0);
      expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject(zeroLoad());
    });
  }
});

describe("the exchange state machine", () => {
  const tokens = new TokenizerRegistry({ countWholeUpTo: 65_536, imageTokens: 765, audioTokens: 200 }, () => directory, (error) => {
    throw error;
  });
  const parser = new RequestParser({ offThreadAboveBytes: Number.MAX_SAFE_INTEGER, wholeUpToCost: () => 65_536, includeUsage: false, lost: (error) => {
    throw error;
  } });
  afterAll(() => Promise.all([tokens.close(), parser.close()]));
  const chatBody = Buffer.from(JSON.stringify({ model: "qwen3", stream: true, messages: [{ role: "user", content: "hello" }] }));
  const view = { path: "/v1/chat/completions", header: () => undefined, modelOverride: undefined, body: chatBody, bodySeen: true, chosenEngine: undefined, subset: undefined };

  function start(log = pino({ level: "silent" }), steps: LifecycleContext["steps"] = new EngineSteps(), estimated: () => void = () => undefined) {
    const store = new MemoryLoadStore();
    const events: ExchangeEvents = { ...unheardEvents(), prefillEstimated: estimated };
    const exchange = new InferenceExchange(lifecycleContext({ store, picker: new Picker(store, () => directory, schedulingDefaults), parser, tokens, log, events, steps }), "r1");
    return { store, exchange };
  }

  it("goes receiving → picked → responding → streaming → ended, releasing once; decided at once with o200k and the memory store", async () => {
    const { store, exchange } = start();
    const seen = [exchange.current];
    const decision = exchange.decide(view);
    expect(decision).not.toBeInstanceOf(Promise);
    expect((decision as Decision).kind).toBe("route");
    seen.push(exchange.current);
    expect(store.size()).toBe(1);
    exchange.responseHeaders(200, "text/event-stream");
    seen.push(exchange.current);
    exchange.responseBody(Buffer.from('data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'));
    seen.push(exchange.current);
    exchange.responseEnd();
    seen.push(exchange.current);
    exchange.abort("client_reset");
    expect(seen).toEqual(["receiving", "picked", "responding", "streaming", "ended"]);
    expect(store.size()).toBe(0);
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject(zeroLoad());
    await exchange.settled();
  });

  it("estimates streamed output where the engine was asked for its usage (which settles it at the end), and counts it with o200k where not", async () => {
    const delta = "internationalization";
    expect(approximateTokens(delta)).not.toBe(outputTokens(delta));
    for (const asks of [true, false]) {
      const { store, exchange } = start();
      const usage = asks ? { stream_options: { include_usage: true } } : {};
      const body = Buffer.from(JSON.stringify({ model: "qwen3", stream: true, ...usage, messages: [{ role: "user", content: "hello" }] }));
      expect((await exchange.decide({ ...view, body })).kind).toBe("route");
      const held = () => store.loads([ENGINE]).get(ENGINE)!.tokensHeld;
      const before = held();
      exchange.responseHeaders(200, "text/event-stream");
      exchange.responseBody(Buffer.from(`data: {"choices":[{"delta":{"content":"${delta}"}}]}\n\n`));
      expect(held() - before).toBe(asks ? approximateTokens(delta) : outputTokens(delta));
      exchange.responseEnd();
      await exchange.settled();
      expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject(zeroLoad());
    }
  });

  it("tells the engines' step rhythm of each stretch of streamed output from the engine, and of nothing else", async () => {
    const seen: string[] = [];
    const { exchange } = start(undefined, { seen: (engine) => seen.push(engine) });
    await exchange.decide(view);
    exchange.responseHeaders(200, "text/event-stream");
    // The role-only opening delta carries no output: no step is seen in it.
    exchange.responseBody(Buffer.from('data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'));
    expect(seen).toEqual([]);
    exchange.responseBody(Buffer.from('data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'));
    exchange.responseBody(Buffer.from('data: {"choices":[{"delta":{"content":" there"}}]}\n\ndata: {"choices":[{"delta":{"content":"!"}}]}\n\n'));
    expect(seen).toEqual([ENGINE, ENGINE]);
    exchange.responseEnd();
    await exchange.settled();

    // A JSON body comes whole, after the engine's last step: no rhythm in it.
    const whole: string[] = [];
    const json = start(undefined, { seen: (engine) => whole.push(engine) }).exchange;
    await json.decide({ ...view, body: Buffer.from(JSON.stringify({ model: "qwen3", messages: [{ role: "user", content: "hello" }] })) });
    json.responseHeaders(200, "application/json");
    json.responseBody(Buffer.from(JSON.stringify({ choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 5, completion_tokens: 1 } })));
    json.responseEnd();
    await json.settled();
    expect(whole).toEqual([]);
  });

  it("takes a non-streaming request's prefill as over at its predicted first token, and a streaming one's only at its first token", async () => {
    let estimates = 0;
    const json = start(undefined, undefined, () => (estimates += 1));
    await json.exchange.decide({ ...view, body: Buffer.from(JSON.stringify({ model: "qwen3", messages: [{ role: "user", content: "hello" }] })) });
    const load = (store: MemoryLoadStore) => store.loads([ENGINE]).get(ENGINE);
    expect(load(json.store)).toMatchObject({ requests: 1, prefillRequests: 1 });
    // The pool's model, at its prior, predicts a few tens of ms: the request is still open, out of prefill.
    await expect.poll(() => load(json.store)?.prefillRequests, { timeout: 2000 }).toBe(0);
    expect(load(json.store)).toMatchObject({ requests: 1, prefillTokens: 0 });
    expect(estimates).toBe(1);
    // The whole body then comes: nothing is taken out of prefill twice, and the release is exact.
    json.exchange.responseHeaders(200, "application/json");
    json.exchange.responseBody(Buffer.from(JSON.stringify({ choices: [{ message: { content: "hi" } }], usage: { prompt_tokens: 5, completion_tokens: 1 } })));
    json.exchange.responseEnd();
    await json.exchange.settled();
    expect(load(json.store)).toMatchObject(zeroLoad());
    expect(estimates).toBe(1);

    const streamed = start(undefined, undefined, () => (estimates += 1));
    await streamed.exchange.decide(view);
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(load(streamed.store)).toMatchObject({ requests: 1, prefillRequests: 1 });
    streamed.exchange.abort("client_reset");
    await streamed.exchange.settled();
    expect(estimates).toBe(1);
  });

  it("a move the table does not have is refused, and failing the exchange releases it once with one line naming the cause", async () => {
    const lines: Array<Record<string, unknown>> = [];
    const log = pino({ level: "info" }, { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) });
    const { store, exchange } = start(log);
    let told: Error | undefined;
    exchange.onFailure((cause) => (told = cause));
    await exchange.decide(view);
    exchange.responseHeaders(200, "text/event-stream");
    expect(() => exchange.responseHeaders(200, "text/event-stream")).toThrow("exchange r1 cannot go from responding to responding");
    exchange.fail(new Error("response headers twice"));
    expect(exchange.current).toBe("ended");
    expect(store.size()).toBe(0);
    exchange.fail(new Error("again"));
    exchange.abort("client_reset");
    await exchange.settled();
    expect(lines.filter((line) => line["msg"] === "request failed")).toEqual([expect.objectContaining({ cause: "response headers twice", outcome: "internal_error", engine: ENGINE })]);
    expect(lines.filter((line) => line["msg"] === "request finished")).toEqual([]);
    // fail() is the transport's call: only failures from inside the exchange are told back to it.
    expect(told).toBeUndefined();
  });
});


describe("a long prompt priced from a sample for its pick", () => {
  const options = { countWholeUpTo: 65_536, countAtPickUpTo: 256, imageTokens: 765, audioTokens: 200 };
  const tokens = new TokenizerRegistry(options, () => directory, (error) => {
    throw error;
  });
  const parser = new RequestParser({ offThreadAboveBytes: Number.MAX_SAFE_INTEGER, wholeUpToCost: () => 65_536, includeUsage: false, lost: (error) => {
    throw error;
  } });
  afterAll(() => Promise.all([tokens.close(), parser.close()]));
  const words = ["routing", "a", "prefill", "of", "tokenizers", "KV-cache", "engine's", "12,345", "über", "(and)", "step", "chunked"];
  const prompt = Array.from({ length: 1500 }, (_, i) => words[(i * 7 + (i >> 3)) % words.length]).join(" ");
  const longBody = Buffer.from(JSON.stringify({ model: "qwen3", stream: true, messages: [{ role: "user", content: prompt }] }));
  const view = { path: "/v1/chat/completions", header: () => undefined, modelOverride: undefined, body: longBody, bodySeen: true, chosenEngine: undefined, subset: undefined };
  const parsed = parseInferenceRequest("/v1/chat/completions", longBody);
  if (!parsed.ok) throw new Error(parsed.message);
  const exact = tokens.forModel("qwen3").promptTokens(parsed.request) as number;
  const atPick = tokens.forModel("qwen3").pickPrice(parsed.request).tokens as number;
  const nextTurn = () => new Promise((resolve) => setImmediate(resolve));

  function start() {
    const store = new MemoryLoadStore();
    const picked: number[] = [];
    const events: ExchangeEvents = { ...unheardEvents(), picked: (_pool, _engine, promptTokens) => picked.push(promptTokens) };
    const exchange = new InferenceExchange(lifecycleContext({ store, picker: new Picker(store, () => directory, schedulingDefaults), parser, tokens, events }), "r1");
    return { store, exchange, picked };
  }

  it("is picked at the sample's price, then counted whole once the reply is out, and its reservation corrected", async () => {
    expect(atPick).not.toBe(exact);
    const { store, exchange, picked } = start();
    expect((await exchange.decide(view)).kind).toBe("route");
    expect(picked).toEqual([atPick]);
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject({ prefillTokens: atPick, tokensHeld: atPick });
    await nextTurn();
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject({ requests: 1, prefillTokens: exact, tokensHeld: exact });
    exchange.responseHeaders(200, "text/event-stream");
    exchange.responseBody(Buffer.from('data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'));
    exchange.responseEnd();
    await exchange.settled();
    expect(store.size()).toBe(0);
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject(zeroLoad());
  });

  it("keeps the output streamed before the count came: the correction is the prompt's alone", async () => {
    const { store, exchange } = start();
    expect((await exchange.decide(view)).kind).toBe("route");
    exchange.responseHeaders(200, "text/event-stream");
    exchange.responseBody(Buffer.from('data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'));
    const generated = outputTokens("hi");
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject({ prefillTokens: 0, tokensHeld: atPick + generated });
    await nextTurn();
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject({ prefillTokens: 0, tokensHeld: exact + generated });
    exchange.responseEnd();
    await exchange.settled();
    expect(store.loads([ENGINE]).get(ENGINE)).toMatchObject(zeroLoad());
  });

  it("keeps the engine's own usage when it comes before the count, and counts nothing for an exchange that has ended", async () => {
    const reported = start();
    expect((await reported.exchange.decide(view)).kind).toBe("route");
    reported.exchange.responseHeaders(200, "text/event-stream");
    reported.exchange.responseBody(Buffer.from('data: {"choices":[],"usage":{"prompt_tokens":4321,"completion_tokens":0}}\n\n'));
    await nextTurn();
    expect(reported.store.loads([ENGINE]).get(ENGINE)).toMatchObject({ tokensHeld: 4321 });
    reported.exchange.responseEnd();
    await reported.exchange.settled();

    const ended = start();
    expect((await ended.exchange.decide(view)).kind).toBe("route");
    ended.exchange.abort("client_reset");
    await nextTurn();
    await ended.exchange.settled();
    expect(ended.store.size()).toBe(0);
    expect(ended.store.loads([ENGINE]).get(ENGINE)).toMatchObject(zeroLoad());
  });
});
