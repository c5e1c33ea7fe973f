"""MODEL_CARD.md: the short human-readable page that travels in every bundle."""
from __future__ import annotations

from edge_runtime import views as V
from edge_runtime.metadata import ModelMetadata


def _fmt(v, nd=3):
    return "-" if v is None or v != v else f"{v:.{nd}f}"


def metrics_table(rep: dict, labels) -> str:
    """Pooled and per-source rows of a report_by_source dict."""
    rows = [("pooled", rep["pooled"])] + sorted(rep.get("by_source", {}).items())
    head = "| group | n | accuracy | macro-F1 | macro-AUC | " + " | ".join(f"{l[:4]} sens" for l in labels) + " |"
    lines = [head, "|" + "---|" * (4 + len(labels) + 1)]
    for name, r in rows:
        sens = [r.get("per_class", {}).get(l, {}).get("sensitivity") for l in labels]
        lines.append(f"| {name} | {r['n']} | {_fmt(r['accuracy'])} | {_fmt(r['macro_f1'])} | {_fmt(r.get('macro_auc'))} | "
                     + " | ".join(_fmt(s) for s in sens) + " |")
    return "\n".join(lines)


def model_card(meta: ModelMetadata, status: dict) -> str:
    labels = list(meta.labels)
    out = [f"# Model card: {meta.model_name} {meta.model_version}", ""]
    if meta.synthetic:
        out += ["**SYNTHETIC DATA - NOT FOR CLINICAL USE.** This model was trained on generated phantom images so "
                "that the software can be tried and tested. It knows nothing about real patients.", ""]
    elif not status.get("validated"):
        out += ["**NOT VALIDATED:** at least one conversion failed its parity check: "
                + ", ".join(status.get("failed_formats", [])), ""]
    op = meta.metrics.get("operating_point", {})
    out += ["## Intended use",
            "A screening aid for frontal chest radiographs (PA/AP) of adults: it sorts films into normal, "
            "pneumonia and tuberculosis to help a clinic decide who needs a clinician's read or a confirmatory "
            "test (sputum, GeneXpert). It is **not a diagnosis**, it does not replace a radiologist, and it has "
            "not been cleared by any regulator. Images it does not recognise as chest radiographs are marked "
            "out of scope; uncertain ones are marked *refer to a clinician*.", "",
            "## Model",
            f"- Architecture: {meta.model_name}, input {meta.image_size}x{meta.image_size} grayscale "
            f"(input preparation: {meta.preprocess.describe()}); "
            + ("fine-tuned with quantization-aware training (QAT): its INT8 files come from the QAT model."
               if meta.quantization == "qat-int8" else
               "trained in float only (no quantization-aware training): every INT8 file is post-training "
               "quantised from the float model."),
            *([f"- Ensemble of {len(meta.members)} trainings on the same patient split, served as one file whose "
               "probabilities are their mean (one inference costs one run of each): "
               + "; ".join(f"`{m.get('run_dir')}` ({m.get('model_version')}, initialisation seed {m.get('init_seed')}"
                           + "".join(f", {k.replace('_', '-')} {v}" for k, v in (m.get("options") or {}).items())
                           + ")" for m in meta.members)
               + ". The heatmap and the input check read the first training's feature map."] if meta.members else []),
            f"- Classes (output order): {', '.join(labels)}.",
            f"- Training data: sources {', '.join(meta.data_sources) or '-'}; data hash `{meta.data_hash}`; "
            f"split by patient: {meta.split.get('counts', {})} (seed {meta.split.get('seed')}).",
            f"- Temperature scaling of the deployed Keras model: T = {meta.temperature:.2f} (validation ECE "
            f"{_fmt(op.get('calibration', {}).get('val_ece_before'))} -> "
            f"{_fmt(op.get('calibration', {}).get('val_ece_after'))}).",
            f"- Test-time views: {V.describe(meta.views)}"
            + ("." if len(meta.views) == 1 else ": the device averages the model's answers over these slightly "
               "zoomed/shifted copies of each film (one inference each); every threshold below was fitted on "
               "that average."), "",
            "## Decision rule (chosen on validation data, figures of the deployed Keras model; each artifact's "
            "own values are in the formats table)"]
    if "tb" in op:
        out.append(f"- Tuberculosis when P(TB) >= {op['tb']['threshold']:.3f}: validation sensitivity "
                   f"{op['tb']['val_sensitivity']:.3f}, specificity {op['tb']['val_specificity']:.3f} "
                   f"(WHO screening bar: sensitivity >= 0.90 with specificity >= 0.70).")
    if "refer" in op:
        r = op["refer"]
        how = (f"fitted to refer the least confident {r['target_share']:.1%} of validation images not flagged TB"
               if r.get("target_share") is not None else
               f"the lowest at which the rest reach {r.get('target_accuracy', 0.9):.0%} accuracy on validation")
        out.append(f"- Refer to a clinician when the top probability is below {r['refer_below']:.2f} ({how}): "
                   f"{r['val_refer_fraction']:.1%} of all validation images referred; accuracy on the rest "
                   f"{_fmt(r['val_accuracy_not_referred'])}.")
    ori = meta.orientation.get("test") or meta.orientation.get("val")
    if ori:
        out.append(f"- Out of scope when the film seems turned or grey-inverted (a check on a 16x16 thumbnail, "
                   f"fitted on the training films): on {ori['n']} held-out films it caught "
                   f"{ori['caught_all']:.1%} of their turned/inverted copies and flagged {ori['false_flags']:.1%} "
                   "of them as they are (targets: >= 99% and <= 1%).")
    out.append("")
    out += ["## Formats in this bundle", "",
            "Each artifact has its own temperature and thresholds, fitted on its own validation outputs (an INT8 "
            "file does not give exactly the probabilities of the model it was made from); the device uses them.", "",
            "| format | file | MB | top-1 agreement with Keras parent | max prob diff | T | val ECE raw -> T "
            "| TB threshold | refer below | test accuracy | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key, r in status.get("formats", {}).items():
        acc = r.get("test", {}).get("pooled", {}).get("accuracy")
        own = meta.for_format(key)
        cal = own.metrics.get("operating_point", {}).get("calibration", {}) if key in meta.calibration else {}
        out.append(f"| {key} | {r.get('file', '-')} | {r.get('bytes', 0) / 1e6:.2f} | {_fmt(r.get('agreement'))} | "
                   f"{_fmt(r.get('max_prob_diff'), 4)} | "
                   + (f"{own.temperature:.2f} | {_fmt(cal.get('val_ece_before'))} -> {_fmt(cal.get('val_ece_after'))} | "
                      f"{_fmt(own.thresholds.get('tuberculosis'))} | {_fmt(own.thresholds.get('refer_below'), 2)} | "
                      if key in meta.calibration else "- | - | - | - | ")
                   + f"{_fmt(acc)} | {'ok' if r.get('passed') else 'FAILED'} |")
    for backend, choice in (status.get("int8_choice") or {}).items():
        out += ["", f"Served first among the {backend} INT8 files: **{choice['chosen']}**: {choice['why']}."]
    test = meta.metrics.get("test")
    if test and "pooled" in test:
        out += ["", "## Test metrics of the trained model, pooled and per source (unseen patients)", "",
                metrics_table(test, labels)]
    out += ["", "## What the training data can and cannot show", *data_scope(meta), ""]
    out += ["", "## Limitations",
            "- Public chest X-ray sets confound disease with source (hospital, scanner, age): a model can score "
            "well by recognising the source. Figures are per source for that reason; performance at a new site "
            "is unknown until measured there with confirmed outcomes (the device's monitoring page does this).",
            "- The heatmap shows which regions raised the score at the coarse feature-map resolution; it is an "
            "aid for the reader, not a localisation of disease.",
            "- Children, lateral films, post-operative chests and other diseases were not part of the training "
            "data.", ""]
    return "\n".join(out)


def class_sources(meta: ModelMetadata) -> dict[str, list[str]]:
    """The sources each class's test images came from (from the stored per-source test metrics)."""
    by_source = meta.metrics.get("test", {}).get("by_source", {})
    out: dict[str, list[str]] = {label: [] for label in meta.labels}
    for src, rep in by_source.items():
        for label, pc in rep.get("per_class", {}).items():
            if pc.get("support") and label in out:
                out[label].append(src)
    return out


def data_scope(meta: ModelMetadata) -> list[str]:
    """Plain statements of what the data supports, computed from where each class came from."""
    per = class_sources(meta)
    if not any(per.values()):
        return ["- The metrics stored with this model do not say which source each class came from; treat every "
                "figure as specific to the training sources until it is measured elsewhere."]
    lines = []
    for label, srcs in per.items():
        others = {s for other, ss in per.items() if other != label for s in ss}
        if len(srcs) == 1 and srcs[0] not in others:
            lines.append(f"- Every **{label}** image came from one source (`{srcs[0]}`) that holds no other class: "
                         f"the model's {label} score cannot be told apart from recognising `{srcs[0]}` films "
                         "(scanner, processing, borders, population). Its sensitivity and specificity are an upper "
                         "bound, not evidence that it detects the disease.")
    shared = [label for label, srcs in per.items() if len(srcs) > 1 or any(
        s in {x for o, xs in per.items() if o != label for x in xs} for s in srcs)]
    if shared:
        lines.append("- Classes that share a source (" + ", ".join(shared) + ") are compared on films of the same "
                     "origin: those figures are the ones least affected by the source.")
    lines.append("- To show more: positives and negatives of every class from the same site and scanner, an "
                 "external site held out entirely, and confirmed outcomes (culture or GeneXpert for TB).")
    return lines

