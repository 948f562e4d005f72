#!/usr/bin/env python3
"""Study the per-track decision rule offline on `edge eval door --dump DIR` output: for each threshold / margin /
confirmations, pass recall per condition and false identities (strangers named, enrolled people named as someone
else), replaying each walk's embeddings in order through a fused template (the plain normalised mean: the daemon
weights by quality, so the daemon's own run is the final word). Prints the rules with zero false identities, best
recall first, then the closest rules that had some. Pure numpy; no model is run.

    .venv/bin/edge eval door --dump /tmp/door ...      # the benchmark, keeping each walk's embeddings
    .venv/bin/python scripts/door_rules.py /tmp/door    # the table
"""

from __future__ import annotations

import argparse
import glob
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

Walk = Dict[str, Any]
Step = Tuple[float, float, int]
"""(best person's score, runner-up's score, best person's index) after each embedding."""


def load(folder: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray, List[Walk]]:
    """(people, row starts, gallery rows sorted by person, walks)."""
    gallery = np.load(f"{folder}/gallery.npz", allow_pickle=True)
    order = np.argsort(gallery["ids"], kind="stable")
    ids, vectors = gallery["ids"][order], gallery["vectors"][order]
    people, starts = np.unique(ids, return_index=True)
    walks: List[Walk] = []
    for path in sorted(glob.glob(f"{folder}/day*.npz")):
        day = np.load(path, allow_pickle=True)
        for k, meta in enumerate(day["meta"]):
            mine = day["owner"] == k
            walks.append({"person_id": str(meta[1]), "enrolled": bool(int(meta[2])), "condition": str(meta[3]),
                          "vectors": day["vectors"][mine]})  # fmt: skip
    return people, starts, vectors, walks


def steps(walk: Walk, starts: np.ndarray, vectors: np.ndarray) -> List[Step]:
    out: List[Step] = []
    total = None
    for v in walk["vectors"]:
        unit = v / max(float(np.linalg.norm(v)), 1e-9)
        total = unit if total is None else total + unit
        scores = np.maximum.reduceat(vectors @ (total / np.linalg.norm(total)), starts)
        best = int(np.argmax(scores))
        second = float(np.partition(scores, -2)[-2]) if len(scores) > 1 else 0.0
        out.append((float(scores[best]), second, best))
    return out


def decide(walk_steps: List[Step], people: np.ndarray, threshold: float, margin: float, confirmations: int,
           min_votes: int = 2) -> Optional[str]:  # fmt: skip
    """The tracker's rule: the template names the same person on `confirmations` embeddings in a row."""
    streak, last = 0, None
    for k, (best, second, index) in enumerate(walk_steps):
        name = str(people[index]) if best >= threshold and best - second >= margin else None
        streak = streak + 1 if name is not None and name == last else (1 if name is not None else 0)
        last = name
        if name is not None and streak >= confirmations and k + 1 >= min_votes:
            return name
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the --dump folder of edge eval door")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    people, starts, vectors, walks = load(args.folder)
    all_steps = [steps(w, starts, vectors) for w in walks]
    rows = []
    for threshold in np.arange(0.44, 0.601, 0.01):
        for margin in (0.05, 0.08, 0.10, 0.12):
            for confirmations in (1, 2, 3):
                hits, named_strangers, named_others, per = 0, 0, 0, {}
                for walk, walk_steps in zip(walks, all_steps):
                    name = decide(walk_steps, people, float(threshold), margin, confirmations)
                    if walk["enrolled"]:
                        cell = per.setdefault(walk["condition"], [0, 0])
                        cell[0] += 1
                        cell[1] += name == walk["person_id"]
                        hits += name == walk["person_id"]
                        named_others += name not in (None, walk["person_id"])
                    else:
                        named_strangers += name is not None
                enrolled = sum(1 for w in walks if w["enrolled"])
                recall = {c: round(v[1] / v[0], 3) for c, v in sorted(per.items())}
                rows.append((named_strangers + named_others, -hits / max(enrolled, 1), round(float(threshold), 2),
                             margin, confirmations, named_strangers, named_others, recall))  # fmt: skip
    strangers = sum(1 for w in walks if not w["enrolled"])
    print(f"{len(walks) - strangers} enrolled passes, {strangers} stranger passes, {len(people)} gallery people")
    print("false ids  recall  threshold margin confirmations  (strangers named, others named)  recall per condition")
    rows.sort(key=lambda r: (r[0] > 0, r[1]))
    for row in rows[: args.top] + [r for r in rows if r[0] > 0][:3]:
        print(f"{row[0]:>9} {-row[1]:7.3f} {row[2]:10.2f} {row[3]:6.2f} {row[4]:13d}  ({row[5]}, {row[6]})  {row[7]}")


if __name__ == "__main__":
    main()
