#!/usr/bin/env python3
"""Convert the OpenCV Zoo SFace face-embedding model (ONNX, block-quantized) to TFLite.

Two sub-commands:

``convert``  (run in the throwaway build venv made by scripts/build_model.sh; needs onnx,
             onnxruntime, onnx2tf, tensorflow, opencv):
    1. ONNX with blocked DequantizeLinear -> plain fp32 ONNX at opset 13
       (weight subgraphs evaluated once with onnxruntime and written back as float
       initializers, Dropout dropped, unused graph inputs dropped);
    2. check the fp32 ONNX against the original on seeded random inputs;
    3. onnx2tf -> SavedModel (NHWC input [1,112,112,3] float32, RGB 0..255 as is);
    4. tf.lite.TFLiteConverter -> sface_fp32.tflite (scratch), sface_int8_dynamic.tflite
       (dynamic-range int8, needs no data) and, when face data is given,
       sface_int8_mixed.tflite (full int8 with PRELU kept float, calibrated on a fixed,
       sorted selection of LFW View 1 images).

``evaluate`` (run in the *runtime* environment: numpy + ai_edge_litert (or tflite_runtime)
             + opencv; no tensorflow): checks shapes, cosine to fp32 on real face crops,
             ms per inference at 1 and 2 threads, optionally LFW View 1 pair accuracy.

Everything is deterministic (fixed seeds, sorted file lists, fixed crop transform), so a
rebuild gives byte-identical .tflite files that scripts/build_model.sh checks by sha256.
Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

INPUT_SIZE = 112
EMBEDDING_SIZE = 128

# ArcFace 112x112 template (left eye, right eye, nose tip, mouth centre) as seen in the image.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [56.1396, 92.2848]],
    dtype=np.float64,
)
# Median positions of the same four points in the 250x250 LFW deep-funneled images
# (measured once with mediapipe face detection on 84 images; the deep-funneled images are
# already aligned, so one fixed similarity transform gives arcface-like crops for all).
LFW_DEEPFUNNELED_POINTS = np.array(
    [[103.32, 114.26], [147.69, 113.55], [127.58, 138.55], [126.59, 160.98]],
    dtype=np.float64,
)

CALIB_FILE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def log(msg: str) -> None:
    print(f"[convert_sface] {msg}", file=sys.stderr, flush=True)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping src points onto dst. 2x3."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / s.var(0).sum()
    t = dst_mean - scale * r @ src_mean
    return np.hstack([scale * r, t[:, None]])


LFW_TO_ARCFACE = similarity_transform(LFW_DEEPFUNNELED_POINTS, ARCFACE_TEMPLATE)


def lfw_pair_images(pairs_file: Path) -> list[str]:
    """Sorted unique relative image paths (Name/Name_NNNN.jpg) named in an LFW pairs file."""
    names: set[str] = set()
    for line in pairs_file.read_text().splitlines()[1:]:
        p = line.split()
        if len(p) == 3:
            names.add(f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg")
            names.add(f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg")
        elif len(p) == 4:
            names.add(f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg")
            names.add(f"{p[2]}/{p[2]}_{int(p[3]):04d}.jpg")
    return sorted(names)


def lfw_pairs(pairs_file: Path) -> list[tuple[str, str, bool]]:
    out = []
    for line in pairs_file.read_text().splitlines()[1:]:
        p = line.split()
        if len(p) == 3:
            out.append((f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[0]}/{p[0]}_{int(p[2]):04d}.jpg", True))
        elif len(p) == 4:
            out.append((f"{p[0]}/{p[0]}_{int(p[1]):04d}.jpg", f"{p[2]}/{p[2]}_{int(p[3]):04d}.jpg", False))
    return out


def evenly_spaced(items: list[str], count: int) -> list[str]:
    if count >= len(items):
        return list(items)
    idx = np.linspace(0, len(items) - 1, count).round().astype(int)
    return [items[i] for i in idx]


def face_crop(path: Path) -> np.ndarray:
    """112x112 RGB float32 0..255 arcface-like crop of an LFW deep-funneled image, [1,112,112,3]."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    crop = cv2.warpAffine(
        bgr, LFW_TO_ARCFACE, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
    return rgb.astype(np.float32)[None]


def lfw_root(data_dir: Path) -> Path:
    return data_dir / "lfw-view1"


# --------------------------------------------------------------------------- ONNX step


