r"""llama.cpp's BPE pre-tokenizers: which split rule each `tokenizer.ggml.pre` name selects, the
flags llama.cpp sets beside it (llama-vocab.cpp's loader), the rule's regexes
(`llm_tokenizer_bpe`), and the way llama.cpp applies them (unicode.cpp's `unicode_regex_split`).

A rule's regexes run one after another, each refining the pieces the previous one left: the
matches and the text between them become pieces. llama.cpp runs a regex that names a Unicode
category (`\p{L}`, ...) with std::regex over a *collapsed* text, in which each non-ASCII code
point stands as one byte for its category (`\p{L}` is rewritten as that byte plus A-Za-z), and any
other regex over the code points with non-ASCII whitespace replaced by `\v`. Both are reproduced
here with Python's `re` over the same texts and ASCII classes, so the places where that differs
from a true Unicode regex (`\p{Lu}` is any letter outside ASCII, `\p{M}` matches no ASCII) come
out as llama.cpp's. Two rules use hand-written splitters in llama.cpp (kimi-k2's Han-aware words,
afmoe's digit groups); they are ported below.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
_DEEPSEEK3_WORDS = (r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?"""
                    r"[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_CJK_KANA = "[一-龥぀-ゟ゠-ヿ]+"
_PORO = " ?[^(\\s|.,!?…。，、।۔،)]+"
_NEWLINES = r"[^\n]+|[\n]+"
# letters split at case changes, as GPT-4o's tokenizer.json has it, rewritten with lookaheads
# because std::regex has no \p{Lu}/\p{Ll}
_CASED = (r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+{c}|"
          r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*{c}")
_CASED_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# DeepSeek LLM's letters as llama.cpp lists them; the escapes are the code points Unicode
# normalization would turn into others (U+212A KELVIN SIGN into K, widening a range to ASCII)
_DEEPSEEK_LETTERS = (
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅ"
    "ὐ-ὗὙὛὝὟ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭ"
    "Ꚁ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ\U00010400-\U0001044f𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃")
_HAN = r"\p{Han}+"  # kimi-k2's whole rule: llama.cpp's hand-written splitter
_AFMOE_DIGITS = r"\p{AFMoE_digits}"  # afmoe's digit groups: llama.cpp's hand-written splitter

# llama.cpp's pre-tokenizer types (llama_vocab_pre_type) -> the regexes applied in turn
RULES: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", "[0-9][0-9][0-9]"),
    "llama3": (_LLAMA3,),
    "jais2": (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
              r"\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|\s{64}(?!\S)|\s{32}(?!\S)|"
              r"\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}",),
    "deepseek-llm": ("[\r\n]", f"\\s?[{_DEEPSEEK_LETTERS}]+", r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
                     r"\s+$", "[一-龥ࠀ-一가-퟿]+", r"\p{N}+"),
    "deepseek3": (r"\p{N}{1,3}", _CJK_KANA, _DEEPSEEK3_WORDS),
    "spark2_5": (r"\p{N}{1,3}", _CJK_KANA,
                 r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?"""
                 r"[\p{L}\p{M}]+| ?[\p{P}\p{S}]+|[\r\n]|\s+(?!\S)|\s+", r"\p{N}"),
    "youtu": ("[가-힣ㄱ-ㆎ]+|[！…“”‘’—：；，、-〿︰-﹏]+|[ㄅ-ㄯ]+|[一-龥぀-ゟ゠-ヿ]+",
              r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
              + _CONTRACTIONS + r"?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
              r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS + r"?|\p{N}" + _CASED_TAIL),
    "deepseek-coder": ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", "[一-龥ࠀ-一가-퟿]+", r"\p{N}"),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, "[0-9][0-9][0-9]"),
    "starcoder": (r"\p{N}", _GPT2),
    "gpt2": (_GPT2,),
    "qwen2": (_QWEN2,),
    "qwen35": (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",),
    "poro": (_PORO,),
    "viking": (_PORO, r"\p{N}"),
    "tekken": (_CASED.replace("{c}", "") + r"|\p{N}" + _CASED_TAIL,),
    "chameleon": ("<sentinel:[0-9]+>", "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z", "([\\t\\n]|    |  )",
                  r"\p{N}", r"[\p{P}!-/:-@\[-`{-~]", _GPT2),
    "gpt4o": (_CASED.replace("{c}", _CONTRACTIONS + "?") + r"|\p{N}{1,3}" + _CASED_TAIL,),
    # GPT-4o's with marks counted as letters
    "granite-emb-multi": (_CASED.replace("{c}", _CONTRACTIONS + "?")
                          .replace(r"[\p{L}]", r"[\p{L}\p{M}]") + r"|\p{N}{1,3}" + _CASED_TAIL,),
    "tiny-aya": (r"\d{1,3}(?=(?:\d{3})*\b)",
                 r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 + _CONTRACTIONS + r"?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+"
                 r"[\p{Ll}\p{Lm}\p{Lo}\p{M}]*" + _CONTRACTIONS + r"?|\p{N}{1,3}" + _CASED_TAIL),
    "kimi-k2": (_HAN,),
    "superbpe": (r"\p{N}+", r"(?=(\d{3})+(?!\d))"),
    "bailingmoe": (r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                   r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",),
    "seed-coder": (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|"
                   r"\s*[\r\n]+|\s+(?!\S)|\s+",),
    # Qwen 2's rule without the contractions, so Turkish suffixes after an apostrophe stay on
    "ufakzeka": (r"[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|"
                 r"\s+",),
    "afmoe": (_AFMOE_DIGITS, "[一-鿿㐀-䶿\uf900-﫿぀-ゟ゠-ヿ･-ﾟ⼀-⿟เ-๿຀-໿ក-៿က-႟ꩠ-ꩿꧠ-꧿가-힯ᄀ-ᇿ]+",
              _DEEPSEEK3_WORDS),
    "laguna": (_NEWLINES, _QWEN2),
    "exaone-moe": (_CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?(?:\p{L}\p{M}*(?: \p{L}\p{M}*)*)+|\p{N}|"
                   r" ?[^\s\p{L}\p{N}]+[\r\n/]?|\s*[\r\n]|\s+(?!\S)|\s+",),
    # SentencePiece-style BPE (Gemma 4, Sarvam): spaces escaped to ▁, raw UTF-8, only newlines
    # split off
    "gemma4": (_NEWLINES,),
    "minicpm5": (r"\p{N}{1,3}", _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}


@dataclass(frozen=True)
class PreTokenizer:
    """A `tokenizer.ggml.pre` name as llama.cpp's loader reads it."""
    name: str
    rule: str  # key of RULES
    ignore_merges: bool = False  # a piece that is a whole token is that token (no merging)
    clean_spaces: bool = True  # detokenizing drops the space before . , ! ? and 's 'm 're 've
    add_bos: bool = False  # BOS by default (the file's add_bos_token key still decides)
    escape_whitespaces: bool = False  # spaces become ▁ and pieces stay raw UTF-8
    newline_tokens: bool = False  # a run of newlines that is a token is not merged (Gemma 4)

    @property
    def byte_encode(self) -> bool:
        """Pieces are spelled in GPT-2's byte-to-character code before merging."""
        return not self.escape_whitespaces

    def split(self, text: str) -> list[str]:
        """The pieces BPE merges run on, in order (empty pieces dropped)."""
        if self.escape_whitespaces:
            text = text.replace(" ", "▁")
        return split(self.rule, text)


def _names(rule: str, names: str, **flags) -> dict[str, PreTokenizer]:
    return {n: PreTokenizer(n, rule, **flags) for n in names.split()}


NO_CLEAN = {"clean_spaces": False}
# every name llama.cpp's loader accepts for a BPE vocabulary, with the flags it sets
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **_names("default", "default"),
    **_names("minicpm5", "minicpm5", ignore_merges=True),
    **_names("llama3", "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 "
             "jina-v5-nano", ignore_merges=True, add_bos=True),
    # glm5: absent from the llama.cpp source read here; its llama.cpp 0.3.36 tokenizations
    # (the fixture) are glm4's
    **_names("llama3", "dbrx smaug-bpe glm4 chatglm-bpe glm5"),
    **_names("deepseek-llm", "deepseek-llm", **NO_CLEAN),
    **_names("deepseek-coder", "deepseek-coder", **NO_CLEAN),
    **_names("deepseek3", "deepseek-v3 hunyuan-dense hy_v4 joyai-llm", **NO_CLEAN),
    **_names("spark2_5", "spark2_5", **NO_CLEAN),
    **_names("youtu", "youtu", ignore_merges=True, **NO_CLEAN),
    **_names("falcon", "falcon"),
    **_names("gpt2", "mpt gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 "
             "mellum modern-bert jina-v1-en jina-v2-code roberta-bpe olmo jais exaone4"),
    **_names("gpt2", "trillion granite-docling", **NO_CLEAN),
    **_names("jais2", "jais-2"),
    **_names("gemma4", "gemma4 granite-embed-multi-311m", escape_whitespaces=True, add_bos=True,
             newline_tokens=True),
    **_names("gemma4", "sarvam-moe", escape_whitespaces=True, **NO_CLEAN),
    **_names("starcoder", "starcoder refact codeshell exaone minerva-7b mellum2"),
    **_names("starcoder", "command-r smollm", **NO_CLEAN),
    **_names("qwen2", "stablelm2 megrez"),
    **_names("qwen2", "qwen2 deepseek-r1-qwen kormo f2llmv2 hunyuan solar-open grok-2",
             **NO_CLEAN),
    **_names("qwen35", "qwen35", **NO_CLEAN),
    **_names("poro", "bloom gpt3-finnish"),
    **_names("poro", "poro-chat", **NO_CLEAN),
    **_names("viking", "viking", **NO_CLEAN),
    **_names("tekken", "tekken", ignore_merges=True, add_bos=True, **NO_CLEAN),
    **_names("exaone-moe", "exaone-moe"),
    **_names("chameleon", "chameleon", add_bos=True, **NO_CLEAN),
    **_names("gpt4o", "gpt-4o llama4 kanana2 talkie minimax-m2", **NO_CLEAN),
    **_names("granite-emb-multi", "granite-embed-multi-97m", ignore_merges=True, **NO_CLEAN),
    **_names("tiny-aya", "tiny_aya cohere2moe", **NO_CLEAN),
    **_names("superbpe", "superbpe", **NO_CLEAN),
    **_names("bailingmoe", "bailingmoe bailingmoe2 llada-moe", **NO_CLEAN),
    **_names("seed-coder", "seed-coder", **NO_CLEAN),
    **_names("kimi-k2", "kimi-k2", **NO_CLEAN),
    **_names("ufakzeka", "ufakzeka", **NO_CLEAN),
    **_names("afmoe", "afmoe", **NO_CLEAN),
    **_names("laguna", "laguna", **NO_CLEAN),
}
# accepted by llama.cpp only together with a tokenizer model of its own
NOT_BPE = {"whitespace": "the 'whitespace' tokenizer model (Jina v2 zh embeddings)"}


def lookup(name: str) -> PreTokenizer:
    """The pre-tokenizer a file names; ValueError naming it when llama.cpp has no such rule."""
    pre = PRE_TOKENIZERS.get(name)
    if pre is None:
        why = (f"it belongs to {NOT_BPE[name]}, which is not supported" if name in NOT_BPE
               else "llama.cpp knows no such name")
        raise ValueError(f"unsupported pre-tokenizer {name!r}: {why}")
    return pre


# -- applying a rule -------------------------------------------------------------------------

def split(rule: str, text: str) -> list[str]:
    """`text` cut into pieces by rule's regexes in turn (llama.cpp's unicode_regex_split)."""
    offsets = [len(text)]  # piece lengths in code points
    collapsed = wide = None
    for expr in RULES[rule]:
        custom = _CUSTOM.get(expr)
        if custom is not None:
            offsets = custom(text, offsets)
        elif _uses_categories(expr):
            collapsed = _collapse(text) if collapsed is None else collapsed
            offsets = _split_regex(_collapsed_regex(expr), collapsed, offsets)
        else:
            wide = _widen(text) if wide is None else wide
            offsets = _split_regex(_plain_regex(expr), wide, offsets)
    pieces, start = [], 0
    for n in offsets:
        if n:
            pieces.append(text[start:start + n])
        start += n
    return pieces


def _split_regex(pattern: re.Pattern, hay: str, offsets: list[int]) -> list[int]:
    """Each piece cut into its matches and the text between them (std::regex_iterator's walk;
    an empty match cuts without taking anything)."""
    out, start = [], 0
    for n in offsets:
        end, done = start + n, start
        for m in pattern.finditer(hay, start, end):
            if m.start() > done:
                out.append(m.start() - done)
            out.append(m.end() - m.start())
            done = m.end()
        if done < end:
            out.append(end - done)
        start = end
    return out


# llama.cpp's category classes and the byte each stands as in the collapsed text
_CATEGORY_BYTE = {"N": "\xd1", "L": "\xd2", "P": "\xd3", "M": "\xd4", "S": "\xd5"}
_CATEGORY_ASCII = {"N": "0-9", "L": "A-Za-z", "P": r"!-#%-*,-/:-;?-@\[-\]_\{\}", "M": "",
                   "S": r"\$\+<->^`\|"}
_CLASS = re.compile(r"\\p\{(N|L|P|M|S|Lu|Ll|Lt|Lm|Lo)\}")


def _uses_categories(expr: str) -> bool:
    return _CLASS.search(expr) is not None


def _is_space(c: str) -> bool:
    """llama.cpp's whitespace set: Python's, less the ASCII separators 0x1C-0x1F."""
    return c.isspace() and not "\x1c" <= c <= "\x1f"


@functools.lru_cache(maxsize=4096)
def _collapsed_char(c: str) -> str:
    if _is_space(c):
        return "\x0b"
    return _CATEGORY_BYTE.get(unicodedata.category(c)[0], "\xd0")


def _collapse(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c if c < "\x80" else _collapsed_char(c) for c in text)


def _widen(text: str) -> str:
    if text.isascii():
        return text
    return "".join("\x0b" if c >= "\x80" and _is_space(c) else c for c in text)


@functools.cache
def _collapsed_regex(expr: str) -> re.Pattern:
    """expr with each \\p{..} as its category byte plus its ASCII members (a class of its own
    outside brackets), the rewrite llama.cpp makes."""
    out, inside, i = [], False, 0
    while i < len(expr):
        ch = expr[i]
        if ch == "[" and (i == 0 or expr[i - 1] != "\\"):
            inside = True
        elif ch == "]" and inside and expr[i - 1] != "\\":
            inside = False
        else:
            m = _CLASS.match(expr, i)
            if m:
                cat = m.group(1)[0]
                cls = _CATEGORY_BYTE[cat] + _CATEGORY_ASCII[cat]
                out.append(cls if inside else f"[{cls}]")
                i = m.end()
                continue
        out.append(ch)
        i += 1
    return re.compile("".join(out), re.ASCII)


@functools.cache
def _plain_regex(expr: str) -> re.Pattern:
    # ECMAScript's $ is the end of the input only; Python's also matches before a final \n
    return re.compile(expr.replace("$", r"\Z"), re.ASCII)


# -- llama.cpp's hand-written splitters -----------------------------------------------------

def _is_han(c: str) -> bool:
    o = ord(c)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF
            or 0x2A700 <= o <= 0x2B73F or 0x2B740 <= o <= 0x2B81F or 0x2B820 <= o <= 0x2CEAF
            or 0x2CEB0 <= o <= 0x2EBEF or 0xF900 <= o <= 0xFAFF or 0x2F800 <= o <= 0x2FA1F)


