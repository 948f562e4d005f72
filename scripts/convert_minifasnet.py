#!/usr/bin/env python3
"""Convert Minivision's MiniFASNet anti-spoofing models (ONNX, Apache-2.0) to TFLite for edge's liveness stage.

Run in the throwaway build venv made by scripts/build_model.sh (needs onnx, onnxruntime, onnx2tf, tensorflow,
opencv, PyYAML; edge itself is imported from this repo for the detector and the crop):

    python scripts/convert_minifasnet.py --src ../shared/models/minifasnet --out models --scratch /tmp/x

For each model: the source ONNX is checked against its pinned sha256; onnx2tf makes a SavedModel (NHWC input
[1,80,80,3] float32, BGR 0..255 as is); tf.lite.TFLiteConverter makes the fp32 .tflite shipped in --out (an fp16
one is made in --scratch for comparison only: on a CPU it is expanded back to fp32 at load, so it saves 0.8 MB of
disk and nothing else). Each .tflite is then checked against the ONNX model with onnxruntime: logits on seeded
random inputs, and p_real on the context crops of the three sample images (../shared/data/liveness, faces found by
edge's own detector) — per model and fused. The summary (JSON) holds the numbers the manifest records.

Trap: onnx2tf runs onnxsim on its input and WRITES THE SIMPLIFIED MODEL BACK OVER THE INPUT FILE (as root even a
read-only file): it is only ever given a sha256-checked copy in --scratch, and the sources are checked again at the end.

Deterministic (fixed seeds, fixed inputs): a rebuild gives byte-identical files, checked by sha256 by the caller.
Nothing here touches the network (onnx2tf's calibration sample file is made locally).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# (source file, its sha256, shipped file, crop scale): the order is the manifest's and the fusion's.
MODELS: Tuple[Tuple[str, str, str, float], ...] = (
    (
        "MiniFASNetV2.onnx",
        "4eed38f0bde33c9b805942a5f25e42ce1161e2bda545254be622be957727794e",
        "minifasnet_v2.tflite",
        2.7,
    ),
    (
        "MiniFASNetV1SE.onnx",
        "d819a69bac6b9ade2a0f4d9b60b618e1260f7bf3ba1fddff6c5d82131cb1083f",
        "minifasnet_v1se.tflite",
        4.0,
    ),
)
SAMPLES = (("image_F1.jpg", "spoof"), ("image_F2.jpg", "spoof"), ("image_T1.jpg", "real"))
SIZE = 80
CALIB_FILE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"


def log(msg: str) -> None:
    print(f"[convert_minifasnet] {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def run_onnx2tf(onnx_path: Path, saved_model: Path, workdir: Path) -> None:
    # onnx2tf downloads this file when it is missing from the working directory: make a deterministic one.
    rng = np.random.default_rng(20211201)
    np.save(workdir / CALIB_FILE_NAME, rng.random((20, 128, 128, 3), dtype=np.float32))
    exe = Path(sys.executable).parent / "onnx2tf"
    cmd = [str(exe) if exe.exists() else "onnx2tf", "-i", str(onnx_path), "-o", str(saved_model), "-osd", "-n"]
    log("running " + " ".join(cmd))
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    subprocess.run(cmd, cwd=workdir, check=True, env=env, stdout=subprocess.DEVNULL)
    if not (saved_model / "saved_model.pb").exists():
        raise RuntimeError("onnx2tf made no SavedModel")


def tflite_convert(saved_model: Path, fp16: bool) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if fp16:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    return bytes(conv.convert())


class TFLiteNet:
    def __init__(self, model_bytes: bytes) -> None:
        import tensorflow as tf

        self.it = tf.lite.Interpreter(model_content=model_bytes, num_threads=1)
        self.it.allocate_tensors()
        self.inp = self.it.get_input_details()[0]
        self.out = self.it.get_output_details()[0]
        if list(self.inp["shape"]) != [1, SIZE, SIZE, 3] or list(self.out["shape"]) != [1, 3]:
            raise RuntimeError(f"bad shapes: input {self.inp['shape']}, output {self.out['shape']}")

    def logits(self, nhwc: np.ndarray) -> np.ndarray:
        self.it.set_tensor(self.inp["index"], nhwc)
        self.it.invoke()
        return np.asarray(self.it.get_tensor(self.out["index"])[0], dtype=np.float64)


class OnnxNet:
    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self.sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name

    def logits(self, nhwc: np.ndarray) -> np.ndarray:
        nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))
        return np.asarray(self.sess.run(None, {self.name: nchw})[0][0], dtype=np.float64)


def sample_crops(data_dir: Path) -> Dict[str, Dict[float, np.ndarray]]:
    """Context crops (NHWC float32 BGR 0..255) of the best face of each sample, per crop scale."""
    import cv2

    from edge.detect import DetectorConfig, FaceDetector
    from edge.liveness.crop import context_crop

    out: Dict[str, Dict[float, np.ndarray]] = {}
    with FaceDetector(DetectorConfig(num_threads=1)) as detector:
        for name, _ in SAMPLES:
            image = cv2.imread(str(data_dir / name), cv2.IMREAD_COLOR)
            if image is None:
                raise FileNotFoundError(data_dir / name)
            faces = detector.detect(image)
            if not faces:
                raise RuntimeError(f"no face found in {name}")
            box = faces[0].box
            out[name] = {
                scale: context_crop(image, box, scale, SIZE).astype(np.float32)[None] for _, _, _, scale in MODELS
            }
    return out


def compare(onnx_net: OnnxNet, net: TFLiteNet, crops: Dict[str, np.ndarray], seed: int = 99) -> dict:
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(8):
        x = rng.uniform(0, 255, size=(1, SIZE, SIZE, 3)).astype(np.float32)
        worst = max(worst, float(np.abs(onnx_net.logits(x) - net.logits(x)).max()))
    samples = {}
    for name, crop in crops.items():
        ref, got = softmax(onnx_net.logits(crop))[1], softmax(net.logits(crop))[1]
        samples[name] = {"p_real_onnx": round(float(ref), 6), "p_real_tflite": round(float(got), 6)}
    delta = max(abs(s["p_real_onnx"] - s["p_real_tflite"]) for s in samples.values())
    return {"max_abs_logit_diff_random": worst, "max_abs_p_real_diff_samples": round(delta, 6), "samples": samples}


def main(argv: List[str] | None = None) -> int:
    default_data = Path(os.environ.get("EDGE_TEST_DATA", REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(REPO.parent / "shared" / "models" / "minifasnet"), help="folder of the ONNX")
    ap.add_argument("--out", default=str(REPO / "models"), help="where the shipped .tflite files go")
    ap.add_argument("--scratch", required=True, help="dir for SavedModels and the fp16 comparison files")
    ap.add_argument("--data", default=str(default_data), help="shared data dir holding liveness/image_*.jpg")
    ap.add_argument("--summary", help="write the JSON summary here too")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="largest |p_real| difference to the ONNX allowed")
    a = ap.parse_args(argv)
    src, out, scratch = Path(a.src).resolve(), Path(a.out).resolve(), Path(a.scratch).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scratch.mkdir(parents=True, exist_ok=True)

    summary: dict = {"models": {}}
    crops_by_sample = sample_crops(Path(a.data).resolve() / "liveness")
    fused: Dict[str, Dict[str, List[float]]] = {name: {"onnx": [], "tflite": []} for name, _ in SAMPLES}
    status = 0
    for source, want_sha, shipped, scale in MODELS:
        onnx_path = src / source
        got_sha = sha256_file(onnx_path)
        if got_sha != want_sha:
            log(f"FAIL: {onnx_path} sha256 {got_sha} != pinned {want_sha}")
            return 1
        copy = scratch / source  # onnx2tf overwrites its input: never hand it the source
        shutil.copyfile(onnx_path, copy)
        if sha256_file(copy) != want_sha:
            log(f"FAIL: the copy {copy} is not the pinned file")
            return 1
        saved_model = scratch / f"saved_model_{Path(source).stem}"
        run_onnx2tf(copy, saved_model, scratch)
        onnx_net = OnnxNet(onnx_path)
        crops = {name: per_scale[scale] for name, per_scale in crops_by_sample.items()}
        entry: dict = {"source": source, "source_sha256": got_sha, "crop_scale": scale}
        for kind, fp16, where in (("fp32", False, out), ("fp16", True, scratch)):
            data = tflite_convert(saved_model, fp16)
            path = where / (shipped if kind == "fp32" else shipped.replace(".tflite", "_fp16.tflite"))
            path.write_bytes(data)
            check = compare(onnx_net, TFLiteNet(data), crops)
            entry[kind] = {"file": str(path), "sha256": sha256_file(path), "size_bytes": len(data), "check": check}
            log(f"{path.name}: {check['max_abs_logit_diff_random']:.2e} logits, {check['max_abs_p_real_diff_samples']}")
            if kind == "fp32":
                for name, s in check["samples"].items():
                    fused[name]["onnx"].append(s["p_real_onnx"])
                    fused[name]["tflite"].append(s["p_real_tflite"])
                if check["max_abs_p_real_diff_samples"] > a.tolerance:
                    log(f"FAIL: {path.name} p_real differs from the ONNX by more than {a.tolerance}")
                    status = 1
        summary["models"][shipped] = entry
    for source, want_sha, _, _ in MODELS:
        if sha256_file(src / source) != want_sha:
            log(f"FAIL: {src / source} changed during the conversion")
            return 1
    summary["fused_samples"] = {
        name: {
            "label": label,
            "p_real_onnx": round(float(np.mean(fused[name]["onnx"])), 6),
            "p_real_tflite": round(float(np.mean(fused[name]["tflite"])), 6),
        }
        for name, label in SAMPLES
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
    return status


if __name__ == "__main__":
    sys.exit(main())
