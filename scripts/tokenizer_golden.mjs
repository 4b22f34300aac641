// tokenizer_golden.mjs writes testdata/tokenizer/gpt2_golden.json: test strings with
// GPT-2's token ids as OpenAI's tiktoken (Rust core, WASM build; version pinned in
// scripts/package.json) computes them, for policy/tokenizer's Go tests. The Go tests
// read the JSON and never need node.
//
//   cd scripts && npm ci && node tokenizer_golden.mjs
//
// With --check-hf DIR it instead loads DIR/tokenizer.json + tokenizer_config.json
// (as written by the Go Save) with Hugging Face's tokenizers.js and prints the ids
// of each golden string, one JSON array per line, so a Go-side check can compare.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { get_encoding } from "tiktoken";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..");
const outPath = join(root, "testdata/tokenizer/gpt2_golden.json");

if (process.argv[2] === "--check-hf") {
  const { Tokenizer } = await import("@huggingface/tokenizers");
  const dir = process.argv[3];
  const tj = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
  const tc = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8"));
  const tok = new Tokenizer(tj, tc);
  const texts = JSON.parse(readFileSync(0, "utf8")); // a JSON array of strings on stdin
  const out = texts.map((t) => {
    const ids = tok.encode(t, { add_special_tokens: false }).ids;
    return { ids, decoded: ids.length ? tok.decode(ids) : "" };
  });
  writeFileSync(1, JSON.stringify(out) + "\n"); // synchronous: exit must not cut a pipe short
  process.exit(0);
}

const enc = get_encoding("gpt2");
const tiktokenVersion = JSON.parse(readFileSync(join(here, "node_modules/tiktoken/package.json"), "utf8")).version;

// Hand-picked cases: each names what it covers.
const cases = [
  ["empty", ""],
  ["ascii prose", "Hello world! The quick brown fox jumps over the lazy dog."],
  ["single space", " "],
  ["single letter", "a"],
  ["contractions", "it's don't we're they've I'm you'll he'd"],
  ["contractions upper (not special in GPT-2)", "IT'S DON'T WE'RE THEY'VE I'M YOU'LL HE'D 'S 'T"],
  ["apostrophe edge", "'s 'sam ''s '' 'x rock'n'roll o'clock 'll've 're'd"],
  ["quotes", "\"Quoted\", 'single', `back`, “curly” ‘curly’"],
  ["numbers", "0 1 12 123 1234 12345 3.14159 -42 1,000,000 2024-01-31 v1.2.3 0x1F"],
  ["unicode numbers", "² ½ Ⅻ ٣٤ １２３ ①②"],
  ["punctuation runs", "Wait... what?! (yes) [no] {maybe} <tag/> a--b a—b #hashtag @user $5.00 100% a&b"],
  ["code", "func main() {\n\tfmt.Println(\"hi\")\n}\n"],
  ["python", "def f(x):\n    return x**2  # square\n\n\nprint(f(3))\n"],
  ["accents", "café naïve résumé Über straße Ångström façade"],
  ["combining marks", "e\u0301 cafe\u0301 n\u0303o"],
  ["greek", "Καλημέρα κόσμε, αβγδε ΑΒΓΔΕ"],
  ["cyrillic", "Привет, мир! Съешь же ещё этих мягких французских булок."],
  ["cjk", "漢字とひらがなとカタカナ。中文测试，你好世界！한국어 텍스트"],
  ["arabic", "مرحبا بالعالم، هذا اختبار."],
  ["hebrew", "שלום עולם"],
  ["devanagari", "नमस्ते दुनिया, हिन्दी में परीक्षण।"],
  ["thai", "สวัสดีชาวโลก"],
  ["emoji", "I ❤️ Go 👍🏽 🎉🎉 😀"],
  ["emoji zwj", "👨‍👩‍👧‍👦 family, 🧑🏿‍💻 coder, 🏳️‍🌈"],
  ["flags", "🇺🇸🇬🇧🇯🇵 flags 🇩🇪"],
  ["spaces", "a  b   c    d"],
  ["leading spaces", "  a"],
  ["three spaces then word", "   hello"],
  ["trailing spaces", "trailing   "],
  ["only spaces", "     "],
  ["tabs", "\ta\t\tb\t\t\tc\t"],
  ["newlines", "line1\nline2\n\nline3\n\n\n"],
  ["just newlines", "\n\n\n"],
  ["space newline mix", "a \n b  \n\n  c \t \n"],
  ["crlf", "Windows\r\nline\r\nendings\r\n\r\n"],
  ["nbsp", "a\u00a0b \u00a0c\u00a0\u00a0d"],
  ["unicode spaces", "em\u2003space ideo\u3000space thin\u2009sp nel\u0085x ls\u2028ps\u2029 nnbsp\u202fx"],
  ["vt ff", "a\u000bb\u000cc \u000b d"],
  ["zero width", "zero\u200bwidth\u200cjoin\u200dx\ufeffbom"],
  ["control chars", "\u0000\u0001\u001b[31mred\u001b[0m\u007f"],
  ["info separators (not \\s)", "a\u001cb\u001dc\u001ed\u001ff"],
  ["eot alone", "<|endoftext|>"],
  ["eot in text", "Hello<|endoftext|>World"],
  ["eot with spaces", "end. <|endoftext|> Start"],
  ["eot twice", "<|endoftext|><|endoftext|>a<|endoftext|>\n"],
  ["eot partial", "<|endoftext| <|endoftext <endoftext|>"],
  ["long word", "Pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism"],
  ["long run", "a".repeat(300) + " " + "!".repeat(200) + " " + " ".repeat(150) + "x"],
  ["url", "https://example.com/path?query=1&b=2#frag"],
  ["mixed script word", "abcΑΒΓабв漢字123٣"],
  ["letters+digits", "abc123def 4x4 H2O"],
  ["math", "∑_{i=1}^{n} x_i ≤ ∞ ≠ √2 ≈ 1.414"],
  ["private use and rare", "\ue000 \uffff \u{10ffff} \u{1d400}\u{1d401}"],
];

