"""What the model's scores and decisions looked like on its own validation films: the reference a clinic's
films are compared with.

``convert`` (``convert.pipeline``) stores, for each artifact, a compact summary of its calibrated scores on the
validation films of the training run (the films its operating point was fitted on; the training films
themselves are not used: the model has fitted them, so their scores are over-confident) as
``metadata.reference``:

    {"source": "validation films", "n": 206, "bins": 20,
     "per_class": {true class: {"n": films, "hist": {score class: [counts in 20 equal bins of [0, 1]]}}},
     "decisions": {"normal": 80, "pneumonia": 60, "tuberculosis": 40, "refer": 26}}

``decisions`` counts the decisions of the artifact's own operating point on those films (all in scope).
Two readers: ``benchmarks.validate`` (local score distributions against these, with a binned two-sample
Kolmogorov-Smirnov distance per class) and the device's drift view (the rolling decision mix against
``decisions``, by a chi-square test of homogeneity). Numpy and ``math`` only: it runs on the device.
"""
from __future__ import annotations

import math

import numpy as np

BINS = 20
SOURCE = "validation films"
KS_C95 = 1.358  # two-sample KS critical constant at the 5% level: D > c * sqrt((n + m) / (n * m))


def histogram(scores: np.ndarray, bins: int = BINS) -> list[int]:
    """Counts of ``scores`` in ``bins`` equal bins of [0, 1] (1.0 falls in the last bin)."""
    s = np.clip(np.asarray(scores, np.float64).reshape(-1), 0.0, 1.0)
    return np.histogram(s, bins=bins, range=(0.0, 1.0))[0].astype(int).tolist()


def summarize(y: np.ndarray, cal: np.ndarray, labels, decisions=None, bins: int = BINS) -> dict:
    """The reference summary of calibrated probabilities ``cal`` (N, K) of films of true classes ``y``;
    ``decisions`` (N labels or "refer"), when given, are counted."""
    y, cal = np.asarray(y, int), np.asarray(cal, np.float64)
    labels = list(labels)
    per = {}
    for i, lab in enumerate(labels):
        m = y == i
        per[lab] = {"n": int(m.sum()), "hist": {s: histogram(cal[m, j], bins) for j, s in enumerate(labels)}}
    out = {"source": SOURCE, "n": int(len(y)), "bins": int(bins), "per_class": per}
    if decisions is not None:
        d, c = np.unique(np.asarray(decisions).astype(str), return_counts=True)
        out["decisions"] = {str(k): int(v) for k, v in zip(d, c)}
    return out


def ks_binned(scores: np.ndarray, ref_counts, bins: int | None = None) -> dict:
    """Two-sample KS distance between local ``scores`` and a stored histogram, on the histogram's bin edges
    (binning can only shrink the distance, so the test is conservative), with the 5% critical value.
    ``{"d", "n", "n_ref", "critical", "differs"}``; ``d`` is None when either side is empty."""
    ref = np.asarray(ref_counts, np.float64)
    bins = bins or len(ref)
    loc = np.asarray(histogram(scores, bins), np.float64)
    n, m = int(loc.sum()), int(ref.sum())
    if not n or not m:
        return {"d": None, "n": n, "n_ref": m, "critical": None, "differs": None}
    d = float(np.abs(np.cumsum(loc) / n - np.cumsum(ref) / m).max())
    crit = KS_C95 * math.sqrt((n + m) / (n * m))
    return {"d": d, "n": n, "n_ref": m, "critical": crit, "differs": d > crit}


def compare(y: np.ndarray, cal: np.ndarray, labels, reference: dict) -> dict:
    """Per true class present on both sides, per score class: ``ks_binned`` of the local calibrated scores
    against the reference histogram. Empty when the bundle carries no reference."""
    if not reference or "per_class" not in reference:
        return {}
    y, cal = np.asarray(y, int), np.asarray(cal, np.float64)
    out = {}
    for i, lab in enumerate(labels):
        ref = reference["per_class"].get(lab)
        if not ref or not ref.get("n") or not (y == i).any():
            continue
        out[lab] = {s: ks_binned(cal[y == i, j], ref["hist"][s], reference.get("bins"))
                    for j, s in enumerate(labels) if s in ref["hist"]}
    return out


# ----------------------------------------------------------------------------- decision mix
def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with ``df`` degrees of freedom > x), exact for integer df (no scipy on the device)."""
    if df < 1:
        return 1.0
    if x <= 0:
        return 1.0
    h = x / 2
    if df % 2 == 0:
        return min(1.0, math.exp(-h) * sum(h ** i / math.factorial(i) for i in range(df // 2)))
    s = math.erfc(math.sqrt(h))
    s += sum(math.exp((i - 0.5) * math.log(h) - h - math.lgamma(i + 0.5)) for i in range(1, (df - 1) // 2 + 1))
    return min(1.0, s)


def mix_test(now: dict, ref: dict) -> dict:
    """Chi-square test of homogeneity (2 x k) between decision counts ``now`` and ``ref``: does the recent mix
    differ from the reference by more than chance (both samples' noise counted)? Categories absent on both
    sides are dropped. ``{"chi2", "df", "p", "shares", "ref_shares"}``."""
    cats = [c for c in sorted(set(now) | set(ref)) if now.get(c, 0) + ref.get(c, 0) > 0]
    a = np.array([[now.get(c, 0) for c in cats], [ref.get(c, 0) for c in cats]], np.float64)
    n, m = a.sum(1)
    out = {"shares": {c: (now.get(c, 0) / n if n else None) for c in cats},
           "ref_shares": {c: (ref.get(c, 0) / m if m else None) for c in cats}, "n": int(n), "n_ref": int(m)}
    if not n or not m or len(cats) < 2:
        return {**out, "chi2": 0.0, "df": 0, "p": 1.0}
    expected = np.outer(a.sum(1), a.sum(0)) / a.sum()
    chi2 = float(((a - expected) ** 2 / expected).sum())
    df = len(cats) - 1
    return {**out, "chi2": chi2, "df": df, "p": chi2_sf(chi2, df)}
