"""Which arithmetic an inference path runs when the user does not say: the one rule (issue 15).

A reduced-precision path (onnxruntime dynamic int8, torch bf16 autocast) is faster but changes
probabilities. It runs by default only when both hold:

1. **a recorded quality check passed**: on labelled clips, the reduced path agrees with fp32 on the top-1
   label of at least :data:`MIN_TOP1_AGREEMENT` (98 %) of them and moves macro-F1 by at most
   :data:`MAX_MACRO_F1_DELTA` (0.01). A check without labels (macro-F1 unknown) does not pass. No check,
   no reduced default.
2. **this CPU runs that arithmetic natively, as the check's CPU did**: bf16 needs ``avx512_bf16`` /
   ``amx_bf16`` (emulated bf16 ran 15x *slower* than fp32 on an AVX2-only EPYC); onnxruntime's int8
   kernels compute u8 x s8 products, which x86 CPUs without an integer dot-product instruction (VNNI)
   evaluate with a saturating 16-bit intermediate (``vpmaddubsw``), so a check measured with VNNI does not
   vouch for a CPU without it (and the reverse holds too: the arithmetic differs).

Otherwise fp32, with one log line saying why. Where the two cases sit:

- **ONNX export folders** (``backend=onnx``/``auto``, ``precision`` left at ``auto``): ``scripts/export.py
  ... quantize=int8`` measures the int8 graph against the fp32 graph and records the figures in
  ``onnx_config.json`` (``int8_check``); :func:`onnx_default` reads them at load time.
- **torch model folders** (``precision=auto``): they carry no recorded quality check, so ``auto`` runs fp32
  on every device (:func:`torch_auto_precision`). The reason is quality, not only speed: on a trained
  wav2vec2-base-geometry model bf16 autocast agreed with fp32 on 97.96 % of the test clips (below the bar),
  while it was 2x faster on this AVX512-BF16 CPU. ``precision=bf16`` stays available explicitly (with a
  warning where it is emulated); the measured fast path is the gated ONNX export.

The thresholds and the decision live here only; tests/test_precision_rule.py pins them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

MIN_TOP1_AGREEMENT = 0.98
MAX_MACRO_F1_DELTA = 0.01
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# integer dot-product instructions onnxruntime's int8 GEMMs use when present (x86 VNNI, AMX; ARM dot product)
INT_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. macOS, Windows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):  # x86 "flags", ARM "Features"
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16(flags: set[str] | None = None) -> bool:
    """Native bfloat16 arithmetic on this CPU (or on one with ``flags``)."""
    flags = cpu_flags() if flags is None else set(flags)
    if flags:
        return bool(flags & BF16_FLAGS)
    # no /proc/cpuinfo: ask torch's own CPU feature probe
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(c() for c in checks if callable(c))


def cpu_has_int_dot(flags: set[str] | None = None) -> bool:
    """An integer dot-product instruction (VNNI / AMX-INT8 / ARM dot product) on this CPU."""
    return bool((cpu_flags() if flags is None else set(flags)) & INT_DOT_FLAGS)


def check_verdict(check: Mapping[str, Any] | None) -> tuple[bool, str]:
    """Whether a recorded quality check (the ``int8_check`` of an export) passes the bar, and why (one line)."""
    if not check:
        return False, "no quality check recorded (exported without one or by an older version; re-export)"
    if check.get("error"):
        return False, f"the quality check could not run: {check['error']}"
    agree = check.get("top1_agreement")
    delta = check.get("macro_f1_delta")
    n = check.get("clips", "?")
    if agree is None or (isinstance(agree, float) and math.isnan(agree)):
        return False, "the recorded quality check has no top-1 agreement"
    if agree < MIN_TOP1_AGREEMENT:
        return False, (f"top-1 agreement with fp32 {agree:.1%} < {MIN_TOP1_AGREEMENT:.0%} on {n} clips "
                       f"({check.get('source', 'unknown clips')})")
    if delta is None or (isinstance(delta, float) and math.isnan(delta)):
        return False, (f"macro-F1 change unknown (the {n} check clips had no labels); agreement was {agree:.1%}")
    if abs(delta) > MAX_MACRO_F1_DELTA:
        return False, (f"macro-F1 moved by {delta:+.3f} (limit +-{MAX_MACRO_F1_DELTA}) on {n} clips "
                       f"({check.get('source', 'unknown clips')})")
    return True, (f"top-1 agreement {agree:.1%}, macro-F1 {delta:+.3f} on {n} clips "
                  f"({check.get('source', 'unknown clips')})")


def onnx_default(onnx_config: Mapping[str, Any], flags: set[str] | None = None) -> tuple[str, str]:
    """The graph ``precision=auto`` runs for an export folder: ``("int8" | "fp32", reason)``.

    int8 only when the export has an int8 graph, its recorded check passes (:func:`check_verdict`) and this
    CPU has the integer dot-product instructions iff the check's CPU had them."""
    if "int8" not in onnx_config.get("files", {}):
        return "fp32", "the export has no int8 graph"
    check = onnx_config.get("int8_check")
    ok, why = check_verdict(check)
    if not ok:
        return "fp32", f"int8 not used: {why}"
    here = cpu_has_int_dot(flags)
    there = bool(check.get("cpu_int_dot_product"))
    if here != there:
        return "fp32", (f"int8 not used: its check ran on a CPU {'with' if there else 'without'} an integer "
                        f"dot-product instruction (VNNI) and this one is {'with' if here else 'without'}; the "
                        f"int8 products round differently there (re-export on this machine to check it here)")
    return "int8", f"int8 (recorded check passed: {why})"


def torch_auto_precision(kind: str, device_type: str = "cpu", flags: set[str] | None = None,
                         cuda_bf16: bool | None = None, check: Mapping[str, Any] | None = None) -> str:
    """What ``precision="auto"`` runs for a torch model folder: bf16 only where the device computes bf16
    natively **and** a recorded bf16 quality check passed; else fp32. torch folders record no check today,
    so this is fp32 (see the module docstring for why quality, not only speed, decides)."""
    if kind == "classic" or not check_verdict(check)[0]:
        return "fp32"
    if device_type == "cuda":
        native = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
    elif device_type == "cpu":
        native = cpu_has_bf16(flags)
    else:
        native = False
    return "bf16" if native else "fp32"


__all__ = ["BF16_FLAGS", "INT_DOT_FLAGS", "MAX_MACRO_F1_DELTA", "MIN_TOP1_AGREEMENT", "check_verdict", "cpu_flags",
           "cpu_has_bf16", "cpu_has_int_dot", "onnx_default", "torch_auto_precision"]
