import { encode } from "gpt-tokenizer/encoding/o200k_base";
import { describe, expect, it } from "vitest";
import { blockHashes } from "../engine-sim/tokens.js";
import { promptText } from "./prompt-text.js";
import { BLOCK_TOKENS, mixed, sharedPrefix } from "./workloads.js";

const commonPrefix = (a: readonly string[], b: readonly string[]): number => {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n += 1;
  return n;
};

describe("promptText", () => {
  it("is exactly the request's prompt tokens in o200k, and shares with another request the very blocks the workload says they share", () => {
    const requests = [...sharedPrefix.requests(40, { rate: 10 }, 7), ...mixed.requests(10, { rate: 10 }, 7)];
    const engineHashes = requests.map((request) => {
      const tokens = encode(promptText(request));
      expect(tokens).toHaveLength(request.promptTokens);
      return blockHashes(tokens, BLOCK_TOKENS);
    });
    let shared = 0;
    for (let i = 0; i < requests.length; i++) {
      for (let j = i + 1; j < requests.length; j++) {
        const expected = commonPrefix(requests[i]!.blockHashes, requests[j]!.blockHashes);
        expect(commonPrefix(engineHashes[i]!, engineHashes[j]!), `${requests[i]!.id} and ${requests[j]!.id}`).toBe(expected);
        if (expected > 0) shared += 1;
      }
    }
    // The list holds conversations and system prompts in common: the property was tested on some.
    expect(shared).toBeGreaterThan(20);
  });
});
