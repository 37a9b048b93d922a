/** Characters per prompt block: about 16 tokens, the KV-cache block of vLLM and SGLang. */
export const BLOCK_CHARS = 64;
/** Blocks hashed at most per prompt: a prefix match beyond this tells nothing more about routing. */
export const MAX_BLOCKS = 256;

/**
 * The chained hash of each full block of the prompt (its texts joined by newlines, as they are
 * counted), in order: block i's hash covers every character up to its end, so two prompts share
 * their first k hashes exactly when they share their first k blocks, as an engine's prefix cache
 * sees them. Two 32-bit FNV-1a lanes give 52 bits. One pass over at most MAX_BLOCKS × BLOCK_CHARS.
 */
export function promptBlocks(texts: readonly string[]): number[] {
  const blocks: number[] = [];
  let a = 0x811c9dc5;
  let b = 0x2f8c4a1d;
  let inBlock = 0;
  const feed = (code: number): void => {
    a = Math.imul(a ^ code, 0x01000193);
    b = Math.imul(b ^ code, 0x01000193) ^ (b >>> 15);
    if ((inBlock += 1) < BLOCK_CHARS) return;
    blocks.push((a >>> 0) * 0x100000 + ((b >>> 0) & 0xfffff));
    inBlock = 0;
  };
  for (let n = 0; n < texts.length && blocks.length < MAX_BLOCKS; n++) {
    if (n > 0) feed(10);
    const text = texts[n]!;
    for (let i = 0; i < text.length && blocks.length < MAX_BLOCKS; i++) feed(text.charCodeAt(i));
  }
  return blocks;
}

/** Prompt tokens one block stands for: the prompt's tokens per character, times a block's characters. */
export function blockTokens(texts: readonly string[], promptTokens: number): number {
  const characters = texts.reduce((sum, text) => sum + text.length, Math.max(0, texts.length - 1));
  return characters === 0 ? 0 : (promptTokens * BLOCK_CHARS) / characters;
}
