"""Writes N deterministic text files into DIR/part0..part3 for the git test."""
import os
import random
import sys

root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(8)
words = ["arena", "pool", "block", "class", "heap", "free", "thread", "page", "large", "3"]
for i in range(n):
    d = os.path.join(root, f"part{i % 4}")
    os.makedirs(d, exist_ok=True)
    lines = (" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(5, 400)))
    with open(os.path.join(d, f"file{i:04}.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