// Random mixes from pools of strings that exercise the scanner's class changes. A
// fixed-seed generator makes the file reproducible.
const pools = [
  "a", "b", "Z", "the", "The", "word", "x", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", "   ",
  "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "\"", ".", ",", "!", "?", "...",
  "-", "_", "(", ")", "[", "]", "{", "}", "<", ">", "/", "\\", "|", "#", "@", "$", "%", "^", "&",
  "*", "+", "=", "~", "`", ";", ":", "0", "1", "42", "3.14", "1000000", "²", "½", "Ⅻ", "٣",
  "１", "é", "e\u0301", "ñ", "ü", "ß", "Ω", "αβ", "жизнь", "漢", "字", "ひら", "カタ", "한",
  "مرحبا", "שלום", "नमस्ते", "्", "ि", "ไทย", "👍", "🏽", "👨‍👩‍👧", "🇺🇸", "❤️", "\u200d", "\ufe0f",
  "\u00a0", "\u2003", "\u3000", "\u2028", "\u0085", "\u000b", "\u000c", "\u200b", "\u001c",
  "\u0000", "\u007f", "<|endoftext|>", "<|", "|>", "endoftext",
];
let seed = 20240131;
function rand(n) {
  // xorshift32
  seed ^= seed << 13; seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5; seed >>>= 0;
  return seed % n;
}
for (let i = 0; i < 300; i++) {
  let s = "";
  const k = 1 + rand(25);
  for (let j = 0; j < k; j++) s += pools[rand(pools.length)];
  cases.push([`random ${i}`, s]);
}

// A few KB of the KJV: the start, and a slice from the middle on line boundaries.
const kjv = readFileSync(join(root, "data/kjv.txt"), "utf8");
cases.push(["kjv start", kjv.slice(0, 4096)]);
{
  const mid = kjv.indexOf("\n", kjv.length >> 1) + 1;
  const end = kjv.indexOf("\n", mid + 3000) + 1;
  cases.push(["kjv middle", kjv.slice(mid, end)]);
}

