#!/usr/bin/env python3
"""Does test-time flip augmentation raise SFace's still-photo identification ceiling? (a study, not a benchmark)

    .venv/bin/python scripts/study_flip.py [--data ../shared/data] [--cache /tmp/flipstudy] [--seeds 20]
                                           [--timing 300] [--json OUT]

Embeddings (cached in --cache as one .npz per model file, so reruns take seconds): every image of LFW View 1
(lfw-deepfunneled) through edge's own pieces, one thread each: edge.detect.FaceDetector (default DetectorConfig)
-> the face nearest the centre (edge.evaluate.central_face; the canonical LFW box when none is found, counted)
-> edge.align.align -> edge.quality.assess (recorded, not applied: this is the ceiling, as `edge eval lfw` and the
door benchmark's fillers embed) -> edge.embed.Embedder.embed of the aligned 112x112 crop AND of its horizontal
mirror (cv2.flip(crop, 1)). The flip embedding is the L2-normalised sum of the two unit embeddings.

Protocol (one split per seed; seed 1 is the headline, the others measure the noise):

* enrolled: every LFW person with 3+ distinct photos; photos shuffled, the first two enroll (or the first only,
  for one-photo enrollment), the third is the person's one genuine probe (the same probe in both enrollments);
* gallery rows as `edge enroll` writes them (edge.enroll.with_template): each photo's embedding plus, with two
  photos that agree (mean cosine >= UNLIKE_OTHERS), their fused template (quality-weighted normalised mean); a
  person's score is the best of their rows (edge.match.GalleryIndex);
* fillers: LFW people with one photo, one photo each, up to a 1,000-person gallery (as the door benchmark);
* strangers: --strangers (600) other LFW people (one or two photos, never in the gallery), one photo each.

A probe is *named* when its best person scores >= t and leads the second-best person by >= 0.05 (edge.match).
Recall = genuine probes named as the right person. t0 = the smallest threshold at which no stranger is named.
Arms: plain (no flip), flip (enrollment and probes), flip-enroll (enrollment only), flip-probe (probes only).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Dict, List, Sequence, Tuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.align import align  # noqa: E402
from edge.detect import DetectorConfig, FaceDetector  # noqa: E402
from edge.embed import Embedder  # noqa: E402
from edge.enroll import with_template  # noqa: E402
from edge.evaluate import canonical_detection, central_face  # noqa: E402
from edge.gallery.store import NewEmbedding  # noqa: E402
from edge.images import read_image  # noqa: E402
from edge.lfw import LABEL_ALIASES, MISFILED  # noqa: E402
from edge.manifest import file_sha256, load_manifest  # noqa: E402
from edge.match import GalleryIndex, MatcherConfig  # noqa: E402
from edge.quality import QualityConfig, assess  # noqa: E402

cv2.setNumThreads(1)

MARGIN = MatcherConfig().margin  # 0.05
GALLERY_SIZE = 1000
FIXED = (0.50, 0.52, 0.55)
ARMS = {  # name -> (flip on enrollment, flip on probes)
    "plain": (False, False),
    "flip": (True, True),
    "flip-enroll": (True, False),
    "flip-probe": (False, True),
}


# ------------------------------------------------------------------------------------------- embeddings


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


# LFW label errors in View 1, found by this study's scan of the highest-scoring pairs of DIFFERENT names (cosine
# 0.60-0.95, checked by eye): one person under two spellings (merged under the first name), and photos filed under
# the wrong person (left out). Left alone they are "strangers" who are really enrolled people and set the zero-
# stranger threshold by themselves (0.81 on seed 1). Look-alikes (Jason Kapono / Ray Young, the Bilal brothers,
# George W. / Jeb Bush) are different people and stay.
ALIASES = LABEL_ALIASES


def lfw_people(root: Path, fix_labels: bool = True) -> Dict[str, List[str]]:
    """person -> distinct image names (byte-identical duplicates of one person dropped; label errors fixed)."""
    people: Dict[str, List[str]] = {}
    seen: Dict[str, set] = {}  # type: ignore[type-arg]
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        person = ALIASES.get(folder.name, folder.name) if fix_labels else folder.name
        for path in sorted(folder.glob("*.jpg")):
            name = f"{folder.name}/{path.name}"
            if fix_labels and name in MISFILED:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen.setdefault(person, set()):
                seen[person].add(digest)
                people.setdefault(person, []).append(name)
    return {p: sorted(n) for p, n in sorted(people.items())}


def embed_all(root: Path, names: Sequence[str], cache: Path) -> Dict[str, np.ndarray]:
    """Plain and mirror embeddings (unit, float32), quality and detection facts of every image; cached."""
    manifest = load_manifest()
    key = file_sha256(manifest.path)[:16]
    path = cache / f"lfw-view1-{manifest.id}-{key}.npz"
    if path.is_file():
        with np.load(path) as saved:
            data = {k: saved[k] for k in saved.files}
        if list(data["names"]) == list(names):
            print(f"embeddings: cached in {path}", file=sys.stderr)
            return data
    cache.mkdir(parents=True, exist_ok=True)
    qcfg = QualityConfig()
    embedder = Embedder(num_threads=1)
    plain, mirror, quality, accepted, fallback, several = [], [], [], [], [], []
    t_plain, t_mirror = [], []
    start = time.time()
    with FaceDetector(DetectorConfig(num_threads=1)) as detector:
        for i, name in enumerate(names, 1):
            image = read_image(root / name)
            height, width = image.shape[:2]
            detections = detector.detect(image)
            face = central_face(detections, width, height)
            fallback.append(face is None)
            several.append(len(detections) > 1)
            if face is None:
                face = canonical_detection(width, height)
            aligned = align(image, face, size=embedder.manifest.input_size[0])
            q = assess(face, aligned.image, qcfg)
            quality.append(q.value)
            accepted.append(q.accepted)
            t0 = time.perf_counter()
            plain.append(embedder.embed(aligned.image))
            t1 = time.perf_counter()
            mirror.append(embedder.embed(cv2.flip(aligned.image, 1)))
            t2 = time.perf_counter()
            t_plain.append(t1 - t0)
            t_mirror.append(t2 - t1)
            if i % 500 == 0:
                print(f"  {i}/{len(names)} images, {time.time() - start:.0f} s", file=sys.stderr)
    data = {
        "names": np.array(names),
        "plain": np.stack(plain).astype(np.float32),
        "mirror": np.stack(mirror).astype(np.float32),
        "quality": np.array(quality, dtype=np.float32),
        "accepted": np.array(accepted, dtype=bool),
        "fallback": np.array(fallback, dtype=bool),
        "several": np.array(several, dtype=bool),
        "t_plain": np.array(t_plain),
        "t_mirror": np.array(t_mirror),
        "model_id": np.array(manifest.id),
    }
    np.savez(path, **data)
    print(f"embeddings: {len(names)} images in {time.time() - start:.0f} s -> {path}", file=sys.stderr)
    return data


def timing(root: Path, name: str, runs: int) -> Dict[str, float]:
    """ms per face, 1 thread, one aligned crop: plain embed vs plain + mirror embed (interleaved, medians)."""
    embedder = Embedder(num_threads=1)
    with FaceDetector(DetectorConfig(num_threads=1)) as detector:
        image = read_image(root / name)
        face = central_face(detector.detect(image), image.shape[1], image.shape[0]) or canonical_detection(
            image.shape[1], image.shape[0]
        )
    crop = align(image, face).image
    for _ in range(20):
        embedder.embed(crop)
    one, two = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        a = embedder.embed(crop)
        t1 = time.perf_counter()
        b = embedder.embed(cv2.flip(crop, 1))
        _ = unit(a + b)
        t2 = time.perf_counter()
        one.append(t1 - t0)
        two.append(t2 - t0)
    return {
        "runs": runs,
        "plain_ms_median": 1000 * statistics.median(one),
        "flip_ms_median": 1000 * statistics.median(two),
        "plain_ms_p10": 1000 * float(np.quantile(one, 0.1)),
        "flip_ms_p10": 1000 * float(np.quantile(two, 0.1)),
    }


# ------------------------------------------------------------------------------------------- protocol


def split(people: Dict[str, List[str]], seed: int, strangers: int) -> Dict[str, object]:
    rng = random.Random(seed)
    several = [p for p, photos in people.items() if len(photos) >= 3]
    enrolled = []
    for person in several:
        photos = list(people[person])
        rng.shuffle(photos)
        enrolled.append((person, photos[:2], photos[2]))
    singles = [p for p, photos in people.items() if len(photos) == 1]
    rng.shuffle(singles)
    fillers = singles[: GALLERY_SIZE - len(enrolled)]
    taken = set(fillers) | set(several)
    others = [p for p, photos in people.items() if p not in taken]
    rng.shuffle(others)
    chosen = others[:strangers]
    return {
        "enrolled": enrolled,
        "fillers": [(p, people[p][0]) for p in fillers],
        "strangers": [(p, rng.choice(people[p])) for p in chosen],
        "pool": [n for p in others for n in people[p]],
    }


def vectors(emb: Dict[str, np.ndarray], row: Dict[str, int], names: Sequence[str], flip: bool) -> np.ndarray:
    idx = [row[n] for n in names]
    if flip:
        return unit(emb["plain"][idx] + emb["mirror"][idx])
    return emb["plain"][idx]


def build_index(emb: Dict[str, np.ndarray], row: Dict[str, int], plan: Dict[str, object], photos: int,
                flip: bool, model_id: str) -> GalleryIndex:  # fmt: skip
    ids: List[str] = []
    rows: List[np.ndarray] = []
    for person, enroll, _probe in plan["enrolled"]:  # type: ignore[union-attr]
        names = enroll[:photos]
        vecs = vectors(emb, row, names, flip)
        new = [NewEmbedding(v, model_id, float(emb["quality"][row[n]]), f"photo:{n}") for v, n in zip(vecs, names)]
        for e in with_template(new):
            ids.append(person)
            rows.append(e.vector)
    for person, name in plan["fillers"]:  # type: ignore[union-attr]
        ids.append(person)
        rows.append(vectors(emb, row, [name], flip)[0])
    return GalleryIndex(ids, np.stack(rows))


def top2(index: GalleryIndex, probes: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best person's position, best score, margin over the second-best person) per probe."""
    sims = probes @ index.vectors.T
    per_person = np.maximum.reduceat(sims, index._starts, axis=1)
    order = np.argsort(-per_person, axis=1)[:, :2]
    best = per_person[np.arange(len(probes)), order[:, 0]]
    second = per_person[np.arange(len(probes)), order[:, 1]]
    return order[:, 0], best, best - second


