"""How Python's `re` matches PEFT's patterns against module paths, for tests/patterns.rs.

PEFT matches a string `target_modules` or `exclude_modules` with `re.fullmatch(pattern, path)`
and a key of `rank_pattern` or `alpha_pattern` with `re.match(rf"(.*\\.)?({key})$", path)`
(peft/utils/other.py); with `layers_to_transform`, a name of `layers_pattern` finds a layer's
index by `re.match(rf"(?:^|.*?\\.){name}\\.(?P<idx>\\d+)\\.", path)`, which must leave `idx` set
(peft/tuners/tuners_utils.py, PEFT 0.18 on). The patterns below use what Python's syntax has and Rust's regex
syntax reads otherwise or not at all: look-around, backreferences, `{,n}`, `\\Z`, comments,
atomic groups, and characters in classes that Rust reads as set operations.

Output: tests/fixtures/patterns.json, a list of {"pattern", "use": "whole" | "tail" | "layer",
"matches": [paths that match]} over "paths", every module path of a 2-layer ViT under both
namings (and some of their containers).
"""

import json
import os
import re
import warnings

# Python warns that `&&`, `~~`, `--` and `[` in a class may one day be set operations; today
# they are characters, which is what PEFT gets.
warnings.simplefilter("ignore", FutureWarning)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "patterns.json")


def paths():
    out = ["vit.embeddings.patch_embeddings.projection", "classifier", "vit.encoder", "vit.layers"]
    for i in range(2):
        old = f"vit.encoder.layer.{i}"
        out += [old, f"{old}.attention", f"{old}.attention.attention", f"{old}.attention.output"]
        out += [f"{old}.attention.attention.{p}" for p in ("query", "key", "value")]
        out += [f"{old}.attention.output.dense", f"{old}.intermediate.dense", f"{old}.output.dense"]
        new = f"vit.layers.{i}"
        out += [new, f"{new}.attention", f"{new}.mlp"]
        out += [f"{new}.attention.{p}_proj" for p in ("q", "k", "v", "o")]
        out += [f"{new}.mlp.fc1", f"{new}.mlp.fc2"]
    return out


WHOLE = [
    r"^(?!.*classifier).*(query|value)$",
    r".*(?<!layer\.0)\.attention\.attention\.(query|key)",
    r"(?=.*layers\.1).*_proj",
    r".*(?<=\.)[qv]_proj",
    r".*[q&&v]_proj",
    r".*[qv&]_proj",
    r".*\.[a-z]+[~-]*_proj",
    r".*fc[+--2]",
    r".*[[]",
    r"vit\.layers\.\d{,1}\.mlp\.fc[12]",
    r".*query\Z",
    r"(?#every fc1).*fc1",
    r"(?i).*QUERY",
    r"vit\.(?P<kind>layers)\.\d\.(?P=kind)?.*fc2",
    r".*\.(\d)\..*fc\1",
    r"vit\.(encoder)\.layer\.\d\.attention\.(attention|output)\.(?:query|dense)",
    r"(?>.*)_proj",
    r".*v_proj|.*q_proj",
    r"vit\.layers\.[01]\.attention\.[^kq]_proj",
    r"a{b",
    r".*(?=\.)?query",
    r"(?!.*fc1)(?!.*fc2){2,}vit\.layers.*",
    r"[^]-h]+",
    r".*[a-z--x]",
    r"classifier\>",
    r".*\056query",
    "(?x) vit\\.layers  # a comment with a [\n .*",
    r"(?a).*\w_proj",
    r"(?P<v>vit\.)?(?(v)layers\.1.*|classifier)",
    r"(?=(x))?(vit)\.(?:layers|\2)\..*\.fc1",
]

TAIL = [
    r"query",
    r"q_proj|v_proj",
    r"(?<=1\.)attention\.attention\.value",
    r"layers\.1\..*",
    r"fc[12]",
    r"\w+_proj",
    r"(?!fc1)fc\d",
    r"[+--]",
    r"(proj)",
    r"attention\.(\w)_proj",
    # PEFT's own two groups come first: the key's group is the third.
    r"layers\.(\d)\.mlp\.fc\3",
    r"(?#[)[ab].*",
    r"(?(2)mlp\.fc1|attention\.q_proj)",
    # A key that closes PEFT's group and opens another: two alternatives, the first matched
    # from the start only.
    r"fc1)|(classifier",
]


LAYER = [
    r"layer",
    r"layers",
    r"vit.layers",
    r"encoder\.layer",
    r"layers?",
    r"(?:vit\.)?layers",
    r"l.yer",
    r".*",
    r"blocks",
    # The name's alternatives split PEFT's whole expression: the first matches without an index.
    r"layer|layers",
    r"(layer)s?",
]


def layer_index(name, path):
    m = re.match(rf"(?:^|.*?\.){name}\.(?P<idx>\d+)\.", path)
    return m is not None and m.group("idx") is not None


def main():
    all_paths = paths()
    cases = []
    for use, patterns, match in (
        ("whole", WHOLE, lambda p, s: re.fullmatch(p, s)),
        ("tail", TAIL, lambda p, s: re.match(rf"(.*\.)?({p})$", s)),
        ("layer", LAYER, layer_index),
    ):
        for p in patterns:
            cases.append({"pattern": p, "use": use, "matches": [s for s in all_paths if match(p, s)]})
    with open(OUT, "w") as f:
        json.dump({"paths": all_paths, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
