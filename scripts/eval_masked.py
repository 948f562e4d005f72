#!/usr/bin/env python3
"""Masked-face verification on LFW View 1 with SYNTHESIZED masks (we have no real masked identity data).

Protocol: LFW View 1, threshold picked on pairsDevTrain.txt (2,200 pairs), accuracy on pairsDevTest.txt (1,000
pairs). A surgical-style mask (edge.masks.draw_mask, light blue / white / black, chosen from a hash of the image
name) is drawn on the image from the keypoints found on the unmasked image, BEFORE detection: detection, alignment
and embedding then run on the masked image, as at a door. In every pair the left image is the enrolled (gallery)
side and the right image the probe.

Conditions (gallery vs probe):
  a       unmasked vs unmasked (baseline)
  b       unmasked vs masked (the realistic case at a door)
  c       masked vs masked
  b@a     b scored with the threshold picked on unmasked train pairs (a box configured for unmasked faces)
  *_eyes  alignment from the two eyes only (similarity transform onto the template's eyes), both sides
  b_oracle  probe aligned with the keypoints of the unmasked image (how much is alignment, how much occlusion)
  *_aug   mask augmentation: the gallery side also holds the embedding of its own photo with a synthetic mask
          (drawn by edge.masks.draw_mask, aligned with the unmasked photo's keypoints); score = max over the two
  *_augdet  the same, but the augmented photo is re-detected and aligned with the masked image's keypoints
  *_augmean the same, but gallery = normalised mean of the two embeddings instead of the max
  *H      probes wear a HELD-OUT mask style (different outline, colours and a stripe texture, defined only in
          this script) so that augmentation is not only rewarded for matching its own synthetic mask
  shared  one threshold picked on train a_aug + b_aug together, applied to test a_aug and b_aug
Also: each condition at the box's configured match threshold (edge.match.MatcherConfig().threshold).

    .venv/bin/python scripts/eval_masked.py [--data ../shared/data] [--every 1] [--json out.json]

--every K keeps every K-th pair of each file (the files list same pairs first, so balance is kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge import lfw  # noqa: E402
from edge.align import ARCFACE_112, TEMPLATE_SIZE, align, similarity_transform  # noqa: E402
from edge.detect import DetectorConfig, FaceDetector  # noqa: E402
from edge.embed import Embedder  # noqa: E402
from edge.evaluate import canonical_detection, central_face  # noqa: E402
from edge.faces import Detection  # noqa: E402
from edge.images import read_image  # noqa: E402
from edge.masks import draw_mask, style_for  # noqa: E402
from edge.match import GalleryIndex, MatcherConfig  # noqa: E402
from edge.quality import QualityConfig, assess  # noqa: E402
from edge.recognize import Recognizer  # noqa: E402

NOTE = "SYNTHESIZED masks on LFW View 1 (no real masked identity data); train=pairsDevTrain, test=pairsDevTest"

# --- held-out probe mask (deliberately NOT edge.masks: other outline, colours, texture) -------------------------
HELD_OUT_COLOURS = [(80, 40, 20), (190, 160, 235), (90, 90, 90), (60, 110, 60)]  # navy, pink, grey, green (BGR)


def held_out_mask(image: np.ndarray, det: Detection, name: str) -> np.ndarray:
    """A cloth/KN95-like mask: pointed nose ridge reaching higher, narrower, V-shaped chin, striped fabric."""
    kp = det.keypoints.astype(np.float64)
    origin = (kp[0] + kp[1]) / 2
    across = kp[1] - kp[0]
    dist = float(np.hypot(*across))
    ux = across / dist
    uy = np.array([-ux[1], ux[0]])
    if float(np.dot(kp[3] - origin, uy)) < 0:
        uy = -uy
    mouth = float(np.clip(np.dot(kp[3] - origin, uy) / dist, 0.7, 1.6))
    cx = float(np.clip(np.dot(kp[2] - origin, ux) / dist, -0.5, 0.5))
    local = np.array(
        [
            (cx - 0.85, 0.45 * mouth),
            (cx - 0.3, 0.28 * mouth),
            (cx, 0.22 * mouth),
            (cx + 0.3, 0.28 * mouth),
            (cx + 0.85, 0.45 * mouth),
            (cx + 0.9, 0.95 * mouth),
            (cx + 0.55, 1.35 * mouth),
            (cx, 1.55 * mouth),
            (cx - 0.55, 1.35 * mouth),
            (cx - 0.9, 0.95 * mouth),
        ]
    )
    poly = origin + dist * (local[:, :1] * ux + local[:, 1:] * uy)
    digest = hashlib.sha256(("held-out:" + name).encode()).digest()
    colour = HELD_OUT_COLOURS[digest[0] % len(HELD_OUT_COLOURS)]
    out = image.copy()
    cv2.fillPoly(out, [np.round(poly * 16).astype(np.int32)], colour, lineType=cv2.LINE_AA, shift=4)
    # fabric stripes: darker diagonal lines clipped to the mask
    stripes = out.copy()
    dark = tuple(int(c * 0.7) for c in colour)
    step = max(3, int(dist / 6))
    h, w = image.shape[:2]
    for k in range(-h, w, step):
        cv2.line(stripes, (k, 0), (k + h, h), dark, 1, cv2.LINE_AA)
    region = np.zeros((h, w), np.uint8)
    cv2.fillPoly(region, [np.round(poly).astype(np.int32)], (255,))
    out[region > 0] = stripes[region > 0]
    return out


# --- per-image embeddings -------------------------------------------------------------------------------------


def align_eyes(image: np.ndarray, det: Detection, size: int) -> np.ndarray:
    """Similarity from the two eyes onto the template's eyes (nose and mouth ignored)."""
    dst = ARCFACE_112[:2] * (size / TEMPLATE_SIZE)
    matrix = similarity_transform(det.keypoints[:2], dst)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@dataclass
