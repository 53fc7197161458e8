#!/usr/bin/env python3
"""Tokenizer reference cases from llama.cpp (llama-cpp-python, vocab_only).

Writes tests/fixtures/{gemma-3-270m,smollm2-135m-instruct}/tokenizer_cases.json:
  {"model":..., "gguf_file":..., "default_add_bos": bool, "cases": [
      {"text": str, "add_bos": bool, "parse_special": bool, "ids": [int, ...]}, ...]}
and, for every GGUF that has tokenizer.chat_template, chat_cases.json:
  {"template": str, "cases": [{"messages": [...], "add_generation_prompt": bool,
                               "rendered": str, "ids": [...]}]}
("ids" of a chat case = llama.cpp tokenize(rendered, add_bos=default, special=True)).

Also tokenizes every case with transformers' GGUF-converted tokenizer and prints
the agreement (not stored).

Usage: /opt/refenv/bin/python tools/make_tokenizer_cases.py [--models-dir /tmp/models]
"""
import argparse
import json
import os
import sys
from json_cases import dump_one_case_per_line

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "tests", "fixtures")

MODELS = {
    "gemma-3-270m": {
        "gguf": "gemma-3-270m-q4_k_m.gguf",
        "chat": ["<start_of_turn>user\nHi<end_of_turn>\n",
                 "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
                 "<bos><start_of_turn>user\nHello<end_of_turn>",
                 "text <eos> more <pad> and <unk> and <mask>",
                 "<start_of_image> <end_of_image>",
                 "<unused0><unused1>"],
    },
    "smollm2-135m-instruct": {
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "chat": ["<|im_start|>user\nHi<|im_end|>\n",
                 "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
                 "<|endoftext|>Hello<|im_end|>",
                 "text <|endoftext|> more <|im_start|>x",
                 "<repo_name>knowlens<file_sep>src/main.rs",
                 "<jupyter_start><jupyter_code>print(1)"],
    },
}