def _split_kimi_k2(text: str, offsets: list[int]) -> list[int]:
    """Kimi K2's rule (llama.cpp's unicode_regex_split_custom_kimi_k2): Han runs, words of other
    letters with an optional leading mark and contraction, digits in threes, punctuation runs
    with trailing newlines, then whitespace as Llama 3 splits it."""
    out, start = [], 0
    for n in offsets:
        _kimi_k2_piece(text, start, start + n, out)
        start += n
    return out


def _kimi_k2_piece(text: str, start: int, end: int, out: list[int]) -> None:
    def at(p):
        return text[p] if start <= p < end else ""

    def cat(p):  # major category; "" past the piece
        return unicodedata.category(text[p])[0] if start <= p < end else ""

    def space(p):
        return start <= p < end and _is_space(text[p])

    def letter(p):  # a letter that is not Han
        return cat(p) == "L" and not _is_han(text[p])

    def other(p):  # [^\s\p{L}\p{N}] among the code points llama.cpp gives flags
        return (start <= p < end and not _is_space(text[p])
                and unicodedata.category(text[p]) not in _NO_FLAGS and cat(p) not in "LN")

    prev = pos = start

    def add(stop):
        nonlocal prev
        if stop > prev:
            out.append(stop - prev)
        prev = stop

    while pos < end:
        c, k = text[pos], cat(pos)
        if _is_han(c):
            while start <= pos < end and _is_han(text[pos]):
                pos += 1
            add(pos)
            continue
        can_lead = not (c in "\r\n" or k in ("L", "N"))
        if letter(pos) or (can_lead and letter(pos + 1)):
            if can_lead:
                pos += 1
            while letter(pos):
                pos += 1
            if at(pos) == "'" and pos + 1 < end:
                c1 = at(pos + 1).lower()
                if c1 in ("s", "t", "m", "d"):
                    pos += 2
                elif pos + 2 < end and c1 + at(pos + 2).lower() in ("re", "ve", "ll"):
                    pos += 3
            add(pos)
            continue
        if k == "N":
            ini = pos
            while cat(pos) == "N":
                pos += 1
                if pos - ini >= 3:
                    add(pos)
                    ini = pos
            add(pos)
            continue
        if other(pos + 1 if c == " " else pos):
            pos += c == " "
            while other(pos):
                pos += 1
            while at(pos) in ("\r", "\n") and at(pos):
                pos += 1
            add(pos)
            continue
        n_ws, last_nl = 0, 0
        while space(pos + n_ws):
            if text[pos + n_ws] in "\r\n":
                last_nl = pos + n_ws + 1
            n_ws += 1
        if last_nl:
            pos = last_nl
        elif n_ws > 1 and pos + n_ws < end:
            pos += n_ws - 1
        else:
            pos += max(n_ws, 1)
        add(pos)


# code points llama.cpp gives no flags (unassigned); no class matches them in its splitters
_NO_FLAGS = ("Cn",)


def _split_afmoe_digits(text: str, offsets: list[int]) -> list[int]:
    """AFMoE's digits (llama.cpp's unicode_regex_split_custom_afmoe): a run of digits split into
    threes from the right; everything between runs stays one piece."""
    out, start = [], 0
    for n in offsets:
        end, prev, pos = start + n, start, start
        while pos < end:
            if unicodedata.category(text[pos])[0] != "N":
                pos += 1
                continue
            if pos > prev:
                out.append(pos - prev)
            run = pos
            while pos < end and unicodedata.category(text[pos])[0] == "N":
                pos += 1
            head = (pos - run) % 3
            if head:
                out.append(head)
            out += [3] * ((pos - run) // 3)
            prev = pos
        if end > prev:
            out.append(end - prev)
        start = end
    return out


_CUSTOM = {_HAN: _split_kimi_k2, _AFMOE_DIGITS: _split_afmoe_digits}