class ImageRecord:
    emb: Dict[str, np.ndarray]
    found: Dict[str, bool]
    accepted: Dict[str, bool]
    kp_shift: Optional[np.ndarray]  # |keypoint(masked) - keypoint(unmasked)| / eye distance, shape (6,)


class Pipeline:
    def __init__(self, recognizer: Recognizer) -> None:
        self.rec = recognizer
        self.size = recognizer.embedder.manifest.input_size[0]
        self.cache: Dict[str, ImageRecord] = {}

    def _detect(self, image: np.ndarray) -> Tuple[Detection, bool]:
        h, w = image.shape[:2]
        face = central_face(self.rec.detector.detect(image), w, h)
        return (face, True) if face is not None else (canonical_detection(w, h), False)

    def _embed4(self, image: np.ndarray, det: Detection) -> Tuple[np.ndarray, bool]:
        aligned = align(image, det, size=self.size).image
        return self.rec.embedder.embed(aligned), assess(det, aligned, self.rec.quality).accepted

    def record(self, root: Path, name: str) -> ImageRecord:
        if name in self.cache:
            return self.cache[name]
        image = read_image(root / name)
        emb: Dict[str, np.ndarray] = {}
        found: Dict[str, bool] = {}
        accepted: Dict[str, bool] = {}
        det_u, found["U"] = self._detect(image)
        emb["U"], accepted["U"] = self._embed4(image, det_u)
        emb["Ue"] = self.rec.embedder.embed(align_eyes(image, det_u, self.size))
        masked = draw_mask(image, det_u, style_for(name))
        det_m, found["M"] = self._detect(masked)
        emb["M"], accepted["M"] = self._embed4(masked, det_m)
        emb["Me"] = self.rec.embedder.embed(align_eyes(masked, det_m, self.size))
        emb["Mo"], _ = self._embed4(masked, det_u)
        held = held_out_mask(image, det_u, name)
        det_h, found["H"] = self._detect(held)
        emb["H"], accepted["H"] = self._embed4(held, det_h)
        emb["He"] = self.rec.embedder.embed(align_eyes(held, det_h, self.size))
        shift = None
        if found["U"] and found["M"]:
            eye = float(np.hypot(*(det_u.keypoints[1] - det_u.keypoints[0])))
            shift = np.hypot(*(det_m.keypoints - det_u.keypoints).T) / eye
        rec = ImageRecord(emb, found, accepted, shift)
        self.cache[name] = rec
        return rec


# --- scoring --------------------------------------------------------------------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    return v / float(np.linalg.norm(v))


def score(kind: str, g: ImageRecord, p: ImageRecord) -> float:
    """Gallery record g (left), probe record p (right)."""
    e, f = g.emb, p.emb
    dot = lambda a, b: float(np.dot(a, b))  # noqa: E731
    table = {
        "a": lambda: dot(e["U"], f["U"]),
        "b": lambda: dot(e["U"], f["M"]),
        "c": lambda: dot(e["M"], f["M"]),
        "a_eyes": lambda: dot(e["Ue"], f["Ue"]),
        "b_eyes": lambda: dot(e["Ue"], f["Me"]),
        "c_eyes": lambda: dot(e["Me"], f["Me"]),
        "b_oracle": lambda: dot(e["U"], f["Mo"]),
        "a_aug": lambda: max(dot(e["U"], f["U"]), dot(e["Mo"], f["U"])),
        "b_aug": lambda: max(dot(e["U"], f["M"]), dot(e["Mo"], f["M"])),
        "a_augdet": lambda: max(dot(e["U"], f["U"]), dot(e["M"], f["U"])),
        "b_augdet": lambda: max(dot(e["U"], f["M"]), dot(e["M"], f["M"])),
        "a_augmean": lambda: dot(unit(e["U"] + e["Mo"]), f["U"]),
        "b_augmean": lambda: dot(unit(e["U"] + e["Mo"]), f["M"]),
        "bH": lambda: dot(e["U"], f["H"]),
        "bH_eyes": lambda: dot(e["Ue"], f["He"]),
        "bH_aug": lambda: max(dot(e["U"], f["H"]), dot(e["Mo"], f["H"])),
    }
    return table[kind]()


