#!/usr/bin/env bash
# One short session on a lent GPU machine (see benchmarks/results/gpu.md for what it gave).
#
#   EMODB=path/to/emodb OUT=results_dir [DEADLINE_S=540] [JOBS=16] bash benchmarks/gpu_session.sh
#
# 1. bench_gpu.py: wav2vec2-base-geometry fine-tuning steps and inference, fp32 vs bf16;
# 2. the real recipe on the GPU: accelerate launch --mixed_precision bf16 scripts/finetune.py
#    recipe=wav2vec2_emodb with that (random-weight) model for a few epochs: the GPU path end to end;
# 3. until DEADLINE_S: LOSO of the neural baselines on EmoDB, all folds of all recipes in one queue of
#    JOBS processes sharing the GPU, plus cnn2d_emodb under the leaky random split.
# Finished run folders (without model weights) are packed into $OUT/runs.tgz. Packages the machine lacks
# can travel as wheels in .whl/ (installed to /tmp/site).
set -u
: "${EMODB:?set EMODB to the EmoDB folder}" "${OUT:?set OUT to a results folder}"
DEADLINE_S=${DEADLINE_S:-540}
JOBS=${JOBS:-16}
STAGES=${STAGES:-"1 2 3"}
BENCH_ARGS=${BENCH_ARGS:-}
RECIPES=${RECIPES:-"cnn2d_emodb cnn7_crema cnn2d_crema lstm_ravdess cnn1d_ravdess cnn_lstm_ravdess cnn1d_crema"}
LEAKAGE=${LEAKAGE-cnn2d_emodb}  # LEAKAGE="" runs none
T0=$(date +%s)
left() { echo $(( DEADLINE_S - ($(date +%s) - T0) )); }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export HF_HOME=/tmp/hf SER_HF_CACHE=/tmp/ser_hf TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 2
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
RUNS=/tmp/runs
mkdir -p "$RUNS" "$OUT"

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; free -g | head -2
  python3 -c "
import torch, transformers, datasets, accelerate, peft, librosa, evaluate, hydra, sklearn, pyarrow, soundfile
print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__,
      'datasets', datasets.__version__, 'accelerate', accelerate.__version__, 'peft', peft.__version__,
      'pyarrow', pyarrow.__version__, 'librosa', librosa.__version__)
import ser_hf.experiment, ser_hf.models.transformer"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
grep -q "cuda True" "$OUT/env.txt" || { echo "environment check failed"; exit 3; }

# Fill the decoded-corpus cache once, before anything runs in parallel.
python3 -c "
from ser_hf.data import load_corpus
print(load_corpus('emodb', '$EMODB', split='speaker', sampling_rate=16000))" >> "$OUT/env.txt" 2>&1 \
  || { tail -30 "$OUT/env.txt"; exit 4; }

if [[ " $STAGES " == *" 1 "* ]]; then
echo "== stage 1 ($(left) s left)"
# shellcheck disable=SC2086
timeout 150 python3 benchmarks/bench_gpu.py --data-dir "$EMODB" --out "$OUT/gpu.md" \
  --save-model /tmp/w2v2_base_random $BENCH_ARGS > "$OUT/stage1.log" 2>&1
echo "exit $?"; tail -5 "$OUT/stage1.log"
fi

if [[ " $STAGES " == *" 2 "* ]] && [ -d /tmp/w2v2_base_random ]; then
echo "== stage 2 ($(left) s left)"
  timeout 150 python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 \
    --dynamo_backend no scripts/finetune.py recipe=wav2vec2_emodb "data.data_dir=$EMODB" \
    model.name_or_path=/tmp/w2v2_base_random trainer.max_epochs=3 trainer.early_stopping_patience=null \
    trainer.mixed_precision=bf16 trainer.progress_bar=false "output_dir=$RUNS/wav2vec2_emodb_gpu" \
    > "$OUT/stage2.log" 2>&1
  echo "exit $?"; tail -3 "$OUT/stage2.log"
fi

if [[ " $STAGES " == *" 3 "* ]]; then
echo "== stage 3 ($(left) s left)"
# shellcheck disable=SC2086
OMP_NUM_THREADS=1 timeout $(( $(left) - 25 )) python3 benchmarks/emodb_loso.py --data-dir "$EMODB" \
  --runs "$RUNS/emodb_loso" --out "$OUT/emodb_loso_gpu.md" --jobs "$JOBS" \
  --leakage $LEAKAGE --recipes $RECIPES > "$OUT/stage3.log" 2>&1
echo "exit $?"; tail -12 "$OUT/stage3.log"
fi

tar czf "$OUT/runs.tgz" --exclude=model --exclude=checkpoints --exclude='*.safetensors' --exclude='events.out.*' --exclude='*.png' \
  -C /tmp runs
ls -la "$OUT"