def evaluate(index: GalleryIndex, genuine: np.ndarray, truth: Sequence[str], strangers: np.ndarray) -> Dict[str, object]:
    people = np.array(index.people, dtype=object)
    g_who, g_score, g_margin = top2(index, genuine)
    s_who, s_score, s_margin = top2(index, strangers)
    right = people[g_who] == np.array(truth, dtype=object)
    s_named_scores = s_score[s_margin >= MARGIN]
    t0 = float(np.nextafter(np.float32(s_named_scores.max()), np.float32(np.inf))) if len(s_named_scores) else -1.0

    def at(t: float) -> Dict[str, object]:
        named = (g_score >= t) & (g_margin >= MARGIN)
        return {
            "threshold": round(t, 4),
            "recall": float(np.mean(named & right)),
            "correct": int(np.sum(named & right)),
            "wrong_person": int(np.sum(named & ~right)),
            "strangers_named": int(np.sum((s_score >= t) & (s_margin >= MARGIN))),
        }

    return {
        "t0": at(t0),
        "fixed": [at(t) for t in FIXED],
        "rank1": float(np.mean(right)),
        "correct_at": {key: (g_score >= t) & (g_margin >= MARGIN) & right
                       for key, t in (("t0", t0), *((f"{t:.2f}", t) for t in FIXED))},  # fmt: skip
        "g_score": g_score,
        "right": right,
    }


