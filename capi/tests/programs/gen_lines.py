"""Prints N deterministic lines "word,number,payload" for the sort test."""
import random
import sys

n = int(sys.argv[1])
rng = random.Random(42)
out = sys.stdout
chunk = []
for i in range(n):
    chunk.append(f"{rng.getrandbits(40):x},{rng.randint(0, 10**6)},{'x' * rng.randint(0, 30)}\n")
    if len(chunk) == 10000:
        out.write("".join(chunk))
        chunk.clear()
out.write("".join(chunk))
