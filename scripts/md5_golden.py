#!/usr/bin/env python3
"""Writes tests/data/md5_golden.txt: the MD5 partition of many keys, computed the Python way.

Each line is `<key as hex, or - when empty> <partition count> <partition>`, where partition is
Python's `int(hashlib.md5(key).hexdigest(), 16) % count`. The Rust unit test in
src/partitioner.rs checks Md5Partitioner::partition_for against every line.

Run from the repository root:  python3 scripts/md5_golden.py
"""
import hashlib
import pathlib

COUNTS = [1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 31, 64, 100, 1000, 65537,
          1_000_003, 2**24 + 1, 2**31 - 2, 2**31 - 1]


def keys():
    yield b""                                        # empty key (not the same as no key)
    for user in (1001, 1002, 1003, 42, 0, -1):
        yield str(user).encode()                     # the tutorial's key_serializer
    yield "用户-1001".encode("utf-8")                 # non-ASCII
    yield "ключ/κλειδί/مفتاح".encode("utf-8")
    yield bytes(range(256))                           # every byte value
    yield b"\x00"
    yield b"\xff" * 16
    yield hashlib.sha256(b"ten kilobytes").digest() * 320   # 10 KB of binary
    seed = b"kafka-kit"
    for n in range(24):                               # deterministic pseudo-random keys
        seed = hashlib.sha256(seed).digest()
        yield seed[: 1 + n * 3]


def main():
    lines = ["# key-hex partition-count python-md5-partition (written by scripts/md5_golden.py)"]
    for key in keys():
        digest = int(hashlib.md5(key).hexdigest(), 16)
        for count in COUNTS:
            lines.append(f"{key.hex() or '-'} {count} {digest % count}")
    out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / "md5_golden.txt"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines) - 1} vectors to {out}")


if __name__ == "__main__":
    main()
