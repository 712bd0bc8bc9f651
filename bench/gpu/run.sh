#!/usr/bin/env bash
# Issue 5's GPU benchmarks in one call on the device machine (benchmarks 4, 1, 3 and 5 with bf16/fp16
# autocast), from the kit of bench/gpu/make_kit.sh. Results and logs go to $OUT (the device tool's
# folder) or, elsewhere, to bench/results/gpu-rehearsal. From this machine:
#   run(command="bash bench/gpu/run.sh", carry=[".gpu-kit"], timeout_s=540)
# A rehearsal here on the CPU, on part of the data: DEVICE=cpu LIMIT=200 SECONDS_PER_LEVEL=3 bash bench/gpu/run.sh
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
KIT=${KIT:-.gpu-kit}
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-}
SECONDS_PER_LEVEL=${SECONDS_PER_LEVEL:-10}
RESULTS=${OUT:-bench/results/gpu-rehearsal}
PYTHON=${PYTHON:-python3}
mkdir -p "$RESULTS"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

step() { echo "== $(date -u +%H:%M:%S) $*"; }
if [[ ! -d $KIT/wheels ]]; then echo "no $KIT: run bash bench/gpu/make_kit.sh and carry it" >&2; exit 2; fi
step "packages"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/hfsm-site \
  "$KIT"/wheels/*.whl || exit 2
export PYTHONPATH=$PWD/src:/tmp/hfsm-site${PYTHONPATH:+:$PYTHONPATH}
{ nvidia-smi -L 2>/dev/null || true; "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__,
'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$RESULTS/device.txt"
"$PYTHON" bench/gpu/half_model.py unpack "$KIT/minilm-fp16" /tmp/minilm || exit 2
limit=(); [[ -n $LIMIT ]] && limit=(--limit "$LIMIT")
status=0

step "4. training, ours and the run_ner.py recipe, bf16"
"$PYTHON" bench/train_throughput.py --device "$DEVICE" --mixed-precision bf16 --model /tmp/minilm \
  --data "$KIT/data/conll2003" --work /tmp/hfsm-train "${limit[@]}" \
  --output "$RESULTS/train_throughput_bf16.json" 2>&1 | tee "$RESULTS/train.log" | grep -v "it/s]" || status=1
MODEL=/tmp/hfsm-train/ours/model
if [[ ! -f $MODEL/config.json ]]; then echo "no trained model at $MODEL: see train.log" >&2; exit 1; fi

step "1. NER inference: our server fp32/bf16/fp16 against the pipeline (fp32 and float16 weights)"
"$PYTHON" bench/ner_inference.py --device "$DEVICE" --model "$MODEL" --data "$KIT/data/conll2003/dev.csv" \
  "${limit[@]}" --output "$RESULTS/ner_inference.json" 2>&1 | tee "$RESULTS/ner.log" | grep -v "it/s]" || status=1

step "3 and 5. endpoint latency at concurrency 1 and 8, and cold starts, bf16 autocast"
"$PYTHON" bench/endpoint.py --device "$DEVICE" --autocast bf16 --model "$MODEL" \
  --data "$KIT/data/conll2003/dev.csv" --seconds "$SECONDS_PER_LEVEL" --starts 3 \
  --output "$RESULTS/endpoint_bf16.json" 2>&1 | tee "$RESULTS/endpoint.log" | grep -v "it/s]" || status=1
step "done (status $status)"
exit $status