KINDS = (
    "a", "b", "c", "a_eyes", "b_eyes", "c_eyes", "b_oracle",
    "a_aug", "b_aug", "a_augdet", "b_augdet", "a_augmean", "b_augmean", "bH", "bH_eyes", "bH_aug",
)  # fmt: skip


def scores_for(kind: str, pairs: Sequence[lfw.Pair], recs: Dict[str, ImageRecord]) -> Tuple[np.ndarray, np.ndarray]:
    s = np.array([score(kind, recs[p.left], recs[p.right]) for p in pairs])
    return s, np.array([p.same for p in pairs], dtype=bool)


def metrics(
    train: Tuple[np.ndarray, np.ndarray], test: Tuple[np.ndarray, np.ndarray], threshold: float, box_threshold: float
) -> Dict[str, float]:
    s, y = test
    tar3, _ = lfw.tar_at_far(s, y, 1e-3)
    tar2, _ = lfw.tar_at_far(s, y, 1e-2)
    return {
        "threshold": threshold,
        "train_acc": lfw.accuracy(train[0], train[1], threshold),
        "acc": lfw.accuracy(s, y, threshold),
        "tar@1e-3": tar3,
        "tar@1e-2": tar2,
        "box_tar": float(np.mean(s[y] >= box_threshold)),
        "box_far": float(np.mean(s[~y] >= box_threshold)),
        "genuine_median": float(np.median(s[y])),
        "impostor_p99": float(np.quantile(s[~y], 0.99)),
    }


