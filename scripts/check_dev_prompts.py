"""Validate the hand-written text -> ImageNet-class dev set (tests/data/imagenet_dev_prompts.tsv).

    python scripts/check_dev_prompts.py [--tsv tests/data/imagenet_dev_prompts.tsv] [--wnids FILE] [--show]
                                        [--min-rows 230] [--min-classes 160] [--max-generic 0.2]

Checks: UTF-8; header ``prompt<TAB>target<TAB>note``; exactly three tab-separated fields per row; a non-empty
prompt; no duplicate prompt (case- and whitespace-insensitive); every target a comma-separated list of WordNet
noun ids (``n`` + 8 digits) that resolve in WordNet 3.0; each target either an ImageNet-1k class or a synset with
at least one ImageNet-1k class under it (a hypernym, accepted by the evaluator for any class whose hypernym
closure contains it); no id repeated within a row.

Prints the row count, the distinct ImageNet classes named directly (hypernym targets add none), the generic rows
(rows with at least one hypernym target) and their share. ``--show`` also lists every row with the first lemma
of each target, for proof-reading. Exit status 1 on any error or when a minimum is not met.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from modalbridge.errors import script_main
from modalbridge.t2i.wordnet import synset, wnid

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TSV = ROOT / "tests" / "data" / "imagenet_dev_prompts.tsv"
WNID_CANDIDATES = (ROOT / "src" / "modalbridge" / "data" / "imagenet1k_wnids.txt",
                   Path("/work/shared/data/imagenet1k_wnids.txt"))
HEADER = ["prompt", "target", "note"]
WNID_RE = re.compile(r"^n\d{8}$")


def load_wnids(path: Path | None) -> list[str]:
    for cand in ([path] if path else WNID_CANDIDATES):
        if cand and cand.is_file():
            wnids = [line.strip() for line in cand.read_text(encoding="utf-8").splitlines() if line.strip()]
            if len(wnids) != 1000 or len(set(wnids)) != 1000:
                sys.exit(f"{cand}: expected 1000 distinct wnids, found {len(wnids)}")
            return wnids
    sys.exit("ImageNet-1k wnid list not found (pass --wnids)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tsv", type=Path, default=DEFAULT_TSV)
    ap.add_argument("--wnids", type=Path, default=None)
    ap.add_argument("--show", action="store_true", help="list rows with target lemmas")
    ap.add_argument("--min-rows", type=int, default=230)
    ap.add_argument("--min-classes", type=int, default=160)
    ap.add_argument("--max-generic", type=float, default=0.2, help="largest allowed share of generic rows")
    args = ap.parse_args(argv)

    classes = load_wnids(args.wnids)
    class_set = set(classes)
    closure: dict[str, set[str]] = {}
    for c in classes:
        closure[c] = {wnid(h) for path in synset(c).hypernym_paths() for h in path}
    below: dict[str, int] = {}  # hypernym wnid -> number of ImageNet classes under it

    errors: list[str] = []
    if not args.tsv.is_file():
        sys.exit(f"prompt file not found: {args.tsv}")
    try:
        lines = args.tsv.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        print(f"{args.tsv}: not UTF-8 ({e})")
        return 1
    if not lines or lines[0].split("\t") != HEADER:
        errors.append(f"line 1: header must be {chr(9).join(HEADER)!r}")
    seen: dict[str, int] = {}
    rows = generic = 0
    direct: set[str] = set()
    listing: list[str] = []
    for no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            errors.append(f"line {no}: empty line")
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            errors.append(f"line {no}: expected 3 tab-separated fields, got {len(fields)}")
            continue
        prompt, target, note = fields
        rows += 1
        key = " ".join(prompt.lower().split())
        if not key:
            errors.append(f"line {no}: empty prompt")
        elif key in seen:
            errors.append(f"line {no}: duplicate prompt (first on line {seen[key]}): {prompt!r}")
        else:
            seen[key] = no
        if prompt != prompt.strip():
            errors.append(f"line {no}: prompt has leading/trailing whitespace")
        ids = target.split(",")
        if len(set(ids)) != len(ids):
            errors.append(f"line {no}: repeated target id in {target!r}")
        row_generic = False
        lemmas = []
        for t in ids:
            if not WNID_RE.match(t):
                errors.append(f"line {no}: bad target id {t!r}")
                continue
            try:
                syn = synset(t)
            except Exception as e:  # UserError for offsets that do not resolve
                errors.append(f"line {no}: {e}")
                continue
            if t in class_set:
                direct.add(t)
                lemmas.append(syn.lemma_names()[0])
            else:
                if t not in below:
                    below[t] = sum(t in closure[c] for c in classes)
                if below[t] == 0:
                    errors.append(f"line {no}: {t} ({syn.lemma_names()[0]}) is neither an ImageNet-1k class "
                                  "nor a hypernym of one")
                row_generic = True
                lemmas.append(f"<{syn.lemma_names()[0]}:{below[t]}>")
        generic += row_generic
        listing.append(f"{no:4d}  {prompt}  ->  {', '.join(lemmas)}  [{note}]")

    if args.show:
        print("\n".join(listing))
    share = generic / rows if rows else 0.0
    print(f"rows: {rows}")
    print(f"distinct ImageNet classes (direct targets): {len(direct)}")
    print(f"generic rows (hypernym targets): {generic} ({share:.1%})")
    if rows < args.min_rows:
        errors.append(f"only {rows} rows (< {args.min_rows})")
    if len(direct) < args.min_classes:
        errors.append(f"only {len(direct)} distinct classes (< {args.min_classes})")
    if share > args.max_generic:
        errors.append(f"generic share {share:.1%} > {args.max_generic:.0%}")
    for e in errors:
        print("ERROR:", e)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    script_main(main)
