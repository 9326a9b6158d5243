#!/usr/bin/env python3
"""Checks that imports point down the layers of ci/layers.txt.

Every `crate::`/`super::` path in a crate's source (use trees and inline
paths, comments ignored), and every `use` of a child module declared with
`mod child;`, becomes an edge from its file to the file of the module it
names (`macro_rules!` names resolve to the file defining them; inside an
inline `mod tests`, `super::` names the file itself).
The check fails when a file imports a file of a higher layer, when a file
belongs to no layer, or when the files' import graph has a circle.
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def read_layers():
    """{crate dir: [(layer name, [glob, ...]), ...]} in bottom-up order."""
    layers = {}
    for line in (ROOT / "ci" / "layers.txt").read_text().splitlines():
        line = line.split("#", 1)[0].split()
        if line:
            crate, name, *globs = line
            layers.setdefault(crate, []).append((name, globs))
    return layers


def module_of(src, path):
    """`core/heap.rs` -> ("core", "heap"); `lib.rs` -> ()."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "mod"):
        parts.pop()
    return tuple(parts)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand_use_tree(tree):
    """`a::{b, c::{d, self}}` -> ["a::b", "a::c::d", "a::c"]."""
    tree = tree.replace(" ", "").replace("\n", "")
    depth, start, items = 0, 0, []
    brace = tree.find("{")
    if brace < 0:
        return [re.sub(r"::self$", "", tree.split(" as ")[0])]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    for i, ch in enumerate(inner + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            if inner[start:i]:
                items.append(inner[start:i])
            start = i + 1
    out = []
    for item in items:
        for path in expand_use_tree(item):
            out.append(prefix[:-2] if path == "self" else prefix + path)
    return out


def paths_in(text, module):
    """Absolute paths named by `crate::`/`super::` paths, each with the
    module a `super::` path starts from (None for `crate::`)."""
    source = text
    found, file_level = [], []
    for indent, tree in re.findall(r"(?m)^([ \t]*)(?:pub(?:\([^)]*\))?\s+)?use\s+((?:crate|super)::[^;]*);", text):
        for path in expand_use_tree(tree):
            (found if indent else file_level).append(path)
    text = re.sub(r"\buse\s+[^;]*;", "", text)
    found.extend(re.findall(rf"\b(?:crate|super)(?:::{IDENT})+", text))
    absolute = []
    for path in found:
        parts = path.split("::")
        if parts[0] == "crate":
            absolute.append((tuple(parts[1:]), None))
        else:
            base = list(module[:-1])
            while parts and parts[0] == "super":
                parts.pop(0)
                base = base[:-1] if parts and parts[0] == "super" else base
            # `super::item` inside an inline `mod tests` names the file itself
            absolute.append((tuple(base + parts), tuple(base)))
    # `use self::child::...` and `use child::...` of a `mod child;` declared
    # here name the child's file.
    children = set(re.findall(rf"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+({IDENT})\s*;", source))
    for tree in re.findall(rf"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?use\s+((?:self::)?{IDENT}::[^;]*);", source):
        for path in expand_use_tree(tree):
            parts = path.split("::")
            if parts[0] == "self":
                parts.pop(0)
            if parts[0] in children:
                absolute.append((tuple(module) + tuple(parts), None))
    # A file's own `use super::...` (not indented: not in an inline module)
    # names its parent module's file.
    for path in file_level:
        parts = path.split("::")
        base = list(module[:-1]) if parts[0] == "super" else []
        while parts and parts[0] in ("super", "crate"):
            if parts.pop(0) == "super" and parts and parts[0] == "super":
                base = base[:-1]
        absolute.append((tuple(base + parts), None))
    return absolute


def check_crate(crate, layers):
    src = ROOT / crate
    files = sorted(src.rglob("*.rs"))
    modules = {module_of(src, f): f for f in files}
    texts = {f: strip_comments(f.read_text()) for f in files}
    macros = {
        name: f for f, text in texts.items() for name in re.findall(rf"macro_rules!\s*({IDENT})", text)
    }
    layer_of, errors = {}, []
    for f in files:
        rel = f.relative_to(src)
        for rank, (name, globs) in enumerate(layers):
            if any(rel.match(g) for g in globs):
                layer_of[f] = (rank, name)
                break
        else:
            errors.append(f"{crate}/{rel}: in no layer of ci/layers.txt")
    edges = {f: set() for f in files}
    for f in files:
        for path, super_base in paths_in(texts[f], module_of(src, f)):
            if len(path) == 1 and path[0] in macros:
                target = macros[path[0]]
            else:
                n = max(n for n in range(len(path) + 1) if path[:n] in modules)
                if path[:n] == super_base:
                    continue
                target = modules[path[:n]]
            if target != f:
                edges[f].add(target)
    for f, targets in edges.items():
        for t in sorted(targets):
            if f in layer_of and t in layer_of and layer_of[t][0] > layer_of[f][0]:
                errors.append(
                    f"{crate}/{f.relative_to(src)} ({layer_of[f][1]}) imports "
                    f"{t.relative_to(src)} ({layer_of[t][1]}), a higher layer"
                )
    errors.extend(find_circle(crate, src, edges))
    return errors


def find_circle(crate, src, edges):
    state, stack = {}, []

    def visit(f):
        state[f] = "open"
        stack.append(f)
        for t in sorted(edges[f]):
            if state.get(t) == "open":
                circle = stack[stack.index(t) :] + [t]
                return " -> ".join(str(c.relative_to(src)) for c in circle)
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[f] = "done"
        return None

    for f in sorted(edges):
        if f not in state:
            circle = visit(f)
            if circle:
                return [f"{crate}: import circle {circle}"]
    return []


def main():
    errors = []
    for crate, layers in read_layers().items():
        errors.extend(check_crate(crate, layers))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        sys.exit(1)
    print("imports point down the layers of ci/layers.txt; no circles")


if __name__ == "__main__":
    main()
