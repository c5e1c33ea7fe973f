"""``python -m benchmarks.oplatency BUNDLE_OR_TFLITE ... [--threads 1] [--every 1] [--out FILE] [--md FILE]
[--plot PNG]``: where a LiteRT model's time goes, operation by operation, on the path a device runs (XNNPACK).

XNNPACK takes a model's operations into one delegate node and keeps per-operation times to itself, and the
Python API has no profiler. So the model is cut: for each k the graph of its first k operations (in execution
order; outputs: every tensor those operations produce that none of them reads) is timed on the same kernels,
and an operation's cost is the growth from the cut before it. The cut graphs are checked to compute what the full
model computes (tests), and the full model is timed beside them. A noisy machine gives noisy (even negative)
single-operation costs; the sums per operation kind and per stage (the input's preparation inside the graph:
full-size operations that are not convolutions; the network; the head on pooled vectors) are the figures to read, as
ratios within one run (each report names its CPU and load). Inputs are random pixels: these models have no
data-dependent paths.

Per model: the full model's time, the cost of every operation kind (count, ms, share), of each stage, and of the
ten dearest operations; ``--plot`` draws the cumulative time per operation for every model given.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from benchmarks import sysinfo
from edge_runtime import formats as F

CONVS = ("CONV_2D", "DEPTHWISE_CONV_2D")


class OpLatencyError(ValueError):
    pass


def _schema():
    from ai_edge_litert import schema_py_generated as S

    return S


def _read(path: Path):
    S = _schema()
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise OpLatencyError(f"{path}: not a LiteRT (.tflite) model")
    try:
        model = S.ModelT.InitFromObj(S.Model.GetRootAsModel(data, 0))
    except Exception as exc:  # a truncated or damaged flatbuffer fails deep in the reader
        raise OpLatencyError(f"{path}: not a readable LiteRT model ({type(exc).__name__}: {exc})") from exc
    if len(model.subgraphs) != 1:
        raise OpLatencyError(f"{path}: {len(model.subgraphs)} subgraphs; only one-subgraph models are cut")
    if any(getattr(b, "offset", 0) > 1 for b in model.buffers or []):
        raise OpLatencyError(f"{path}: weights stored outside the flatbuffer (models over 2 GB) are not cut")
    return model


def op_names(model) -> list[str]:
    S = _schema()
    names = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_")}
    codes = model.operatorCodes
    out = []
    for op in model.subgraphs[0].operators:
        code = codes[op.opcodeIndex]
        out.append(names.get(max(code.builtinCode, code.deprecatedBuiltinCode), f"OP_{code.builtinCode}"))
    return out


def cut(model, k: int) -> bytes:
    """The model's first ``k`` operations as a model of its own (same inputs); its outputs are every tensor those
    operations produce and none of them reads (so nothing kept is dead code), and the model's own outputs among
    them."""
    import copy

    import flatbuffers

    S = _schema()
    m = copy.copy(model)
    g = copy.copy(model.subgraphs[0])
    m.subgraphs = [g]
    g.operators = list(model.subgraphs[0].operators[:k])
    made = [int(t) for op in g.operators for t in op.outputs if t >= 0]
    read = {int(t) for op in g.operators for t in op.inputs if t >= 0}
    kept_outputs = {int(t) for t in model.subgraphs[0].outputs}  # a model output may also feed an operation
    g.outputs = list(dict.fromkeys(t for t in made if t not in read or t in kept_outputs))
    m.signatureDefs = None  # the signature names the full model's outputs
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _interpreter(content: bytes, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=threads)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        if np.issubdtype(d["dtype"], np.integer):
            info = np.iinfo(d["dtype"])
            x = rng.integers(max(info.min, 0), min(info.max, 255) + 1, size=d["shape"]).astype(d["dtype"])
        else:
            x = rng.uniform(0, 255, size=d["shape"]).astype(d["dtype"])
        it.set_tensor(d["index"], x)
    return it


def _time(it, repeats: int, invokes: int) -> float:
    """Milliseconds per invoke: the fastest of ``repeats`` runs of ``invokes`` (after one warm-up)."""
    it.invoke()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(invokes):
            it.invoke()
        best = min(best, (time.perf_counter() - t) / invokes)
    return 1000 * best


PREP = "input preparation (full-size operations before the convolutions)"
NET = "network (convolutions and what runs between them)"
HEAD = "head (operations on pooled vectors)"


def _stage(kind: str, shape: list[int], input_hw: list[int]) -> str:
    """Which part of the model an operation belongs to, by its output (an ensemble holds one of each per member,
    interleaved in execution order)."""
    if kind not in CONVS and len(shape) == 4 and list(shape[1:3]) == list(input_hw):
        return PREP
    if len(shape) <= 2:
        return HEAD
    return NET


def profile(path: str | Path, threads: int = 1, every: int = 1, repeats: int = 3, invokes: int = 10,
            rounds: int = 3, progress=None) -> dict:
    """The figures of the module docstring for one .tflite file."""
    path = Path(path)
    model = _read(path)
    kinds = op_names(model)
    n = len(kinds)
    if n == 0:
        raise OpLatencyError(f"{path}: the model has no operations")
    points = sorted(set(range(every, n + 1, max(every, 1))) | {n})
    timed: dict[int, list[float]] = defaultdict(list)
    content = path.read_bytes()
    try:
        whole = _interpreter(content, threads)
    except (ValueError, RuntimeError) as exc:
        raise OpLatencyError(f"{path}: LiteRT cannot run it ({exc})") from exc
    full = float("inf")
    for r in range(rounds):  # every cut once a round, the fastest round counts: a busy spell hits all cuts alike
        full = min(full, _time(whole if r == 0 else _interpreter(content, threads), repeats, invokes))
        for j, k in enumerate(points):
            timed[k].append(_time(_interpreter(cut(model, k), threads), repeats, invokes))
            if progress:
                progress(r * len(points) + j + 1, rounds * len(points))
    cumulative = {0: 0.0, **{k: min(v) for k, v in timed.items()}}
    spread = [max(v) - min(v) for v in timed.values()] if rounds > 1 else []
    g = model.subgraphs[0]
    input_hw = [int(s) for s in g.tensors[g.inputs[0]].shape[1:3]]
    rows, prev = [], 0
    for k in points:  # with --every > 1 the cost of a step is shared out evenly over its operations
        share = (cumulative[k] - cumulative[prev]) / (k - prev)
        for i in range(prev, k):
            out = g.tensors[g.operators[i].outputs[0]]
            shape = [int(s) for s in (out.shape if out.shape is not None else [])]
            rows.append({"op": i, "kind": kinds[i], "shape": shape, "ms": share,
                         "cumulative_ms": cumulative[prev] + share * (i - prev + 1),
                         "stage": _stage(kinds[i], shape, input_hw)})
        prev = k
    total = cumulative[n]
    by_kind: dict[str, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    by_stage: dict[str, dict] = defaultdict(lambda: {"count": 0, "ms": 0.0})
    for r in rows:
        for table, key in ((by_kind, r["kind"]), (by_stage, r["stage"])):
            table[key]["count"] += 1
            table[key]["ms"] += r["ms"]
    for table in (by_kind, by_stage):
        for v in table.values():
            v["share"] = v["ms"] / total if total > 0 else float("nan")
    return {"model": str(path), "operations": n, "threads": threads, "every": every, "rounds": rounds,
            "repeats": repeats, "invokes": invokes, "full_ms": full, "cut_total_ms": total,
            "round_spread_ms": {"median": float(np.median(spread)), "max": float(max(spread))} if spread else None,
            "rows": rows,
            "by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1]["ms"])),
            "by_stage": dict(by_stage)}


def models_of(path: Path) -> list[tuple[str, Path]]:
    """(label, file) of every LiteRT model in a bundle folder, or the one file given."""
    if path.is_dir():
        from edge_runtime.bundle import artifacts, read_status

        found = [(f"{path.name}/{key or p.stem}", p) for key, p in artifacts(path, read_status(path))
                 if F.backend_of(p) == "litert"]
        if not found:
            raise OpLatencyError(f"{path}: no LiteRT (.tflite) model in this folder")
        return found
    if not path.is_file():
        raise OpLatencyError(f"{path}: no such bundle or model file")
    return [(f"{path.parent.name}/{path.name}", path)]  # the folder too: bundles name their files alike


def unique_labels(targets: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """The same labels made distinct (two bundles in folders of one name): such a label becomes the file's full path,
    and a file given twice gets a count, so that no model's figures overwrite another's in the report."""
    seen = Counter(label for label, _ in targets)
    out, used = [], Counter()
    for label, path in targets:
        if seen[label] > 1:
            label = str(path)
        used[label] += 1
        out.append((label if used[label] == 1 else f"{label} #{used[label]}", path))
    return out


def markdown(results: dict[str, dict], info: dict, command: str) -> str:
    lines = [sysinfo.report_header("Where the LiteRT time goes, operation by operation (XNNPACK, cut graphs)",
                                   command, info).rstrip(), "",
             "Each operation's cost is the growth of the time of the graph cut after it over the graph cut before it "
             "(`benchmarks.oplatency`); single operations are noisy, sums are the figures to read, as ratios within "
             "this run.", ""]
    for label, r in results.items():
        lines += [f"## {label}", "",
                  f"{r['operations']} operations, {r['threads']} thread(s): full model **{r['full_ms']:.2f} ms**, "
                  f"the cut graphs' sum {r['cut_total_ms']:.2f} ms. " + (
                      f"The {r['rounds']} rounds of one cut differ by {r['round_spread_ms']['median']:.2f} ms (median; "
                      f"largest {r['round_spread_ms']['max']:.2f}): an operation cheaper than that is not resolved; a "
                      f"run of consecutive operations is the difference of two cuts (one cut when it starts at the "
                      f"input, as one model's input preparation does), a sum of scattered ones (an operation kind, "
                      f"an ensemble's interleaved stages) adds about two cuts' noise for each operation." if r.get("round_spread_ms")
                      else "One round: no measure of the noise (--rounds 2 or more)."), "",
                  "| stage | operations | ms | share |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['count']} | {v['ms']:.2f} | {100 * v['share']:.0f}% |" for k, v in r["by_stage"].items()]
        lines += ["", "| operation kind | count | ms | share |", "|---|---|---|---|"]
        lines += [f"| {k} | {v['count']} | {v['ms']:.2f} | {100 * v['share']:.0f}% |" for k, v in r["by_kind"].items()]
        dear = sorted(r["rows"], key=lambda row: -row["ms"])[:10]
        lines += ["", "Dearest operations: " + ", ".join(
            f"{d['op']} {d['kind']} {'x'.join(map(str, d['shape'][1:]))} {d['ms']:.2f} ms" for d in dear), ""]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, r in results.items():
        ax.plot([row["op"] for row in r["rows"]], [row["cumulative_ms"] for row in r["rows"]], label=label)
    ax.set_xlabel("operation, in execution order")
    ax.set_ylabel("time of the graph cut after it (ms)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.oplatency", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", type=Path, help="bundle folders (every LiteRT model in them) or .tflite files")
    p.add_argument("--threads", type=int, default=1, help="LiteRT threads (default 1, as the benchmark's headline)")
    p.add_argument("--every", type=int, default=1, help="cut after every Nth operation only (faster, coarser)")
    p.add_argument("--rounds", type=int, default=3,
                   help="passes over all the cut graphs (each built again); the fastest pass counts per cut")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of --invokes per cut graph and pass")
    p.add_argument("--invokes", type=int, default=10, help="invokes per timed run")
    p.add_argument("--out", type=Path, help="write every figure and the machine here (JSON)")
    p.add_argument("--md", type=Path, help="write the report here (Markdown)")
    p.add_argument("--plot", type=Path, help="draw the cumulative time per operation here (PNG)")
    a = p.parse_args(argv)
    if min(a.threads, a.every, a.rounds, a.repeats, a.invokes) < 1:
        p.error("--threads, --every, --rounds, --repeats and --invokes must be at least 1")
    command = "python -m benchmarks.oplatency " + " ".join(argv if argv is not None else sys.argv[1:])
    info = sysinfo.machine_info()
    from tqdm import tqdm

    results = {}
    try:
        targets = unique_labels([t for m in a.models for t in models_of(m)])
        for label, path in targets:
            with tqdm(desc=label, unit="cut", file=sys.stderr) as bar:
                def step(done, total, bar=bar):
                    bar.total = total
                    bar.update(done - bar.n)
                results[label] = profile(path, a.threads, a.every, a.repeats, a.invokes, a.rounds, progress=step)
            r = results[label]
            first = next(iter(r["by_kind"].items()))
            print(f"{label}: {r['full_ms']:.2f} ms, {r['operations']} operations; dearest kind {first[0]} "
                  f"{100 * first[1]['share']:.0f}%; "
                  + "; ".join(f"{k.split(' (')[0]} {100 * v['share']:.0f}%" for k, v in r["by_stage"].items()))
    except (OpLatencyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    info["load_average_end"] = sysinfo.load_average()
    print(f"machine: {sysinfo.describe(info)}")
    if a.out:
        a.out.write_text(json.dumps({"command": command, "machine": info, "models": results}, indent=2) + "\n")
        print(f"written: {a.out}")
    if a.md:
        a.md.write_text(markdown(results, info, command))
        print(f"written: {a.md}")
    if a.plot:
        title = (f"cumulative LiteRT (XNNPACK) time, {a.threads} thread(s); {info['cpu']}, {info['date']}, "
                 f"commit {info['commit']}")
        print(f"plot: {plot(results, a.plot, title)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