def make_plain_fp32_onnx(src: Path, dst: Path) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph

    # 1. drop Dropout (inference: identity); rewire its consumers to its input.
    rename: dict[str, str] = {}
    kept = []
    for n in g.node:
        if n.op_type == "Dropout":
            rename[n.output[0]] = rename.get(n.input[0], n.input[0])
            continue
        kept.append(n)
    for n in kept:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    for o in g.output:
        if o.name in rename:
            raise RuntimeError("Dropout output is a graph output; not handled")
    # drop nodes whose outputs are no longer used (the Dropout ratio Constant)
    graph_outputs = {o.name for o in g.output}
    while True:
        used = {x for n in kept for x in n.input} | graph_outputs
        nxt = [n for n in kept if any(o in used for o in n.output)]
        if len(nxt) == len(kept):
            break
        kept = nxt

    # 2. find nodes computable from initializers alone (weight subgraphs).
    init_names = {i.name for i in g.initializer}
    const = set(init_names)
    const_nodes, live_nodes = [], []
    for n in kept:
        if all(x == "" or x in const for x in n.input):
            const_nodes.append(n)
            const.update(n.output)
        else:
            live_nodes.append(n)
    needed: list[str] = []
    for n in live_nodes:
        for x in n.input:
            if x in const and x not in init_names and x not in needed:
                needed.append(x)

    # 3. evaluate them once with onnxruntime (a graph with no inputs).
    sub = helper.make_graph(
        const_nodes,
        "weights",
        [],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, None) for x in needed],
        initializer=list(g.initializer),
    )
    sub_model = helper.make_model(sub, opset_imports=list(model.opset_import))
    sub_model.ir_version = model.ir_version if model.ir_version >= 10 else 10
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(sub_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    values = dict(zip(needed, sess.run(needed, {})))
    for k, v in values.items():
        if v.dtype != np.float32:
            raise RuntimeError(f"folded tensor {k} is {v.dtype}, expected float32")

    # 4. new graph: live nodes, used initializers (order of first use), the real input only.
    orig_inits = {i.name: i for i in g.initializer}
    new_inits, seen = [], set()
    for n in live_nodes:
        for x in n.input:
            if x in seen or x == "":
                continue
            if x in values:
                new_inits.append(numpy_helper.from_array(np.ascontiguousarray(values[x]), x))
                seen.add(x)
            elif x in orig_inits:
                new_inits.append(orig_inits[x])
                seen.add(x)
    used_inputs = {x for n in live_nodes for x in n.input}
    inputs = [i for i in g.input if i.name in used_inputs and i.name not in seen]
    if [i.name for i in inputs] != ["data"]:
        raise RuntimeError(f"unexpected graph inputs after cleanup: {[i.name for i in inputs]}")
    new_graph = helper.make_graph(live_nodes, g.name or "sface", inputs, list(g.output), initializer=new_inits)
    out = helper.make_model(
        new_graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge/scripts/convert_sface.py"
    )
    out.ir_version = 7
    onnx.checker.check_model(out, full_check=True)
    onnx.save(out, str(dst))
    ops: dict[str, int] = {}
    for n in live_nodes:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"folded_tensors": len(values), "ops": ops}


