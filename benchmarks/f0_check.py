"""Does F0 help the stats recipes? EmoDB LOSO of each recipe with ``features.f0`` false and true.

For each recipe, the features of all EmoDB clips are computed once per F0 setting (the recipe's own
FeatureConfig through ``compute_features``; per-speaker normalisation, when the recipe has it, uses each
speaker's own clips, so computing it over the whole corpus gives the same numbers as per fold), then each
of the 10 leave-one-speaker-out folds fits the recipe's own ``ClassicClassifier`` (with its nested
speaker-grouped search, if any) on the other nine speakers, as ``scripts/crossval.py`` does for classic
recipes (they train on train+validation speakers). The recipe's as-written setting must reproduce its
``crossval.py`` LOSO number, which the output shows beside it as a check.

    OMP_NUM_THREADS=2 python benchmarks/f0_check.py [--data-dir ../shared/data/emodb] [--recipes svm_stats_emodb ...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import datasets

    from ser_hf.config import load_config, section
    from ser_hf.data.builders import BUILDERS
    from ser_hf.features import FeatureConfig, compute_features
    from ser_hf.metrics import compute_metrics
    from ser_hf.models.classic import ClassicClassifier

    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "emodb")
    p.add_argument("--recipes", nargs="+", default=["svm_stats_emodb", "svm_stats_spknorm_emodb"])
    a = p.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        builder = BUILDERS["emodb"](data_dir=a.data_dir, cache_dir=f"{tmp}/b")
        builder.download_and_prepare()
        raw = builder.as_dataset(split="train")
        names = raw.features["label"].names
        print("| recipe | f0 | as written | LOSO macro-F1 (mean ± std, 10 folds) | pooled macro-F1 | extraction s |")
        print("|---|---|---|---|---|---|")
        for recipe in a.recipes:
            cfg = load_config([f"recipe={recipe}"])
            fdict = {"sampling_rate": int(cfg.data.sampling_rate), **section(cfg, "features")}
            written = FeatureConfig.from_dict(fdict).f0
            model = dict(section(cfg, "model"))
            model.pop("family"), model.pop("train_on_validation", None)
            classifier = model.pop("classifier", "svm")
            for f0 in (False, True):
                t = time.perf_counter()
                feats = compute_features(raw, FeatureConfig.from_dict({**fdict, "f0": f0}))
                x = np.asarray(feats.with_format("numpy")["features"][:], dtype=np.float32)
                seconds = time.perf_counter() - t
                y, spk = np.asarray(feats["label"]), np.asarray(feats["speaker_id"])
                pred, f1s = np.empty_like(y), []
                for s in sorted(set(spk)):
                    test = spk == s
                    clf = ClassicClassifier(classifier, id2label=names, **model)
                    clf.fit(x[~test], y[~test], groups=spk[~test])
                    pred[test] = clf.predict(x[test])
                    f1s.append(compute_metrics(y[test], pred[test], names)["macro_f1"])
                pooled = compute_metrics(y, pred, names)["macro_f1"]
                print(f"| `{recipe}` | {f0} | {'yes' if f0 == written else 'no'} | {statistics.mean(f1s):.3f} ± "
                      f"{statistics.stdev(f1s):.3f} | {pooled:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