def run_split(emb: Dict[str, np.ndarray], row: Dict[str, int], plan: Dict[str, object], model_id: str) -> Dict[str, Dict[str, object]]:
    out: Dict[str, Dict[str, object]] = {}
    probes = [p for _, _, p in plan["enrolled"]]  # type: ignore[union-attr]
    truth = [person for person, _, _ in plan["enrolled"]]  # type: ignore[union-attr]
    strangers = [n for _, n in plan["strangers"]]  # type: ignore[union-attr]
    for photos in (2, 1):
        for arm, (flip_enroll, flip_probe) in ARMS.items():
            index = build_index(emb, row, plan, photos, flip_enroll, model_id)
            g = vectors(emb, row, probes, flip_probe)
            s = vectors(emb, row, strangers, flip_probe)
            result = evaluate(index, g, truth, s)
            result["pool"] = matched_fpir(index, g, truth, vectors(emb, row, plan["pool"], flip_probe))  # type: ignore[arg-type]
            out[f"{photos}photo/{arm}"] = result
    return out


POOL_NAMED = (0, 1, 2, 5, 10, 20)
"""Stranger images of the big pool allowed to be named: the threshold each arm needs for it, and the recall there."""


def matched_fpir(index: GalleryIndex, genuine: np.ndarray, truth: Sequence[str], pool: np.ndarray) -> Dict[str, object]:
    """Recall at matched stranger rates: every image of every LFW person outside the gallery as a stranger (a
    finer, fairer comparison than fixed thresholds when the flip moves all scores)."""
    people = np.array(index.people, dtype=object)
    g_who, g_score, g_margin = top2(index, genuine)
    right = people[g_who] == np.array(truth, dtype=object)
    _, p_score, p_margin = top2(index, pool)
    named = np.sort(p_score[p_margin >= MARGIN])[::-1]
    out: Dict[str, object] = {"strangers": int(len(pool)), "g_score": g_score, "p_score": p_score}
    for k in POOL_NAMED:
        t = float(np.nextafter(np.float32(named[k]), np.float32(np.inf))) if k < len(named) else -1.0
        out[str(k)] = {"threshold": t, "recall": float(np.mean((g_score >= t) & (g_margin >= MARGIN) & right))}
    return out