def identification(
    test: Sequence[lfw.Pair], recs: Dict[str, ImageRecord], threshold: float, margins: Sequence[float]
) -> Dict[str, Dict[str, float]]:
    """Open-set identification with edge.match: gallery = one photo per person of the test same-pairs (left image),
    genuine probes = their right images, unknown probes = test images of people not in the gallery."""
    gallery: Dict[str, str] = {}
    for p in test:
        if p.same:
            gallery.setdefault(p.left.split("/")[0], p.left)
    genuine = [(p.left.split("/")[0], p.right) for p in test if p.same and p.right != gallery[p.left.split("/")[0]]]
    unknown = sorted({n for p in test if not p.same for n in (p.left, p.right) if n.split("/")[0] not in gallery})
    people = sorted(gallery)
    out: Dict[str, Dict[str, float]] = {}
    for gal_kind, gal_keys in (("plain", ("U",)), ("aug", ("U", "Mo"))):
        ids = [person for person in people for _ in gal_keys]
        vectors = np.stack([recs[gallery[person]].emb[k] for person in people for k in gal_keys])
        index = GalleryIndex(ids, vectors)
        for probe in ("U", "M", "H"):
            for margin in margins:
                config = MatcherConfig(threshold=threshold, margin=margin)
                right = wrong = 0
                for person, name in genuine:
                    m = index.match(recs[name].emb[probe], config)
                    right += m.person_id == person
                    wrong += m.person_id is not None and m.person_id != person
                false = sum(index.match(recs[n].emb[probe], config).known for n in unknown)
                out[f"gallery={gal_kind} probe={probe} margin={margin}"] = {
                    "correct": right / len(genuine),
                    "wrong_person": wrong / len(genuine),
                    "unknown_accepted": false / len(unknown),
                }
    out["sizes"] = {"gallery_people": len(people), "genuine_probes": len(genuine), "unknown_probes": len(unknown)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared/data"))
    )
    parser.add_argument("--every", type=int, default=1, help="keep every K-th pair (subsample when exploring)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    root = args.data / "lfw-view1"
    images = root / "lfw-deepfunneled"
    train = lfw.parse_pairs(root / "pairsDevTrain.txt").pairs[:: args.every]
    test = lfw.parse_pairs(root / "pairsDevTest.txt").pairs[:: args.every]
    names = sorted({n for p in (*train, *test) for n in (p.left, p.right)})
    box_threshold = MatcherConfig().threshold

    start = time.time()
    with FaceDetector(DetectorConfig(num_threads=args.threads)) as detector:
        pipe = Pipeline(Recognizer(detector, Embedder(num_threads=args.threads), QualityConfig()))
        for i, name in enumerate(names, 1):
            pipe.record(images, name)
            if i % 250 == 0:
                print(f"  {i}/{len(names)} images, {time.time() - start:.0f}s", file=sys.stderr)
    recs = pipe.cache

    n = len(recs)
    found = {k: sum(r.found[k] for r in recs.values()) / n for k in ("U", "M", "H")}
    accepted = {k: sum(r.accepted[k] for r in recs.values()) / n for k in ("U", "M", "H")}
    shifts = np.array([r.kp_shift for r in recs.values() if r.kp_shift is not None])
    shift_stats = {
        kp: {"median": float(np.median(shifts[:, i])), "p90": float(np.quantile(shifts[:, i], 0.9))}
        for i, kp in enumerate(("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear"))
    }

    results: Dict[str, Dict[str, float]] = {}
    train_scores = {k: scores_for(k, train, recs) for k in KINDS}
    test_scores = {k: scores_for(k, test, recs) for k in KINDS}
    for k in KINDS:
        t = lfw.best_threshold(*train_scores[k])
        results[k] = metrics(train_scores[k], test_scores[k], t, box_threshold)
    # b / bH scored with thresholds picked on other conditions' train pairs
    for k, ref in (
        ("b", "a"),
        ("bH", "a"),
        ("b_aug", "a"),
        ("b_aug", "a_aug"),
        ("bH_aug", "a_aug"),
        ("b_eyes", "a_eyes"),
    ):
        t = lfw.best_threshold(*train_scores[ref])
        results[f"{k}@{ref}"] = metrics(train_scores[k], test_scores[k], t, box_threshold)
    # one shared threshold for unmasked and masked probes with an augmented gallery
    for a_k, b_k in (("a", "b"), ("a_aug", "b_aug")):
        mix = tuple(np.concatenate([train_scores[a_k][i], train_scores[b_k][i]]) for i in (0, 1))
        t = lfw.best_threshold(*mix)
        for k in (a_k, b_k):
            results[f"{k}@shared"] = metrics(train_scores[k], test_scores[k], t, box_threshold)

    shared_t = lfw.best_threshold(
        *(np.concatenate([train_scores["a_aug"][i], train_scores["b_aug"][i]]) for i in (0, 1))
    )
    ident = {
        f"threshold={t_name}": identification(test, recs, t, (0.0, MatcherConfig().margin))
        for t_name, t in (("box", box_threshold), ("shared_aug", shared_t))
    }

    report = {
        "note": NOTE,
        "pairs": {"train": len(train), "test": len(test)},
        "images": n,
        "seconds": round(time.time() - start, 1),
        "detected": found,
        "quality_accepted": accepted,
        "keypoint_shift_masked_vs_unmasked_in_eye_distances": shift_stats,
        "box_threshold": box_threshold,
        "results": results,
        "identification": ident,
    }
    print(NOTE)
    print(f"pairs train {len(train)} test {len(test)}, images {n}, {report['seconds']}s")
    print(
        "detected:        "
        + "  ".join(f"{k} {v:.4f}" for k, v in found.items())
        + "   (U unmasked, M mask, H held-out mask)"
    )
    print("quality passed:  " + "  ".join(f"{k} {v:.4f}" for k, v in accepted.items()))
    print(
        "keypoint shift (masked vs unmasked, eye distances): "
        + "  ".join(f"{kp} {v['median']:.3f}/{v['p90']:.3f}" for kp, v in shift_stats.items())
        + "  (median/p90)"
    )
    cols = (
        "threshold",
        "train_acc",
        "acc",
        "tar@1e-3",
        "tar@1e-2",
        "box_tar",
        "box_far",
        "genuine_median",
        "impostor_p99",
    )
    print(f"{'condition':18s}" + "".join(f"{c:>15s}" for c in cols))
    for k, m in results.items():
        print(f"{k:18s}" + "".join(f"{m[c]:15.4f}" for c in cols))
    print(
        f"(box_tar / box_far: share of test genuine / impostor pairs accepted at the box's threshold {box_threshold};"
        f" TAR@FAR=1e-3 on {int((~test_scores['a'][1]).sum())} impostor pairs means zero false accepts)"
    )
    for t_name, block in ident.items():
        print(f"open-set identification ({t_name}, {block['sizes']}):")
        for k, m in block.items():
            if k != "sizes":
                print(f"  {k:36s}" + "  ".join(f"{c} {v:.4f}" for c, v in m.items()))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
