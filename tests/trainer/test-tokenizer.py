#!/usr/bin/python3
"""test-tokenizer — bursar-train's byte-level BPE against a Python reference.

Trains a few dozen merges on a generated corpus (with Python's own
pre-tokenisation: the GPT-2 and Llama-3 patterns written for the `re`
module), writes them as GPT-2-style and Llama-3-style tokenizer.json files,
and checks that `bursar-train --encode` gives the reference's ids on edge
cases: contractions, runs of spaces, digits, punctuation, newlines,
non-ASCII letters. Then trains a bundle that has a tokenizer.json, and
checks a vocab_size that does not cover the tokenizer is refused."""
import json, os, random, re, shutil, subprocess, sys, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TRAIN = os.path.join(ROOT, os.environ.get("BUILD", "build"), "bin", "bursar-train")

# \p{L} = [^\W\d_], \p{N} = \d, [^\s\p{L}\p{N}] = (?:[^\s\w]|_)
PAT = {
    "gpt2": re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"),
    "llama3": re.compile(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|(?:[^\r\n\w]|_)?[^\W\d_]+|\d{1,3}"
                         r"| ?(?:[^\s\w]|_)+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
}
HF_PAT = {
    "gpt2": r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

def bytes_to_unicode():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))

B2U = bytes_to_unicode()

def mapped(piece):
    return "".join(B2U[b] for b in piece.encode("utf-8"))

def corpus(seed=3):
    rng = random.Random(seed)
    words = ["the", "cat", "dog", "running", "thing", "café", "naïve", "über", "straße",
             "αβγ", "дом", "中文", "hello", "world", "token", "bursar"]
    out = []
    for _ in range(1500):
        w = rng.choice(words)
        r = rng.random()
        if r < 0.1:
            w += rng.choice(["'s", "'t", "'re", "'ll", "'d", "'ve", "'m"])
        elif r < 0.2:
            w = str(rng.randrange(0, 100000))
        elif r < 0.27:
            w += rng.choice(["!", "?!", "...", ",", ";", "\n", "\n\n", "  "])
        out.append(w)
    return " ".join(out)

def train(kind, n_merges=60):
    words = {}
    for p in PAT[kind].findall(corpus()):
        words[tuple(mapped(p))] = words.get(tuple(mapped(p)), 0) + 1
    vocab = {B2U[b]: i for i, b in enumerate(sorted(B2U))}
    merges = []
    for _ in range(n_merges):
        pairs = {}
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        vocab.setdefault(best[0] + best[1], len(vocab))
        nw = {}
        for w, c in words.items():
            o, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    o.append(w[i] + w[i + 1])
                    i += 2
                else:
                    o.append(w[i])
                    i += 1
            nw[tuple(o)] = nw.get(tuple(o), 0) + c
        words = nw
    return vocab, merges

def tokenizer_json(kind, vocab, merges):
    eos = "<|endoftext|>" if kind == "gpt2" else "<|end_of_text|>"
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if kind == "gpt2":
        pre = bl
        ms = ["%s %s" % m for m in merges]
    else:
        pre = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": HF_PAT["llama3"]}, "behavior": "Isolated",
             "invert": False}, dict(bl, use_regex=False)]}
        ms = [list(m) for m in merges]
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": len(vocab), "content": eos, "special": True}],
            "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "dropout": None, "unk_token": None,
                      "ignore_merges": kind == "llama3", "vocab": vocab, "merges": ms}}

def encode(kind, vocab, merges, text):
    rank = {m: i for i, m in enumerate(merges)}
    ids = []
    for p in PAT[kind].findall(text):
        w = list(mapped(p))
        if kind == "llama3" and "".join(w) in vocab:
            ids.append(vocab["".join(w)])
            continue
        while len(w) > 1:
            cand = [(rank.get((a, b), 1 << 30), a, b) for a, b in zip(w, w[1:])]
            r, a, b = min(cand)
            if r == 1 << 30:
                break
            o, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    o.append(a + b)
                    i += 2
                else:
                    o.append(w[i])
                    i += 1
            w = o
        ids += [vocab[s] for s in w]
    return ids

CASES = [
    "I'm he's they're we've I'll he'd don't it'S THEY'RE 'tis o'clock",
    "a  b   c    d\t\te  ",
    "   leading and trailing   ",
    "12345 1234567 3.14159 x2 42nd 1,000,000",
    "hello!!! what?! (yes) [no] {maybe} a_b __init__ ... --- @@",
    "line1\nline2\r\n\nline3 \n \n  x\n",
    "café naïve über straße αβγ дом 中文字 Ωmega ÉCOLE",
    "the cat's dog ran; the dog's cat ran.\n\n\tindented\ttext",
    "'s 'S 're 'RE 've 'M 'll 'D ''s",
    " !x ?y .z 9a a9 é9 9é",
    "",
]

def main():
    tmp = tempfile.mkdtemp(prefix="test-tokenizer-")
    fails = 0
    def check(name, ok, why=""):
        nonlocal fails
        print(("PASS %s" % name) if ok else ("FAIL %s: %s" % (name, why)))
        fails += 0 if ok else 1
    try:
        if not os.access(TRAIN, os.X_OK):
            check("build", False, "%s is missing (run make)" % TRAIN)
            return 1
        for kind in ("gpt2", "llama3"):
            vocab, merges = train(kind)
            path = os.path.join(tmp, kind + ".json")
            json.dump(tokenizer_json(kind, vocab, merges), open(path, "w"))
            bad = []
            for text in CASES + [corpus(11)[:3000]]:
                want = encode(kind, vocab, merges, text)
                got = subprocess.run([TRAIN, "--encode", path], input=text.encode(),
                                     capture_output=True).stdout.split()
                if [int(x) for x in got] != want:
                    bad.append("%r: got %s, want %s" % (text[:60], got[:20], want[:20]))
            check("%s_matches_reference (%d merges, %d cases)" % (kind, len(merges),
                  len(CASES) + 1), not bad, "; ".join(bad[:3]))

        # a bundle with a tokenizer trains; too small a vocab_size is refused
        b = os.path.join(tmp, "b")
        subprocess.run([sys.executable, os.path.join(ROOT, "tests/trainer/make-bundle.py"), b,
                        "--steps", "3", "--seq", "32"], check=True)
        vocab, merges = train("gpt2")
        json.dump(tokenizer_json("gpt2", vocab, merges), open(b + "/tokenizer.json", "w"))
        cfg = json.load(open(b + "/config.json"))
        cfg["vocab_size"] = len(vocab) + 1
        json.dump(cfg, open(b + "/config.json", "w"))
        p = subprocess.run([TRAIN, b], capture_output=True, text=True)
        steps = [json.loads(l) for l in p.stdout.splitlines() if '"step"' in l]
        check("bundle_with_tokenizer_trains", p.returncode == 0 and len(steps) == 3,
              "status %d: %s" % (p.returncode, p.stderr[-300:]))
        cfg["vocab_size"] = len(vocab)
        json.dump(cfg, open(b + "/config.json", "w"))
        p = subprocess.run([TRAIN, b], capture_output=True, text=True)
        check("vocab_size_must_cover_tokenizer", p.returncode == 2 and "vocab_size" in p.stderr,
              "status %d: %s" % (p.returncode, p.stderr[-300:]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if fails else 0

if __name__ == "__main__":
    sys.exit(main())
