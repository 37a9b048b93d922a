/** A tokenizer file that cannot be used; the message names the file. */
export class TokenizerFileError extends Error {
  override readonly name = "TokenizerFileError";
}