def base_strings():
    s = []
    # --- English & punctuation
    s += [
        "Hello world",
        "Hello, world!",
        "The quick brown fox jumps over the lazy dog.",
        "Michael Jordan plays the sport of",
        "What is the album of the song 'Gangnam Style'?",
        "It's a dog's life, isn't it?",
        "I can't believe it's not butter!",
        "He said: \"No way...\"",
        "Well—that's it; end of story.",
        "a",
        "A",
        "I",
        "ab",
        "Mr. Smith went to Washington D.C. in the U.S.A.",
        "e.g., i.e., etc.",
        "ALL CAPS SENTENCE HERE",
        "camelCaseIdentifier and snake_case_identifier and kebab-case-id",
        "supercalifragilisticexpialidocious",
        "antidisestablishmentarianism",
        "Pneumonoultramicroscopicsilicovolcanoconiosis",
        "???!!!...,,,;;;:::",
        "(parentheses) [brackets] {braces} <angles>",
        "@user #hashtag $100 50% a&b a*b ~tilde `backtick` ^caret |pipe \\backslash",
        "email@example.com",
        "path/to/some/file.txt",
        "C:\\Windows\\System32",
        "don't won't shouldn't y'all'd've",
        "'quoted' \"double\" `back`",
        "“smart quotes” and ‘single’ ones",
        "en–dash em—dash ellipsis…",
        "The cat sat on the mat. The dog sat on the log.",
        "To be, or not to be, that is the question:",
        "OK",
        "ok.",
        "...",
        "-",
        "--",
        "---",
        "___",
        "***bold***",
        "#",
        "# Heading\n\n## Subheading",
        "- item one\n- item two\n- item three",
        "1. first\n2. second",
        "> quoted line",
        "| a | b |\n|---|---|\n| 1 | 2 |",
    ]
    # --- digits & numbers
    s += [
        "0", "7", "42", "123", "1234", "12345", "123456789",
        "3.14159265358979323846",
        "1,000,000",
        "1.000.000,50",
        "2024-01-15",
        "12:34:56",
        "+1 (555) 123-4567",
        "0x1F 0b1010 0o777",
        "1e-10 6.022e23",
        "-273.15",
        "99.9%",
        "$1,234.56",
        "€5 £3 ¥100",
        "In 1969, 3 men flew 384400 km to the Moon.",
        "3 + 4 = 7",
        "2^10 = 1024",
        "98765432109876543210",
        "v1.2.3-beta+build.5",
        "IPv4 192.168.0.1",
        "room 101 and room 2048",
    ]
    # --- accents / European languages
    s += [
        "café",
        "Café crème",
        "naïve résumé façade",
        "Ångström",
        "Straße",
        "Über München",
        "El niño está aquí, ¿verdad?",
        "¡Hola!",
        "Ça va très bien, merci.",
        "Œuvre",
        "Dvořák",
        "Łódź",
        "São Paulo",
        "Ελληνικά γράμματα",
        "Привет, мир!",
        "Здравствуйте",
        "İstanbul ığdır",
        "e\u0301 (combining acute)",
        "A\u030A vs \u00C5",
        "ﬁ ligature",
        "ｆｕｌｌｗｉｄｔｈ",
    ]
    # --- CJK
    s += [
        "你好",
        "你好，世界！",
        "東京",
        "日本語のテキストです。",
        "ひらがな カタカナ",
        "한국어 텍스트",
        "안녕하세요",
        "中文和English混合",
        "北京是中国的首都。",
        "「括弧」と『二重括弧』",
        "㈱ ㍿",
        "漢字",
    ]
    # --- Arabic, Hebrew, Devanagari, Thai, others
    s += [
        "مرحبا بالعالم",
        "السلام عليكم",
        "العربية ١٢٣",
        "שלום עולם",
        "नमस्ते दुनिया",
        "हिन्दी भाषा",
        "क्षत्रिय",
        "สวัสดีครับ",
        "ሰላም",
        "Հայերեն",
        "ქართული",
        "தமிழ்",
        "বাংলা",
    ]
    # --- emoji
    s += [
        "😀",
        "😀😀😀",
        "I ❤️ NY",
        "👍🏽",
        "👨‍👩‍👧‍👦",
        "🏳️‍🌈",
        "👩🏻‍💻 coding",
        "🇫🇷🇯🇵",
        "✨ sparkle ✨",
        "🤖🧠",
        "☕️",
        "1️⃣ 2️⃣",
        "🧬",
    ]
    # --- code
    s += [
        "def add(a, b):\n    return a + b\n",
        "def f(x):\n    return",
        "import numpy as np\nx = np.zeros((3, 4), dtype=np.float32)",
        "for i in range(10):\n\tprint(i)",
        "if x == 1:\n        pass\n    else:\n        continue",
        "class Foo(Bar):\n    \"\"\"Docstring.\"\"\"\n",
        "lambda x: x ** 2",
        "fn main() {\n    println!(\"Hello, world!\");\n}",
        "let v: Vec<u32> = (0..10).collect();",
        "impl<'a, T: Clone + Send> Foo<'a, T> where T: Debug {}",
        "#[derive(Debug, Clone)]\npub struct Point { x: f32, y: f32 }",
        "match x { Some(v) => v, None => 0 }",
        "{\"key\": \"value\", \"n\": [1, 2, 3], \"ok\": true, \"none\": null}",
        "{\n  \"name\": \"knowlens\",\n  \"version\": \"0.1.0\"\n}",
        "<div class=\"main\"><p>Hello</p></div>",
        "<html><head><title>T</title></head><body></body></html>",
        "<br/> <img src=\"a.png\" alt=\"\"/>",
        "&amp; &lt; &gt; &quot; &#39; &nbsp;",
        "SELECT * FROM users WHERE id = 42;",
        "x += 1; y -= 2; z *= 3; w /= 4;",
        "a != b && c >= d || e <= f",
        "arr[i][j] = arr[i-1][j-1] + 1",
        "console.log(`template ${x}`);",
        "#include <stdio.h>\nint main(void) { return 0; }",
        "$ cargo test --release -- --nocapture",
        "git commit -m \"fix: tokenizer\"",
        "https://example.com/path?query=1&other=two#frag",
        "/* comment */ // line comment",
        "    indented four",
        "\tindented tab",
        "\t\tdouble tab",
        "x=1\ny=2\r\nz=3",
    ]
    # --- whitespace
    for n in range(2, 9):
        s.append("a" + " " * n + "b")
    for n in range(1, 9):
        s.append(" " * n)
    s += [
        " leading space",
        "  two leading spaces",
        "trailing space ",
        "trailing spaces   ",
        " both ",
        "\n",
        "\n\n",
        "\n\n\n",
        "\r\n",
        "\r\n\r\n",
        "\t",
        "\t\t",
        " \n ",
        "line1\nline2",
        "para1\n\npara2",
        "windows\r\nline",
        "tab\tseparated\tvalues",
        "mixed \t \n whitespace",
        "Hello  world.\nThe capital of  Italy is",
        "end with newline\n",
        "\nstart with newline",
        "multiple   spaces   between   words",
        "space before punctuation , . !",
        "\u00a0non-breaking\u00a0space",
        "zero\u200bwidth\u200bspace",
        "\u3000ideographic space",
        "\u2028line separator",
        "\v\f vertical tab form feed",
    ]
    # --- "entity names in quotes" / knowledge-probe style
    s += [
        "'The Godfather'",
        "\"Gangnam Style\"",
        "'Paris'",
        "\"Barack Obama\"",
        "the song 'Bohemian Rhapsody' by Queen",
        "'Michael Jordan' and \"LeBron James\"",
        "‘Le Monde’",
        "«Guillemets»",
        "„Anführungszeichen“",
        "The Eiffel Tower is located in the city of",
        "Q: Who wrote 'Hamlet'?\nA:",
    ]
    # --- bytes / chars likely not in the vocab
    s += [
        "\x00",
        "a\x00b",
        "\x07\x1b[0m",
        "\x7f",
        "\ue000\uf8ff",           # private use
        "\U0001F9EC\U0001FAE0",   # newer emoji
        "𓀀𓀁",                   # egyptian hieroglyphs
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",               # math fraktur
        "\U00020000\U0002A6D6",   # CJK ext B
        "ꙮ",
        "\ufeffBOM at start",
        "\ufffd replacement char",
        "ᚠᚢᚦᚨᚱᚲ",                # runes
        "⠓⠑⠇⠇⠕",                  # braille
        "∀x∈ℝ: x²≥0",
        "∑∫∂√∞≠≈",
        "←↑→↓↔",
        "½ ¼ ¾ ⅓",
        "™ © ®",
        "\u0300\u0301",           # bare combining marks
    ]
    # --- mixed / misc
    s += [
        "Mixed: English, 日本語, العربية, हिन्दी, 😀, 123.",
        "<s>not special</s>",
        "[INST] hello [/INST]",
        "<|endoftext|> literal in gemma",
        "<start_of_turn> literal in smollm",
        "<bos>",
        "<eos>",
        "<pad>",
        "<unk>",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<start_of_turn>",
        "<end_of_turn>",
        "▁underscore block char ▁▁",
        "Ġ Ċ byte-level lookalikes",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "abababababababababab",
        "          ten spaces then text",
        "\n\n\n\n\n\n\n\n",
        "!!!!!!!!!!!!!!!!",
        "The year 2025.",
        "COVID-19",
        "GPT-4o and Llama-3.1-8B",
        "H₂O and CO₂",
        "x̄ ŷ",
        "Tschüß!",
        "https://",
        "user@host:~$ ls -la",
        "\"\"\"",
        "''",
        "\"\"",
        "()",
        "[]",
        "{}",
        "<>",
        "a\nb\nc\nd",
        "The end.",
    ]
    return s