def compare_onnx(orig: Path, plain: Path, seed: int = 1234, count: int = 8) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    a = ort.InferenceSession(str(orig), so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(plain), so, providers=["CPUExecutionProvider"])
    # the original lists weight tensors as graph inputs that no node uses; onnxruntime still
    # wants them fed: give zeros (they cannot change the output).
    extra = {}
    for i in a.get_inputs():
        if i.name != "data":
            extra[i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
    rng = np.random.default_rng(seed)
    worst, worst_cos = 0.0, 1.0
    for _ in range(count):
        x = rng.uniform(0, 255, size=(1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
        ya = a.run(None, {"data": x, **extra})[0]
        yb = b.run(None, {"data": x})[0]
        worst = max(worst, float(np.abs(ya - yb).max()))
        worst_cos = min(worst_cos, float((ya @ yb.T).item() / np.linalg.norm(ya) / np.linalg.norm(yb)))
    return {"max_abs_diff": worst, "min_cosine": worst_cos, "inputs": count}


# --------------------------------------------------------------------------- TF step


def run_onnx2tf(plain: Path, saved_model: Path, workdir: Path) -> None:
    # onnx2tf loads this file from the working directory for its own checks and int8 path,
    # and downloads it from the internet when it is missing: make a deterministic one.
    rng = np.random.default_rng(20211201)
    np.save(workdir / CALIB_FILE_NAME, rng.random((20, 128, 128, 3), dtype=np.float32))
    exe = Path(sys.executable).parent / "onnx2tf"
    cmd = [str(exe) if exe.exists() else "onnx2tf", "-i", str(plain), "-o", str(saved_model), "-osd", "-n"]
    log("running " + " ".join(cmd))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    subprocess.run(cmd, cwd=workdir, check=True, env=env)
    if not (saved_model / "saved_model.pb").exists():
        raise RuntimeError("onnx2tf made no SavedModel")


def tflite_convert(
    saved_model: Path, mode: str, calib: np.ndarray | None = None, denylisted_ops: list[str] | None = None
) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if mode == "fp32":
        return conv.convert()
    if mode == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        return conv.convert()
    if mode == "mixed":
        assert calib is not None

        def rep():
            for i in range(len(calib)):
                yield [calib[i : i + 1]]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(denylisted_ops or []))
        dbg = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=rep, debug_options=opts)
        return dbg.get_nondebug_quantized_model()
    raise ValueError(mode)


def tflite_ops(model_bytes: bytes) -> dict[str, int]:
    import tensorflow as tf

    ops: dict[str, int] = {}
    try:
        details = tf.lite.Interpreter(model_content=model_bytes)._get_ops_details()  # noqa: SLF001
        for d in details:
            ops[d["op_name"]] = ops.get(d["op_name"], 0) + 1
    except Exception as e:  # informational only
        ops["?"] = 0
        log(f"could not list ops: {e}")
    return ops


def check_tflite_against_onnx(model_bytes: bytes, plain: Path, seed: int = 99, count: int = 4) -> dict:
    import onnxruntime as ort
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=model_bytes, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if list(inp["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 3] or inp["dtype"] != np.float32:
        raise RuntimeError(f"bad input {inp['shape']} {inp['dtype']}")
    if list(out["shape"]) != [1, EMBEDDING_SIZE] or out["dtype"] != np.float32:
        raise RuntimeError(f"bad output {out['shape']} {out['dtype']}")
    sess = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    worst, worst_cos = 0.0, 1.0
    for _ in range(count):
        x = rng.uniform(0, 255, size=(1, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)
        ref = sess.run(None, {"data": x.transpose(0, 3, 1, 2).copy()})[0]
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        worst = max(worst, float(np.abs(ref - y).max()))
        worst_cos = min(worst_cos, float((ref @ y.T).item() / np.linalg.norm(ref) / np.linalg.norm(y)))
    return {"max_abs_diff_vs_onnx": worst, "min_cosine_vs_onnx": worst_cos}


def calibration_set(data_dir: Path, count: int) -> tuple[np.ndarray, list[str]]:
    root = lfw_root(data_dir)
    names = evenly_spaced(lfw_pair_images(root / "pairsDevTrain.txt"), count)
    imgs = np.concatenate([face_crop(root / "lfw-deepfunneled" / n) for n in names])
    return imgs, names


def cmd_convert(a: argparse.Namespace) -> int:
    onnx_in = Path(a.onnx).resolve()
    out = Path(a.out).resolve()
    scratch = Path(a.scratch).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)
    summary: dict = {"source_onnx": {"file": str(onnx_in), "sha256": sha256_file(onnx_in)}}

    plain = scratch / "sface_fp32_opset13.onnx"
    summary["fold"] = make_plain_fp32_onnx(onnx_in, plain)
    cmp = compare_onnx(onnx_in, plain)
    summary["fp32_onnx_vs_original"] = cmp
    log(f"fp32 ONNX vs original: {cmp}")
    if cmp["max_abs_diff"] > a.onnx_tolerance:
        log(f"FAIL: fp32 ONNX differs from the original by {cmp['max_abs_diff']} > {a.onnx_tolerance}")
        return 1

    saved_model = scratch / "saved_model"
    run_onnx2tf(plain, saved_model, scratch)

    built: dict[str, Path] = {}
    # (a) fp32: for comparison only; into out/ only if small enough to ship.
    fp32 = tflite_convert(saved_model, "fp32")
    fp32_path = (out if len(fp32) <= a.max_ship_bytes else scratch) / "sface_fp32.tflite"
    fp32_path.write_bytes(fp32)
    built["fp32"] = fp32_path
    summary["fp32_check"] = check_tflite_against_onnx(fp32, plain)
    log(f"fp32 tflite vs ONNX: {summary['fp32_check']}")
    if summary["fp32_check"]["min_cosine_vs_onnx"] < 0.99999:
        log("FAIL: fp32 tflite does not match the ONNX model")
        return 1

    # (b) dynamic-range int8: no data needed.
    dyn = tflite_convert(saved_model, "dynamic")
    (out / "sface_int8_dynamic.tflite").write_bytes(dyn)
    built["int8_dynamic"] = out / "sface_int8_dynamic.tflite"
    summary["int8_dynamic_check"] = check_tflite_against_onnx(dyn, plain)
    log(f"int8 dynamic vs ONNX: {summary['int8_dynamic_check']}")

    # (c) full int8 with PRELU (and optionally depthwise conv) kept float.
    if a.mixed:
        data_dir = Path(a.data).resolve()
        if not (lfw_root(data_dir) / "pairsDevTrain.txt").exists():
            log(f"FAIL: --mixed needs LFW View 1 under {data_dir} (or pass --no-mixed)")
            return 1
        calib, names = calibration_set(data_dir, a.calib_count)
        summary["calibration"] = {
            "images": len(names),
            "source": "lfw-view1 pairsDevTrain.txt, sorted unique, evenly spaced",
            "list_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest(),
            "data_sha256": hashlib.sha256(calib.tobytes()).hexdigest(),
        }
        deny = [x for x in a.denylist.split(",") if x]
        mixed = tflite_convert(saved_model, "mixed", calib, deny)
        (out / "sface_int8_mixed.tflite").write_bytes(mixed)
        built["int8_mixed"] = out / "sface_int8_mixed.tflite"
        summary["int8_mixed_denylisted_ops"] = deny
        summary["int8_mixed_check"] = check_tflite_against_onnx(mixed, plain)
        log(f"int8 mixed vs ONNX (random inputs): {summary['int8_mixed_check']}")

    summary["models"] = {}
    for k, p in built.items():
        data = p.read_bytes()
        summary["models"][k] = {
            "file": str(p),
            "size_bytes": len(data),
            "sha256": sha256_file(p),
            "ops": tflite_ops(data),
        }
    import onnx
    import onnx2tf
    import onnxruntime
    import tensorflow as tf

    summary["tools"] = {
        "tensorflow": tf.__version__,
        "onnx2tf": onnx2tf.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
    }
    text = json.dumps(summary, indent=2, sort_keys=True)
    if a.summary:
        Path(a.summary).write_text(text + "\n")
    print(text)
    return 0


# --------------------------------------------------------------------------- evaluate (runtime env)


def load_interpreter(path: Path, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - older boxes
        from tflite_runtime.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    return it


def embed(it, x: np.ndarray) -> np.ndarray:
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    it.set_tensor(inp["index"], x)
    it.invoke()
    y = it.get_tensor(out["index"])[0].astype(np.float64)
    return y / np.linalg.norm(y)


def cmd_evaluate(a: argparse.Namespace) -> int:
    root = lfw_root(Path(a.data).resolve())
    fp32_path = Path(a.fp32)
    models = {Path(m).name: Path(m) for m in a.models}
    names = evenly_spaced(lfw_pair_images(root / "pairsDevTest.txt"), a.count)
    crops = [face_crop(root / "lfw-deepfunneled" / n) for n in names]
    report: dict = {"eval_images": len(names), "eval_source": "lfw-view1 pairsDevTest.txt, evenly spaced"}
    ok = True
    ref_it = load_interpreter(fp32_path, 2)
    ref = np.stack([embed(ref_it, c) for c in crops])
    allm = {fp32_path.name: fp32_path, **models}
    for name, p in allm.items():
        r: dict = {"size_bytes": p.stat().st_size, "sha256": sha256_file(p)}
        it = load_interpreter(p, 2)
        inp, out = it.get_input_details()[0], it.get_output_details()[0]
        r["input"] = [list(map(int, inp["shape"])), np.dtype(inp["dtype"]).name]
        r["output"] = [list(map(int, out["shape"])), np.dtype(out["dtype"]).name]
        if r["input"] != [[1, INPUT_SIZE, INPUT_SIZE, 3], "float32"] or r["output"] != [[1, EMBEDDING_SIZE], "float32"]:
            ok = False
        e = np.stack([embed(it, c) for c in crops])
        cos = (e * ref).sum(1)
        r["cosine_to_fp32"] = {
            "min": round(float(cos.min()), 5),
            "mean": round(float(cos.mean()), 5),
            "median": round(float(np.median(cos)), 5),
        }
        if a.lfw_accuracy:
            r["lfw_view1"] = lfw_accuracy(root, load_interpreter(p, 2))
        report[name] = r
    # timing: models interleaved round-robin so that load from other processes hits all alike
    x = crops[0]
    for threads in (1, 2):
        its = {name: load_interpreter(p, threads) for name, p in allm.items()}
        for it in its.values():
            for _ in range(20):
                embed(it, x)
        ts: dict[str, list[float]] = {name: [] for name in its}
        for _ in range(a.runs):
            for name, it in its.items():
                inp = it.get_input_details()[0]
                t0 = time.perf_counter()
                it.set_tensor(inp["index"], x)
                it.invoke()
                ts[name].append((time.perf_counter() - t0) * 1000)
        for name in its:
            report[name][f"ms_median_{threads}thread"] = round(float(np.median(ts[name])), 3)
            report[name][f"ms_p10_{threads}thread"] = round(float(np.percentile(ts[name], 10)), 3)
    with contextlib.suppress(OSError):
        report["load_average"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if a.summary:
        Path(a.summary).write_text(text + "\n")
    print(text)
    return 0 if ok else 1


def lfw_accuracy(root: Path, it) -> dict:
    """Threshold picked on pairsDevTrain, accuracy on pairsDevTest (fixed-transform crops)."""
    cache: dict[str, np.ndarray] = {}

    def emb(n: str) -> np.ndarray:
        if n not in cache:
            cache[n] = embed(it, face_crop(root / "lfw-deepfunneled" / n))
        return cache[n]

    def scores(pairs_file: str):
        pairs = lfw_pairs(root / pairs_file)
        s = np.array([float(emb(x) @ emb(y)) for x, y, _ in pairs])
        lab = np.array([same for _, _, same in pairs])
        return s, lab

    s_tr, l_tr = scores("pairsDevTrain.txt")
    cands = np.unique(s_tr)
    accs = [((s_tr >= t) == l_tr).mean() for t in cands]
    best = float(cands[int(np.argmax(accs))])
    s_te, l_te = scores("pairsDevTest.txt")
    return {
        "threshold": round(best, 4),
        "train_acc": round(float(max(accs)), 4),
        "test_acc": round(float(((s_te >= best) == l_te).mean()), 4),
    }


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parent.parent
    default_data = str(Path(os.environ.get("EDGE_TEST_DATA", repo.parent / "shared" / "data")))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("convert", help="ONNX -> TFLite (build venv)")
    c.add_argument("--onnx", required=True, help="face_recognition_sface_2021dec_int8bq.onnx")
    c.add_argument("--out", default=str(repo / "models"))
    c.add_argument("--scratch", required=True, help="dir for intermediates and the large fp32 model")
    c.add_argument("--data", default=default_data, help="shared data dir holding lfw-view1/ (for --mixed)")
    c.add_argument(
        "--mixed",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also build the calibrated full-int8 (PRELU float) variant",
    )
    c.add_argument(
        "--denylist", default="PRELU,DEPTHWISE_CONV_2D", help="comma-separated TFLite ops kept float in --mixed"
    )
    c.add_argument("--calib-count", type=int, default=200)
    c.add_argument("--max-ship-bytes", type=int, default=20_000_000)
    c.add_argument("--onnx-tolerance", type=float, default=1e-4)
    c.add_argument("--summary", help="write the JSON summary here too")
    c.set_defaults(func=cmd_convert)

    e = sub.add_parser("evaluate", help="check models in the runtime env (ai_edge_litert)")
    e.add_argument("--fp32", required=True)
    e.add_argument("models", nargs="*")
    e.add_argument("--data", default=default_data)
    e.add_argument("--count", type=int, default=50)
    e.add_argument("--runs", type=int, default=200)
    e.add_argument("--lfw-accuracy", action="store_true")
    e.add_argument("--summary")
    e.set_defaults(func=cmd_evaluate)

    a = ap.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
