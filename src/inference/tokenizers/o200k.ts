import { clearMergeCache, countTokens } from "gpt-tokenizer/encoding/o200k_base";

/** Counts the tokens of a text exactly, special tokens of the chat template excluded. */
export interface TextTokenizer {
  count(text: string): number;
}

/** A TextTokenizer that may answer later (one hosted in a worker thread); it never rejects. */
export interface AsyncTextTokenizer {
  count(text: string): number | Promise<number>;
}

/**
 * Distinct clauses of common Chinese characters, Cyrillic and kana: the merge loop runs on long
 * multi-byte pieces only for such text, and until the JIT has compiled it for them the first
 * Chinese prompt takes ~3 times as long (30 ms instead of 8 for 2,600 characters).
 */
function warmUpText(): string {
  const han = "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计";
  let state = 7;
  const next = (modulo: number): number => (state = (state * 1103515245 + 12345) % 2147483648) % modulo;
  const clause = (alphabet: string, length: number): string => Array.from({ length }, () => alphabet[next(alphabet.length)]).join("");
  const pieces: string[] = ["warm up"];
  for (let i = 0; i < 300; i++) pieces.push(`${clause(han, 4 + next(8))}，`, `${clause("абвгдежзиклмнопрстуфхцчшыэюя", 3 + next(6))} `, clause("あいうえおかきくけこさしすせそたちつてとなにぬねの", 2 + next(4)));
  return pieces.join("");
}

// The tables are built, the regexes compiled and the merge loop optimized on first use: pay that
// at start (~40 ms), not on a request.
countTokens(warmUpText());
clearMergeCache();

/** The default: GPT-4o's o200k_base, a fair stand-in for the BPE vocabularies of open models. */
export const o200k: TextTokenizer = { count: (text) => countTokens(text) };