def build_cases(name, info, strings, default_add_bos):
    cases = []
    seen = set()

    def add(text, add_bos, special):
        key = (text, add_bos, special)
        if key in seen:
            return
        seen.add(key)
        cases.append({"text": text, "add_bos": add_bos, "parse_special": special})

    for t in strings:
        add(t, default_add_bos, False)
    # markup / special-token strings: both parse_special settings
    special_like = info["chat"] + [t for t in strings if "<" in t and ">" in t]
    for t in special_like:
        add(t, default_add_bos, True)
        add(t, default_add_bos, False)
    # a few cases with the non-default add_bos, and parse_special on plain text
    for t in ["Hello world", "café", "  two leading spaces", "def f(x):\n    return", "😀", "", " "]:
        add(t, not default_add_bos, False)
    for t in ["Hello world", "\n\n", "東京"]:
        add(t, default_add_bos, True)
    add("", default_add_bos, False)
    return cases




def render_chat(template, messages, add_generation_prompt, bos, eos):
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from jinja2.exceptions import TemplateError

    def raise_exception(msg):
        raise TemplateError(msg)

    # same environment options as transformers' apply_chat_template
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=bos, eos_token=eos)


CONVERSATIONS = [
    ([{"role": "user", "content": "Hi"}], False),
    ([{"role": "user", "content": "Hi"}], True),
    ([{"role": "system", "content": "You are a terse assistant."},
      {"role": "user", "content": "What is the capital of France?"},
      {"role": "assistant", "content": "Paris."},
      {"role": "user", "content": "And of Italy?"}], True),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", default=os.environ.get("KNOWLENS_MODELS_DIR", "/tmp/models"))
    ap.add_argument("--out", default=FIXTURES)
    ap.add_argument("--skip-hf", action="store_true", help="skip the transformers comparison")
    args = ap.parse_args()

    import gguf
    from llama_cpp import Llama
    import llama_cpp

    strings = base_strings()
    for name, info in MODELS.items():
        path = os.path.join(args.models_dir, info["gguf"])
        r = gguf.GGUFReader(path)
        f = r.fields
        default_add_bos = bool(f["tokenizer.ggml.add_bos_token"].contents()) if "tokenizer.ggml.add_bos_token" in f else False
        tokens = f["tokenizer.ggml.tokens"].contents()
        ttypes = f["tokenizer.ggml.token_type"].contents()
        # CONTROL tokens (type 3) + "</s>", which llama.cpp promotes to a control/EOG token
        control_texts = sorted({t for t, ty in zip(tokens, ttypes) if ty == 3} | {"</s>"} & set(tokens))
        bos_id = f["tokenizer.ggml.bos_token_id"].contents()
        eos_id = f["tokenizer.ggml.eos_token_id"].contents()
        template = f["tokenizer.chat_template"].contents() if "tokenizer.chat_template" in f else None
        del r

        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        cases = build_cases(name, info, strings, default_add_bos)
        for c in cases:
            c["ids"] = [int(x) for x in llm.tokenize(c["text"].encode("utf-8"), add_bos=c["add_bos"], special=c["parse_special"])]
            # round trip sanity: detokenize (no bos) must give the input bytes back for plain text
        n_plain = sum(1 for c in cases if not c["parse_special"])
        print(f"=== {name}: {len(cases)} cases ({n_plain} parse_special=false), default add_bos={default_add_bos}, "
              f"pre={f['tokenizer.ggml.pre'].contents() if 'tokenizer.ggml.pre' in f else None}")
        d = os.path.join(os.path.abspath(args.out), name)
        os.makedirs(d, exist_ok=True)
        out = {
            "model": name,
            "gguf_file": info["gguf"],
            "reference": f"llama-cpp-python {llama_cpp.__version__}: Llama(vocab_only=True).tokenize(text.encode('utf-8'), add_bos, special=parse_special)",
            "default_add_bos": default_add_bos,
            "note": "add_bos is llama.cpp's add_special flag: BOS is only prepended when it is true AND the GGUF's "
                    "tokenizer.ggml.add_bos_token is true (so for a model whose default_add_bos is false, add_bos=true adds nothing). "
                    "parse_special=false still matches USER_DEFINED tokens (token_type 4), only CONTROL tokens are "
                    "left as text; llama.cpp treats '</s>' as a control token.",
            "bos_id": int(bos_id),
            "eos_id": int(eos_id),
            "cases": cases,
        }
        p = os.path.join(d, "tokenizer_cases.json")
        with open(p, "w", encoding="utf-8") as fh:
            dump_one_case_per_line(out, "cases", fh)
        os.chmod(p, 0o644)
        print(f"  wrote {p} ({os.path.getsize(p)} bytes)")

        if template is not None:
            chat = []
            for msgs, agp in CONVERSATIONS:
                rendered = render_chat(template, msgs, agp, tokens[bos_id], tokens[eos_id])
                ids = [int(x) for x in llm.tokenize(rendered.encode("utf-8"), add_bos=default_add_bos, special=True)]
                chat.append({"messages": msgs, "add_generation_prompt": agp, "rendered": rendered, "ids": ids})
            p = os.path.join(d, "chat_cases.json")
            with open(p, "w", encoding="utf-8") as fh:
                dump_one_case_per_line({"model": name, "gguf_file": info["gguf"],
                                        "renderer": "jinja2 ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True); "
                                                    "ids = llama.cpp tokenize(rendered, add_bos=default_add_bos, special=True)",
                                        "template": template, "cases": chat}, "cases", fh)
            os.chmod(p, 0o644)
            print(f"  wrote {p} ({os.path.getsize(p)} bytes)")
        else:
            print("  no tokenizer.chat_template in GGUF -> no chat_cases.json")
        del llm

        if not args.skip_hf:
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(args.models_dir, gguf_file=info["gguf"])
            agree = {True: [0, 0], False: [0, 0]}
            comparable = [0, 0]
            mism = []
            for c in cases:
                # HF always parses special tokens and always honours add_bos; llama.cpp
                # only adds BOS when the GGUF says so. Count the comparable subset too.
                lit = (not c["parse_special"]) and any(ct in c["text"] for ct in control_texts)
                is_comparable = not lit and c["add_bos"] == default_add_bos
                enc = tok(c["text"], add_special_tokens=False)["input_ids"]
                if c["add_bos"]:
                    enc = [tok.bos_token_id] + enc
                ok = enc == c["ids"]
                agree[c["parse_special"]][0] += ok
                agree[c["parse_special"]][1] += 1
                if is_comparable:
                    comparable[0] += ok
                    comparable[1] += 1
                if not ok:
                    mism.append((c, enc))
            print(f"  transformers GGUF tokenizer vs llama.cpp: parse_special=false {agree[False][0]}/{agree[False][1]}, "
                  f"parse_special=true {agree[True][0]}/{agree[True][1]} identical; comparable subset (no control-token "
                  f"literals with parse_special=false, add_bos == GGUF default) {comparable[0]}/{comparable[1]}")
            for c, enc in mism[:40]:
                print(f"    MISMATCH {c['text']!r} special={c['parse_special']} bos={c['add_bos']}\n"
                      f"      llama.cpp: {c['ids'][:24]}\n      hf:        {enc[:24]}")


if __name__ == "__main__":
    main()
