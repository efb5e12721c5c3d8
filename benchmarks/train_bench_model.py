"""A trained wav2vec2-base-geometry classifier for the inference benchmark (issue 15), in ~5 CPU minutes.

No pretrained wav2vec2-base is reachable here, so the encoder is ``build_model()``'s random wav2vec2-base
geometry (12 layers, hidden 768, seed 0) and only the head learns - with transformers' own
``use_weighted_layer_sum=True`` (a softmax-weighted sum of the 13 hidden-state layers), then the usual
projector (768 -> 256), mean pooling over time and classifier. Every step of that head is linear before the
classifier, so mean pooling commutes with it: the encoder runs **once** per clip (per-layer mean-pooled
hidden states are cached) and the head trains on the cache in seconds, exactly as it would inside the model.
The saved model is checked against the cache (same probabilities) on a few clips.

Split: EmoDB speaker split (``ser_hf.data.splits.speaker_split``: test 12, 14, 15, 16; validation from
the training side); the best step by validation macro-F1 is kept. The output is a run folder (``config.yaml``
naming the data, ``predictions.csv`` with validation and test rows, ``metrics.json``, ``model/``) so that
``scripts/export.py model=OUT/model quantize=int8`` finds the test split for its int8 quality check.

    python benchmarks/train_bench_model.py --data-dir ../shared/data/emodb --out runs/w2v2_base_bench
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SR = 16000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))

    import torch
    from omegaconf import OmegaConf
    from sklearn.metrics import f1_score
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    from ser_hf.data.audio import decode_audio
    from ser_hf.data.labels import EMODB_CODES, EMODB_LABELS
    from ser_hf.data.splits import speaker_split
    from ser_hf.inference import load_for_inference
    from ser_hf.reporting import write_predictions

    t_start = time.perf_counter()
    labels = list(EMODB_LABELS)
    files = sorted((args.data_dir / "wav").glob("*.wav"))
    if not files:
        raise SystemExit(f"no wav/*.wav under {args.data_dir}")
    speakers = [f.name[:2] for f in files]
    split = speaker_split("emodb", sorted(set(speakers)))
    side = {s: name for name, ss in split.items() for s in ss}
    y = np.array([labels.index(EMODB_CODES[f.name[5]]) for f in files])

    torch.manual_seed(0)
    config = Wav2Vec2Config(num_labels=len(labels), id2label=dict(enumerate(labels)),
                            label2id={n: i for i, n in enumerate(labels)}, use_weighted_layer_sum=True)
    model = Wav2Vec2ForSequenceClassification(config).eval()
    fe = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SR, padding_value=0.0, do_normalize=True,
                                  return_attention_mask=False)

    # one encoder pass: per-layer mean-pooled hidden states (clips of equal length batch without padding)
    arrays = [decode_audio(f, SR) for f in files]
    pooled = np.zeros((len(files), config.num_hidden_layers + 1, config.hidden_size), np.float32)
    order = sorted(range(len(files)), key=lambda i: len(arrays[i]))
    with torch.inference_mode():
        i = 0
        while i < len(order):
            n = len(arrays[order[i]])
            batch = [j for j in order[i:i + args.batch_size] if len(arrays[j]) == n]
            x = fe([arrays[j] for j in batch], sampling_rate=SR, return_tensors="pt").input_values
            hs = model.wav2vec2(x, output_hidden_states=True).hidden_states
            pooled[batch] = torch.stack(hs, dim=1).mean(dim=2).numpy()
            i += len(batch)
    encode_s = time.perf_counter() - t_start
    print(f"encoded {len(files)} clips in {encode_s:.0f} s", flush=True)

    # the head, trained on the cache: softmax layer weights -> projector -> (mean pool) -> classifier
    idx = {name: np.array([k for k, s in enumerate(speakers) if side.get(s) == name]) for name in split}
    feats = torch.from_numpy(pooled)
    target = torch.from_numpy(y)
    head = torch.nn.ModuleDict({"projector": torch.nn.Linear(config.hidden_size, config.classifier_proj_size),
                                "classifier": torch.nn.Linear(config.classifier_proj_size, len(labels))})
    head.load_state_dict({"projector.weight": model.projector.weight, "projector.bias": model.projector.bias,
                          "classifier.weight": model.classifier.weight, "classifier.bias": model.classifier.bias})
    layer_w = torch.nn.Parameter(model.layer_weights.detach().clone())
    params = [layer_w, *head.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    counts = np.bincount(y[idx["train"]], minlength=len(labels))
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(len(y[idx["train"]]) / (len(labels) * np.maximum(counts, 1)),
                                                            dtype=torch.float32))

    def logits(rows):
        h = (torch.softmax(layer_w, 0)[None, :, None] * feats[rows]).sum(1)
        return head["classifier"](head["projector"](h))

    def macro_f1(rows):
        with torch.no_grad():
            pred = logits(torch.from_numpy(rows)).argmax(1).numpy()
        return f1_score(y[rows], pred, labels=range(len(labels)), average="macro", zero_division=0)

    rng = np.random.default_rng(0)
    best = (-1.0, 0, None)
    history = []
    for step in range(1, args.steps + 1):
        rows = torch.from_numpy(rng.choice(idx["train"], size=min(64, len(idx["train"])), replace=False))
        loss = loss_fn(logits(rows), target[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            val = macro_f1(idx["validation"])
            history.append({"step": step, "loss": float(loss.detach()), "val_macro_f1": float(val)})
            if val > best[0]:
                best = (val, step, ({k: v.detach().clone() for k, v in head.state_dict().items()},
                                    layer_w.detach().clone()))
    state, lw = best[2]
    head.load_state_dict(state)
    layer_w.data.copy_(lw)
    test_f1 = macro_f1(idx["test"])
    print(f"best validation macro-F1 {best[0]:.3f} at step {best[1]}; test macro-F1 {test_f1:.3f}", flush=True)

    with torch.no_grad():
        model.layer_weights.copy_(layer_w)
        model.projector.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("projector")})
        model.classifier.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("classifier")})
        probs = torch.softmax(logits(torch.arange(len(files))), 1).numpy()
    out = args.out
    (out / "model").mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out / "model")
    fe.save_pretrained(out / "model")
    # the saved model gives the cached computation's probabilities (mean pooling commutes with the head)
    check = idx["test"][:6]
    got = load_for_inference(out / "model", device="cpu").predict_arrays([arrays[k] for k in check], SR)
    diff = max(abs(r["scores"][lab] - probs[k, j]) for r, k in zip(got, check) for j, lab in enumerate(labels))
    if diff > 1e-4:
        raise SystemExit(f"saved model differs from the cached head by {diff:.1e}")

    rows = []
    for name in ("validation", "test"):
        for k in idx[name]:
            rows.append({"split": name, "corpus": "emodb", "file": f"wav/{files[k].name}", "speaker_id": speakers[k],
                         "label": labels[y[k]], "prediction": labels[int(probs[k].argmax())],
                         **{f"prob_{lab}": float(probs[k, j]) for j, lab in enumerate(labels)}})
    write_predictions(out / "predictions.csv", rows, label_names=labels)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({
        "recipe": "bench_w2v2_base_head (benchmarks/train_bench_model.py)",
        "data": {"corpus": "emodb", "data_dir": str(args.data_dir.resolve()), "split": "speaker", "synthetic": None},
        "train": {"steps": args.steps, "lr": args.lr, "weight_decay": args.weight_decay, "batch": 64,
                  "encoder": "random wav2vec2-base geometry, seed 0, frozen", "head": "use_weighted_layer_sum"}})))
    acc = float(np.mean(probs[idx["test"]].argmax(1) == y[idx["test"]]))
    (out / "metrics.json").write_text(json.dumps({
        "recipe": "bench_w2v2_base_head", "corpus": "emodb", "split": "speaker", "fold": None, "seed": 0,
        "speakers": split, "label_names": labels, "test": {"macro_f1": float(test_f1), "accuracy": acc, "uar": None},
        "validation": {"macro_f1": float(best[0]), "best_step": best[1]}, "history": history,
        "encode_s": encode_s, "total_s": time.perf_counter() - t_start, "saved_vs_cache_max_abs_diff": float(diff)},
        indent=2) + "\n")
    print(f"wrote {out} in {time.perf_counter() - t_start:.0f} s (saved vs cached max |diff| {diff:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
