"""A multi-threaded CPython workload for the preload tests: four threads
build dicts, lists, strings and tuples, free most of them, and hand some to
other threads; prints a checksum that must not depend on the allocator."""
import hashlib
import sys
import threading

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
results = [None] * 4
shared = []
lock = threading.Lock()


def work(tid):
    h = hashlib.sha256()
    table = {}
    for i in range(N):
        key = f"k{tid}-{i % 5000}"
        row = table.setdefault(key, [])
        row.append((i, str(i * tid), [i] * (i % 7)))
        if len(row) > 8:
            del row[:4]
        if i % 1000 == 0:
            blob = bytearray(i % 300_000 + 1)
            blob[-1] = tid
            with lock:
                shared.append(blob)
                if len(shared) > 16:
                    shared.pop(0)
    for key in sorted(table):
        h.update(key.encode())
        h.update(repr(table[key]).encode())
    text = " ".join(str(x) for x in range(N // 10)).split()
    h.update(str(sum(map(int, text))).encode())
    results[tid] = h.hexdigest()


threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(hashlib.sha256("".join(results).encode()).hexdigest())
