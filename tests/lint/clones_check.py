#!/usr/bin/env python3
"""clones_check.py - fails when a helper of model/kernels.c's cloned
kernels is compiled out of line.

usage: clones_check.py LIBMODEL.a

kernels.c builds its kernels twice (target_clones: x86-64-v3 and the
baseline). A static helper the compiler keeps out of line is compiled once,
for the baseline, and the v3 clone then calls SSE2 code without FMA:
kn_attention_row did, and the decoder's attention ran at less than half
speed. So in a build with clones every local function of kernels.c's
object must be a clone (.arch_x86_64_v3, .default or .resolver). A build
without clones (clang, sanitizers, not x86) has nothing to check.
"""
import subprocess
import sys

CLONE_SUFFIXES = (".arch_x86_64_v3", ".default", ".resolver")


def local_functions(archive):
    out = subprocess.run(["nm", "-A", "--defined-only", archive], check=True,
                         capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():  # ARCHIVE:MEMBER:ADDRESS TYPE NAME
        fields = line.split()
        if len(fields) == 3 and fields[1] == "t" and "/kernels.c.o:" in "/" + fields[0]:
            names.append(fields[2])
    return names


def main():
    names = local_functions(sys.argv[1])
    if not any(n.endswith(".arch_x86_64_v3") for n in names):
        print("no clones in this build: nothing to check")
        return 0
    stray = [n for n in names if not n.endswith(CLONE_SUFFIXES)]
    for n in stray:
        print("kernels.c: %s is out of line, compiled for the baseline ISA only "
              "(make it KN_INLINE)" % n)
    if not stray:
        print("every local function of kernels.c is a clone (%d)" % len(names))
    return 1 if stray else 0


if __name__ == "__main__":
    sys.exit(main())
