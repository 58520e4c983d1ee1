#!/usr/bin/env python3
"""Finds import cycles among a Rust crate's modules, from the paths its code names.

Usage: module_cycles.py SRC_DIR

Every `.rs` file under SRC_DIR is a module (`a/b.rs` is `a::b`; `lib.rs`, `main.rs` and the
`cli/` binary's files are left out). An edge A -> B is any `crate::…` or `super::…` path in A's
non-test code (before its first `#[cfg(test)]`, comments skipped) that names B or an item in it.
A module naming its own ancestor is not an edge (a child module reads its parent's items by
design); a parent's `mod child;` is not read as one either. Cycles are the strongly connected
components with more than one module (Tarjan). Exit status 1 when there is one, each printed
with the edges inside it.
"""

import collections
import os
import re
import sys


def modules(src):
    found = {}
    for directory, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(directory, f), src)[:-3]
            if rel in ("lib", "main") or rel.startswith("cli/") or rel == "cli":
                continue
            found[tuple(rel.split("/"))] = os.path.join(directory, f)
    return found


def code(path):
    text = open(path, encoding="utf-8").read()
    cut = text.find("#[cfg(test)]")
    if cut >= 0:
        text = text[:cut]
    return "\n".join(l for l in text.split("\n") if not l.lstrip().startswith("//"))


def edges(found):
    def resolve(path):
        for k in range(len(path), 0, -1):
            if tuple(path[:k]) in found:
                return tuple(path[:k])
        return None

    out = collections.defaultdict(set)
    for mod, path in found.items():
        src = code(path)
        named = []
        for m in re.finditer(r"\b(crate|super)((?:::\w+)+)", src):
            base = [] if m.group(1) == "crate" else list(mod[:-1])
            named.append(base + m.group(2).strip(":").split("::"))
        for m in re.finditer(r"use (crate|super)::\{([^}]*)\}", src, re.S):
            base = [] if m.group(1) == "crate" else list(mod[:-1])
            for name in re.findall(r"(?:^|[,\s{])(\w+)", m.group(2)):
                named.append(base + [name])
        for path_ in named:
            target = resolve(path_)
            ancestor = target is not None and len(target) < len(mod) and mod[: len(target)] == target
            if target and target != mod and not ancestor:
                out[mod].add(target)
    return out


def cycles(found, graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(100000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in sorted(found):
        if v not in index:
            visit(v)
    return [c for c in comps if len(c) > 1]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    found = modules(sys.argv[1])
    graph = edges(found)
    bad = cycles(found, graph)
    print(f"{len(found)} modules, {sum(len(e) for e in graph.values())} edges, {len(bad)} cycles")
    for comp in bad:
        members = set(comp)
        print("cycle: " + ", ".join(sorted("::".join(m) for m in comp)))
        for a in sorted(members):
            for b in sorted(graph[a] & members):
                print(f"  {'::'.join(a)} -> {'::'.join(b)}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
