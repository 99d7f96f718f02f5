#!/usr/bin/python3
"""make-bundle.py DIR [--bytes N] [--steps S] [--batch B] [--llama 1] [--layers L]
[--embd C] [--heads H] — writes a tiny GPT-2 (or Llama)
bundle for the trainer tests: config.json, bursar.json and data/ holding a
deterministic English-like corpus generated from a small grammar (seeded, so
every run writes the same bytes). Not a test itself."""
import json, os, random, sys

def corpus(nbytes, seed=7):
    rng = random.Random(seed)
    subj = ["the cat", "a dog", "my friend", "the old man", "our teacher", "the bird",
            "a small child", "the farmer", "her brother", "the captain"]
    verb = ["sees", "likes", "finds", "carries", "watches", "follows", "helps", "paints"]
    obj = ["the red ball", "a green tree", "the long road", "an open door", "the river",
           "a quiet house", "the morning sun", "a wooden boat"]
    tail = ["every day", "in the garden", "near the sea", "after dinner", "with great care",
            "before the rain", ""]
    out, n = [], 0
    while n < nbytes:
        s = f"{rng.choice(subj)} {rng.choice(verb)} {rng.choice(obj)} {rng.choice(tail)}".strip()
        s = s[0].upper() + s[1:] + ". "
        out.append(s)
        n += len(s)
    return "".join(out)

def main():
    d = sys.argv[1]
    args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
    os.makedirs(os.path.join(d, "data"), exist_ok=True)
    cfg = {"model_type": "gpt2", "n_layer": int(args.get("--layers", 2)),
           "n_head": int(args.get("--heads", 4)),
           "n_embd": int(args.get("--embd", 64)), "n_positions": 64, "vocab_size": 256,
           "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}
    if args.get("--llama"):
        cfg = {"model_type": "llama", "num_hidden_layers": int(args.get("--layers", 2)),
               "num_attention_heads": 4, "num_key_value_heads": 2,
               "hidden_size": int(args.get("--embd", 64)), "intermediate_size": 96,
               "max_position_embeddings": 64, "vocab_size": 257, "rms_norm_eps": 1e-5,
               "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False}
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    bj = {"steps": int(args.get("--steps", 60)), "batch": int(args.get("--batch", 8)),
          "seq_len": int(args.get("--seq", 64)), "lr": float(args.get("--lr", 3e-3)),
          "warmup": 5, "schedule": "cosine", "seed": 42, "weight_decay": 0.01}
    json.dump(bj, open(os.path.join(d, "bursar.json"), "w"))
    text = corpus(int(args.get("--bytes", 60000)))
    half = len(text) // 2
    open(os.path.join(d, "data", "a.txt"), "w").write(text[:half])
    with open(os.path.join(d, "data", "b.jsonl"), "w") as f:
        rest = text[half:]
        for i in range(0, len(rest), 2000):
            f.write(json.dumps({"text": rest[i:i + 2000]}) + "\n")

main()
