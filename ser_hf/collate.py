"""Batching per-clip features of varied length (every baseline family's collate).

Corpora whose clips differ in length (CREMA-D, real EmoDB, user folders) give whole-clip feature maps of
different widths; the baselines take a right-padded batch plus a ``(B, T)`` attention mask over time (their
pooling and packing skip the padding). Equal lengths batch without a mask, exactly as before.
"""

from __future__ import annotations


def pad_features(feats, clip_ids, files=None):
    """Stack per-clip features of varied length: right-pad the time axis (axis 0 of ``(T, D)`` frames, the last
    of ``(C, F, T)`` maps) with zeros, and return ``(batch, attention_mask (B, T) or None)``. The mask is None
    when every length is equal, so equal-length corpora train exactly as before. Any other axis that differs
    is an error naming the clip."""
    import torch

    first = feats[0]
    t_axis = {2: 0, 3: 2}.get(first.ndim)

    def clip_name(i):
        f = files.get(clip_ids[i]) if files is not None else None
        return f"clip {f!r}" if f else f"clip id {clip_ids[i]}"

    for i, f in enumerate(feats):
        same = f.ndim == first.ndim and all(a == b for k, (a, b) in enumerate(zip(f.shape, first.shape))
                                            if k != t_axis)
        if not same:
            raise ValueError(f"{clip_name(i)} has features of shape {tuple(f.shape)} but {clip_name(0)} has "
                             f"{tuple(first.shape)} in the same batch; only the time axis may differ")
    if t_axis is None:
        return torch.stack(feats).float(), None
    lengths = [int(f.shape[t_axis]) for f in feats]
    if len(set(lengths)) == 1:
        return torch.stack(feats).float(), None
    longest = max(lengths)
    out = torch.zeros((len(feats), *first.shape[:t_axis], longest, *first.shape[t_axis + 1:]), dtype=torch.float32)
    mask = torch.zeros((len(feats), longest), dtype=torch.long)
    for i, (f, n) in enumerate(zip(feats, lengths)):
        out[i].narrow(t_axis, 0, n).copy_(f)
        mask[i, :n] = 1
    return out, mask