def sign_test(gained: int, lost: int) -> float:
    """Exact two-sided binomial (sign) test of gained vs lost discordant probes."""
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def fmt_row(key: str, r: Dict[str, object], n: int) -> str:
    t0 = r["t0"]  # type: ignore[index]
    cells = [f"{key:<18}", f"{r['rank1']:.3f}", f"{t0['threshold']:.3f}", f"{t0['recall']:.3f} ({t0['correct']}/{n})"]  # type: ignore[index]
    for f in r["fixed"]:  # type: ignore[union-attr]
        cells.append(f"{f['recall']:.3f} / {f['strangers_named']}")
    return " | ".join(cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flipstudy"))
    parser.add_argument("--seeds", type=int, default=20, help="splits: seed 1 is reported in full, all in the summary")
    parser.add_argument("--strangers", type=int, default=600)
    parser.add_argument("--timing", type=int, default=300, help="runs of the 1-thread embed timing (0: skip)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--raw-labels", action="store_true", help="keep LFW's label errors (ALIASES, MISFILED)")
    args = parser.parse_args()

    root = args.data / "lfw-view1" / "lfw-deepfunneled"
    names = sorted(n for photos in lfw_people(root, fix_labels=False).values() for n in photos)
    people = lfw_people(root, fix_labels=not args.raw_labels)
    emb = embed_all(root, names, args.cache)
    row = {str(n): i for i, n in enumerate(emb["names"])}
    model_id = str(emb["model_id"])
    print(
        f"{len(names)} images embedded; {sum(map(len, people.values()))} used, of {len(people)} people; detector found no face in {int(emb['fallback'].sum())} "
        f"(canonical box used), several faces in {int(emb['several'].sum())}; quality gates would reject "
        f"{int((~emb['accepted']).sum())} (not applied)"
    )
    print(f"mean cosine(plain, mirror) per image: {float(np.mean(np.sum(emb['plain'] * emb['mirror'], axis=1))):.3f}")

    results = {s: run_split(emb, row, split(people, s, args.strangers), model_id) for s in range(1, args.seeds + 1)}
    plan = split(people, 1, args.strangers)
    n = len(plan["enrolled"])  # type: ignore[arg-type]
    print(
        f"\ngallery {GALLERY_SIZE} people = {n} enrolled with a genuine probe + {len(plan['fillers'])} one-photo "  # type: ignore[arg-type]
        f"fillers; {len(plan['strangers'])} strangers; margin {MARGIN}\n"  # type: ignore[arg-type]
    )
    head = ["enrollment/arm", "rank-1", "t0", "recall@t0"] + [f"recall / strangers @{t:.2f}" for t in FIXED]
    print("seed 1:")
    print(" | ".join(head))
    for key, r in results[1].items():
        print(fmt_row(key, r, n))

    print(f"\nover {args.seeds} splits (mean +- sd; paired difference to plain: mean +- sd, splits better/worse)")
    summary: Dict[str, Dict[str, object]] = {}
    for key in results[1]:
        photos = key.split("/")[0]
        base = f"{photos}/plain"
        def vals(k: str, field: str, idx: int = -1) -> np.ndarray:
            if field == "t0":
                return np.array([results[s][k]["t0"]["recall"] for s in results])  # type: ignore[index]
            if field == "thr":
                return np.array([results[s][k]["t0"]["threshold"] for s in results])  # type: ignore[index]
            if field == "rank1":
                return np.array([results[s][k]["rank1"] for s in results])
            if field == "fixed":
                return np.array([results[s][k]["fixed"][idx]["recall"] for s in results])  # type: ignore[index]
            return np.array([results[s][k]["fixed"][idx]["strangers_named"] for s in results])  # type: ignore[index]

        line = [f"{key:<18}"]
        entry: Dict[str, object] = {}
        for label, field, idx in (("rank1", "rank1", -1), ("t0", "thr", -1), ("recall@t0", "t0", -1),
                                  *[(f"recall@{t:.2f}", "fixed", i) for i, t in enumerate(FIXED)],
                                  *[(f"strangers@{t:.2f}", "strangers", i) for i, t in enumerate(FIXED)]):  # fmt: skip
            v = vals(key, field, idx)
            d = v - vals(base, field, idx)
            entry[label] = {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                            "diff_mean": float(d.mean()), "diff_sd": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                            "better": int(np.sum(d > 0)), "worse": int(np.sum(d < 0))}  # fmt: skip
            if field in ("t0", "fixed", "rank1", "thr"):
                line.append(f"{label} {v.mean():.3f}+-{v.std(ddof=1) if len(v) > 1 else 0:.3f}"
                            + ("" if key == base else f" (d {d.mean():+.3f}+-{d.std(ddof=1) if len(d) > 1 else 0:.3f}, {int(np.sum(d > 0))}/{int(np.sum(d < 0))})"))  # fmt: skip
            else:
                line.append(f"{label} {v.mean():.1f}" + ("" if key == base else f" (d {d.mean():+.1f})"))
        summary[key] = entry
        print("  " + "; ".join(line))

    pool_n = results[1]["2photo/plain"]["pool"]["strangers"]  # type: ignore[index]
    print(f"\nrecall at matched stranger rates: all {pool_n} (seed 1) images of LFW people outside the gallery as "
          f"strangers; threshold at which k of them are named (mean over {args.seeds} splits; d = paired diff to plain, "
          "splits better/worse)")  # fmt: skip
    pool_summary: Dict[str, Dict[str, object]] = {}
    for key in results[1]:
        base = f"{key.split('/')[0]}/plain"
        cells = []
        for k in POOL_NAMED:
            r = np.array([results[s][key]["pool"][str(k)]["recall"] for s in results])  # type: ignore[index]
            t = np.array([results[s][key]["pool"][str(k)]["threshold"] for s in results])  # type: ignore[index]
            b = np.array([results[s][base]["pool"][str(k)]["recall"] for s in results])  # type: ignore[index]
            d = r - b
            pool_summary.setdefault(key, {})[str(k)] = {"threshold": float(t.mean()), "recall": float(r.mean()),
                                                        "diff_mean": float(d.mean()), "better": int(np.sum(d > 0)),
                                                        "worse": int(np.sum(d < 0))}  # fmt: skip
            cells.append(f"k={k}: t {t.mean():.3f} recall {r.mean():.3f}"
                         + ("" if key == base else f" (d {d.mean():+.3f}, {int(np.sum(d > 0))}/{int(np.sum(d < 0))})"))  # fmt: skip
        print(f"  {key:<18} " + "; ".join(cells))

    print("\nscore shift flip - plain of the best person's score (mean over splits): genuine probes (right person "
          "top-1 in both) vs the pool's strangers; sd of the strangers' plain score for scale")  # fmt: skip
    shifts: Dict[str, Dict[str, float]] = {}
    for photos in ("2photo", "1photo"):
        g_shift, g_up, s_shift, s_sd = [], [], [], []
        for s in results:
            a, b = results[s][f"{photos}/plain"], results[s][f"{photos}/flip"]
            both = a["right"] & b["right"]  # type: ignore[operator]
            d = (b["g_score"] - a["g_score"])[both]  # type: ignore[operator]
            g_shift.append(float(d.mean()))
            g_up.append(float(np.mean(d > 0)))
            ps_a, ps_b = a["pool"]["p_score"], b["pool"]["p_score"]  # type: ignore[index]
            s_shift.append(float(np.mean(ps_b - ps_a)))
            s_sd.append(float(np.std(ps_a)))
        shifts[photos] = {"genuine": float(np.mean(g_shift)), "genuine_share_up": float(np.mean(g_up)),
                          "stranger": float(np.mean(s_shift)), "stranger_sd": float(np.mean(s_sd))}  # fmt: skip
        print(f"  {photos}: genuine {np.mean(g_shift):+.4f} (rose for {100 * np.mean(g_up):.0f}% of probes), strangers "
              f"{np.mean(s_shift):+.4f}; net {np.mean(g_shift) - np.mean(s_shift):+.4f} = "
              f"{(np.mean(g_shift) - np.mean(s_shift)) / np.mean(s_sd):.2f} stranger sd ({np.mean(s_sd):.3f})")  # fmt: skip
    print("\ndiscordant genuine probes vs plain (gained/lost; seed 1, then summed over all splits) and the exact "
          "two-sided sign-test p of seed 1:")  # fmt: skip
    discordant: Dict[str, Dict[str, object]] = {}
    for photos in ("2photo", "1photo"):
        for arm in ("flip", "flip-enroll", "flip-probe"):
            cells = []
            for at in ("t0", *(f"{t:.2f}" for t in FIXED)):
                counts = []
                for s in results:
                    mine = results[s][f"{photos}/{arm}"]["correct_at"][at]  # type: ignore[index]
                    base = results[s][f"{photos}/plain"]["correct_at"][at]  # type: ignore[index]
                    counts.append((int(np.sum(mine & ~base)), int(np.sum(~mine & base))))
                g1, l1 = counts[0]
                gs, ls = sum(c[0] for c in counts), sum(c[1] for c in counts)
                p = sign_test(g1, l1)
                discordant.setdefault(f"{photos}/{arm}", {})[at] = {"seed1": [g1, l1], "all": [gs, ls], "p_seed1": p}
                cells.append(f"@{at} {g1}/{l1} (p {p:.2f}); all {gs}/{ls}")
            print(f"  {photos}/{arm:<12} " + "; ".join(cells))

    timings = None
    if args.timing:
        timings = timing(root, names[0], args.timing)
        in_run = {"plain_ms_median": 1000 * float(np.median(emb["t_plain"])),
                  "mirror_ms_median": 1000 * float(np.median(emb["t_mirror"]))}  # fmt: skip
        print(f"\nembed cost, 1 thread, {args.timing} interleaved runs: plain {timings['plain_ms_median']:.2f} ms, "
              f"plain + mirror + fuse {timings['flip_ms_median']:.2f} ms (median; p10 {timings['plain_ms_p10']:.2f} / "
              f"{timings['flip_ms_p10']:.2f}); during the embedding pass: plain {in_run['plain_ms_median']:.2f} ms, "
              f"mirror {in_run['mirror_ms_median']:.2f} ms (median over {len(emb['t_plain'])} images)")  # fmt: skip
        timings.update(in_run)

    if args.json:
        seed1 = {k: {"rank1": r["rank1"], "t0": r["t0"], "fixed": r["fixed"]} for k, r in results[1].items()}
        args.json.write_text(json.dumps({"seed1": seed1, "summary": summary, "discordant": discordant,
                                         "matched_rate": pool_summary, "shifts": shifts, "timing": timings, "seeds": args.seeds,
                                         "enrolled": n, "strangers": args.strangers}, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