const u32 = (a) => Array.from(a);
const out = {
  note: "Generated by scripts/tokenizer_golden.mjs; do not edit.",
  oracle: `npm tiktoken@${tiktokenVersion}, get_encoding("gpt2")`,
  cases: cases.map(([name, text]) => ({
    name,
    text,
    ids: u32(enc.encode(text, "all")), // specials become their ids
    ordinary: u32(enc.encode_ordinary(text)), // no special handling
  })),
};

// Decoding ids that cut characters apart: the oracle is tiktoken's bytes through
// the WHATWG UTF-8 decoder, which (like Python's errors="replace") emits one U+FFFD
// per maximal invalid subpart.
const utf8 = new TextDecoder("utf-8", { fatal: false });
out.decode = [];
for (const text of ["👨‍👩‍👧‍👦🇺🇸", "漢字とひらがな", "नमस्ते", "é€𝐀", "a€b"]) {
  const ids = u32(enc.encode_ordinary(text));
  for (let i = 0; i < 6; i++) {
    const a = rand(ids.length), b = a + 1 + rand(ids.length - a);
    const part = ids.slice(a, b);
    out.decode.push({ ids: part, text: utf8.decode(enc.decode(new Uint32Array(part))) });
  }
}
// Raw single-byte tokens: a lone lead byte, a lone continuation byte, an overlong
// start, a truncated 4-byte sequence, a surrogate encoding.
const byteToken = (b) => {
  // GPT-2's byte-level alphabet: printable Latin-1 maps to itself, the rest to U+0100+n.
  const self = (c) => (c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff);
  let n = 0;
  for (let c = 0; c < 256; c++) {
    if (c === b) return self(c) ? String.fromCodePoint(c) : String.fromCodePoint(256 + n);
    if (!self(c)) n++;
  }
};
const vocab = JSON.parse(readFileSync(join(root, "data/gpt2/vocab.json"), "utf8"));
for (const bytes of [[0xe2], [0x82], [0xc0, 0xaf], [0xf0, 0x9f, 0x98], [0xed, 0xa0, 0x80], [0x61, 0xe2, 0x82, 0x62], [0xf4, 0x90, 0x80, 0x80], [0xff, 0xfe]]) {
  const ids = bytes.map((b) => vocab[byteToken(b)]);
  const check = u32(enc.decode(new Uint32Array(ids)));
  if (check.join() !== bytes.join()) throw new Error(`byte tokens ${ids} decode to ${check}, want ${bytes}`);
  out.decode.push({ ids, text: utf8.decode(new Uint8Array(bytes)) });
}

// All of the KJV, as a count and a hash of the ids (little-endian int32): too big
// to store, cheap to compare.
{
  const ids = enc.encode_ordinary(kjv);
  const buf = Buffer.alloc(ids.length * 4);
  ids.forEach((id, i) => buf.writeInt32LE(id, i * 4));
  out.files = [{
    path: "data/kjv.txt",
    bytes: Buffer.byteLength(kjv, "utf8"),
    sha256_file: createHash("sha256").update(readFileSync(join(root, "data/kjv.txt"))).digest("hex"),
    tokens: ids.length,
    sha256_ids_int32le: createHash("sha256").update(buf).digest("hex"),
  }];
}

mkdirSync(dirname(outPath), { recursive: true });
// One case per line keeps the file diffable.
const list = (xs) => "[\n" + xs.map((x) => "  " + JSON.stringify(x)).join(",\n") + "\n ]";
writeFileSync(outPath, "{\n" + [
  ` "note": ${JSON.stringify(out.note)}`,
  ` "oracle": ${JSON.stringify(out.oracle)}`,
  ` "cases": ${list(out.cases)}`,
  ` "decode": ${list(out.decode)}`,
  ` "files": ${list(out.files)}`,
].join(",\n") + "\n}\n");
enc.free();
console.log(`wrote ${outPath}: ${out.cases.length} cases, ${out.decode.length} decode cases`);
