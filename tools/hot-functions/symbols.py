#!/usr/bin/env python3
"""Turns the records of trace.c into the functions they executed, in first-execution order.

Usage: symbols.py BINARY [--previous OLD.gz] --section agent RECORD... --section server RECORD...

Each RECORD is a sequence of 8-byte file offsets of instructions where a process entered a
code page. The output names the function holding each (as `nm -C` prints v0 symbols: no build
hash, so the names survive recompiles; then a tab and the crate that instantiated it), each
once: by section (a line `#name` starts one), earlier records first, and within a record in the
order the functions were first entered; then what the previous order listed in that section.
"""
import argparse
import bisect
import gzip
import re
import struct
import subprocess
import sys


def load_segments(binary):
    segs = []
    for line in subprocess.run(["readelf", "-lW", binary], check=True,
                               capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if f and f[0] == "LOAD":
            segs.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))  # offset, vaddr, filesz
    return segs


def instantiating_crate(mangled):
    """The crate a v0 symbol names last ("..._RINv...Cs<hash>_5skiff"), as tools/link-cc finds it."""
    s = re.sub(r"\.llvm\.[0-9]+$", "", mangled)
    for n in range(1, min(64, len(s) - 1) + 1):
        pre, d = s[:-n], str(n)
        if pre.endswith(d) and re.search(r"Cs[0-9A-Za-z]*_$", pre[: -len(d)]):
            return s[-n:]
    return ""


def text_symbols(binary):
    def nm(*flags):
        return subprocess.run(["nm", "-p", "--defined-only", *flags, binary], check=True,
                              capture_output=True, text=True).stdout.splitlines()

    syms = []
    for m, d in zip(nm(), nm("-C")):
        mf, df = m.split(" ", 2), d.split(" ", 2)
        if len(mf) == 3 and mf[1] in "tTwW":
            syms.append((int(mf[0], 16), df[2] + "\t" + instantiating_crate(mf[2])))
    syms.sort()
    return [a for a, _ in syms], [k for _, k in syms]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--previous", help="an earlier order to keep what this run missed")
    ap.add_argument("--section", nargs="+", action="append", metavar=("NAME", "RECORD"),
                    required=True, help="a section of the order and the records it comes from")
    args = ap.parse_args()
    segs = load_segments(args.binary)
    starts, names = text_symbols(args.binary)
    previous = {}
    if args.previous:
        section = None
        for line in gzip.open(args.previous, "rt"):
            line = line.rstrip("\n")
            if line.startswith("#"):
                section = line[1:]
            else:
                previous.setdefault(section, []).append(line)
    seen = set()

    def emit(name):
        if name not in seen:
            seen.add(name)
            print(name)

    for section, *records in args.section:
        print("#" + section)
        for record in records:
            data = open(record, "rb").read()
            for (off,) in struct.iter_unpack("<Q", data):
                vaddr = next((v + off - o for o, v, sz in segs if o <= off < o + sz), None)
                i = bisect.bisect_right(starts, vaddr) - 1 if vaddr is not None else -1
                if i >= 0:
                    emit(names[i])
        # A function that shared a page with code run just before it can go unseen in one
        # layout and be seen in the next: keep what earlier profiles saw.
        for name in previous.get(section, []):
            emit(name)


if __name__ == "__main__":
    main()
