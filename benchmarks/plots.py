"""Plots of a benchmark run: a confusion matrix per format, one-vs-rest ROC curves of every format, and a
latency/accuracy chart. Needs matplotlib (the workstation extra); the report notes it when absent."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime import metrics as M
from edge_runtime.operating_point import calibrate


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion(plt, key: str, y, probs, labels, path: Path) -> Path:
    cm = M.confusion_matrix(y, probs.argmax(1), len(labels))
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{key} (n={len(y)})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def roc(plt, y, probs: dict, labels, path: Path) -> Path:
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 4.0), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], labels)):
        yy = y == i
        if yy.any() and (~yy).any():
            for key, p in probs.items():
                fpr, tpr, _ = M.roc_curve(yy, p[:, i])
                ax.plot(fpr, tpr, lw=1.2, label=f"{key} {M.binary_auc(yy, p[:, i]):.3f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{name} vs rest")
        ax.set_xlabel("1 - specificity")
        ax.set_ylabel("sensitivity")
        if ax.lines[:-1]:
            ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def latency_accuracy(plt, rows: list[dict], threads: list[int], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        lat = [r.get(f"p50_ms_{t}t") for t in threads if r.get(f"p50_ms_{t}t")]
        if not lat or r.get("macro_f1") is None:
            continue
        x, y = min(lat), r["macro_f1"]
        ax.scatter([x], [y], s=30 + 20 * (r.get("size_mb") or 0), alpha=0.7,
                   marker="s" if r["int8"] else "o", color="tab:red" if r["status"] != "ok" else None)
        ax.annotate(r["format"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("p50 latency, batch 1, best thread count (ms, log scale)")
    ax.set_ylabel("macro-F1")
    ax.set_title("latency vs accuracy (square: INT8, size ~ file MB, red: failed/flagged)")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_all(result: dict, probs: dict, ev, folder: Path) -> list[Path]:
    plt = _plt()
    folder.mkdir(parents=True, exist_ok=True)
    labels = result["model"]["labels"]
    t = result["model"].get("temperature", 1.0)
    own = {r["format"]: r["temperature"] for r in result["rows"] if "temperature" in r}  # per artifact
    cal = {k: calibrate(np.asarray(p, np.float64), own.get(k, t)) for k, p in probs.items()}
    paths = []
    if ev is not None:
        y = np.asarray(ev.labels)
        paths += [confusion(plt, k, y, p, labels, folder / f"confusion_{k}.png") for k, p in cal.items()]
        if cal:
            paths.append(roc(plt, y, cal, labels, folder / "roc.png"))
    paths.append(latency_accuracy(plt, result["rows"], result["options"]["threads"], folder / "latency_accuracy.png"))
    return paths


def reliability(plt, y, probs, path: Path, n_bins: int = 10, title: str = "") -> Path:
    """Top-label reliability diagram: accuracy against confidence per equal-width bin, with the bin counts."""
    probs = np.asarray(probs, np.float64)
    conf, correct = probs.max(1), probs.argmax(1) == np.asarray(y)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    centers, accs, counts = [], [], []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            centers.append(conf[m].mean())
            accs.append(correct[m].mean())
            counts.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(4.2, 4.0))
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.plot(centers, accs, "o-", lw=1.2)
    for c, a, n in zip(centers, accs, counts):
        ax.annotate(str(n), (c, a), textcoords="offset points", xytext=(3, -10), fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"reliability (ECE {M.expected_calibration_error(y, probs):.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def score_distributions(plt, y, probs, labels, reference: dict, path: Path) -> Path:
    """One panel per (true class, score class): the local films' calibrated scores against the reference
    histogram (``edge_runtime.reference``, the validation films), both as shares of their films per bin."""
    labels = list(labels)
    y, probs = np.asarray(y), np.asarray(probs, np.float64)
    rows = [lab for i, lab in enumerate(labels) if (y == i).any() and reference["per_class"].get(lab, {}).get("n")]
    bins = int(reference.get("bins", 20))
    edges = np.linspace(0, 1, bins + 1)
    fig, axes = plt.subplots(len(rows), len(labels), figsize=(3.0 * len(labels), 2.2 * len(rows)), squeeze=False)
    for r, lab in enumerate(rows):
        ref = reference["per_class"][lab]
        local = probs[y == labels.index(lab)]
        for c, s in enumerate(labels):
            ax = axes[r][c]
            h = np.asarray(ref["hist"][s], np.float64)
            ax.stairs(h / max(1, h.sum()), edges, label=f"validation ({ref['n']})", color="0.4")
            loc = np.histogram(np.clip(local[:, c], 0, 1), bins=bins, range=(0, 1))[0]
            ax.stairs(loc / max(1, loc.sum()), edges, label=f"local ({len(local)})", color="C3")
            ax.set_title(f"true {lab}: P({s})", fontsize=8)
            ax.tick_params(labelsize=7)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
