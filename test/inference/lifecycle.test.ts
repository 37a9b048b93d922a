import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InferenceExchange, type ExchangeEvents } from "../../src/inference/lifecycle.js";
import { parseInferenceRequest } from "../../src/inference/request.js";
import { RequestParser } from "../../src/inference/request-parser.js";
import { TokenizerRegistry } from "../../src/inference/tokenizers/registry.js";
import { MemoryLoadStore } from "../../src/load/memory-store.js";
import { zeroLoad } from "../../src/load/store.js";
import { PoolDirectory } from "../../src/pools/pools.js";
import { Picker } from "../../src/scheduling/picker.js";
import { defaultWeights } from "../../src/scheduling/score.js";
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
        finished: (_seconds, outcome) => seen.push(`finished ${outcome}`),
      };
      const exchange = new InferenceExchange(
        {
          store,
          picker: new Picker(store, () => directory, { weights: defaultWeights, maxRequestsPerEngine: 0, fallbacks: 0 }),
          parser,
          tokens,
          health: { succeeded: () => seen.push("succeeded"), failed: () => seen.push("failed"), unanswered: () => seen.push("unanswered") },
          log: pino({ level: "silent" }),
          maxJsonResponseBytes: 1 << 20,
          forceIncludeUsage: false,
          events,
          observe: role === "observer" ? () => "qwen" : undefined,
        },
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
