import type { EngineModel } from "./scheduler.js";

/**
 * Llama-3.1-8B-Instruct on one H100 80 GB (TP 1) under vLLM v0.8.4: step time and KV blocks from
 * the coefficients the inference-sim (BLIS) project fitted to vLLM's measured TTFT and ITL for that
 * model and GPU (defaults.yaml: 5,752.7 µs per step, 17.251 µs per prefilled token, 5.999 µs per
 * decoded token; 29,205 KV blocks of 16 tokens, ~467k tokens, as 128 KiB per token in the ~57 GiB
 * left at gpu_memory_utilization 0.9); batch limits vLLM V1's defaults for a GPU of ≥ 70 GiB
 * (max_num_batched_tokens 8,192, max_num_seqs 1,024), prefix caching on (V1's default).
 */
export const LLAMA_8B_H100: EngineModel = {
  tokenBudget: 8192,
  maxRunning: 1024,
  kvBlocks: 29_205,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 5.7527,
  decodeMsPerSequence: 0.005999,
  prefillMsPerToken: 0.017251,
};

/**
 * The engine tests run against unless they ask for another: vLLM's batch limits and block size,
 * a KV cache no test fills (16 Mi tokens), prefill at a million tokens a second and steps of
 * 0.5 ms, so a default 16-token answer takes ~8 ms.
 */
export const FAST_MODEL: EngineModel = {
  tokenBudget: 8192,
  maxRunning: 1024,
  kvBlocks: 1 << 20,
  blockSize: 16,
  prefixCaching: true,
  stepBaseMs: 0.5,
  decodeMsPerSequence: 0,
  prefillMsPerToken: 0.000001,
};

/** The same engine `factor` times slower: every step cost scaled, capacities kept. */
export function slowedDown(model: EngineModel, factor: number): EngineModel {
  if (!(factor > 0)) throw new RangeError(`slowdown factor must be > 0, got ${factor}`);
  return {
    ...model,
    stepBaseMs: model.stepBaseMs * factor,
    decodeMsPerSequence: model.decodeMsPerSequence * factor,
    prefillMsPerToken: model.prefillMsPerToken * factor,
  };
}
