"""The report of a result: a table on stderr, a PNG chart, and the files written atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.pipeline_bench import STAGE_KEYS
from benchmarks.targets import TARGETS
from benchmarks.timing import log
from runtime.cli_support import atomic_path


def _fmt(value: float | None, spec: str = ".1f", none: str = "n/a") -> str:
    return none if value is None else format(value, spec)


def _limit_lines(result: dict[str, Any]) -> list[str]:
    """The measured limits, each with the faces/s it allows, and the GEMM row."""
    flops = result["model"]["flops_per_face"]
    lines = ["limits   matrix throughput of this CPU, measured (best call), and the faces/s each allows"]
    for row in result["limits"]["rows"]:
        name = f"{row['precision']} {row['engine']}"
        if row["skipped"]:
            lines.append(f"  {name:<15} skipped: {row['skipped']}")
        else:
            lines.append(f"  {name:<15} {row['g_per_s']:7.0f} {row['unit']:<8} = {row['g_per_s'] * 1e9 / flops:5.0f} "
                         f"faces/s  ({row['shape']}, {row['kernel']}, ran as {row['ran_as']})")
    return lines


def _model_lines(result: dict[str, Any]) -> list[str]:
    """Faces/s by batch of every (variant, engine), with its share of its limit and its agreement with fp32."""
    model = result["model"]
    batches = sorted({r["batch"] for r in model["runs"]})
    real = "real faces" if model["agreement_real"] else "RANDOM images (no real faces found)"
    lines = [f"model    faces/s by batch ({model['faces']}); agreement: argmax vs fp32 on onnxruntime cpu, "
             f"{model['agreement_faces']} {real}",
             "  " + f"{'variant engine':<20}" + "".join(f"{'b=' + str(b):>8}" for b in batches)
             + f"{'p50 ms@peak':>12}{'of limit':>14}{'agree':>8}"]
    for p in model["peak"]:
        rs = {r["batch"]: r for r in model["runs"] if r["variant"] == p["variant"] and r["provider"] == p["provider"]}
        cells = "".join(f"{_fmt(rs[b]['faces_per_s'], '.0f') if b in rs else '-':>8}" for b in batches)
        frac = "-" if p["limit"] is None else f"{100 * p['limit_fraction']:.0f}% {p['limit']}"
        lines.append(f"  {p['variant'] + ' ' + p['provider']:<20}{cells}{rs[p['batch']]['p50_ms']:>12.2f}{frac:>14}"
                     f"{100 * p['agreement']:>7.1f}%")
    lines += [f"  {x['name']}: {x['skipped']}" for x in model["variants"] if x["skipped"]]
    lines += [f"  {f['variant']} {f['provider']}: {f['reason']}" for f in model["failures"]]
    return lines


def _clip_lines(c: dict[str, Any]) -> list[str]:
    """One clip: the original loop, then every pipeline configuration with its ratio and stage shares."""
    o = c["original"]
    lines = [f"video    {Path(c['path']).name} {c['width']}x{c['height']}, decode {c['decode']['mean_ms']:.2f} "
             f"ms/frame; ratios on the first {c['ratio_frames']} frames; targets judged on "
             f"{c['target_config'] or 'none'}"]
    if o["skipped"]:
        lines.append(f"  {'original':<9} skipped: {o['skipped']}")
    else:
        lines.append(f"  {'original':<9}{o['fps']:7.1f} fps  p50 {o['p50_ms']:6.2f} ms  p99 {o['p99_ms']:6.2f} ms  "
                     f"face in {100 * o['frames_with_face']:5.1f}% of {o['frames']} frames")
    for p in c["configs"]:
        if p["skipped"]:
            lines.append(f"  {p['name']:<9} skipped: {p['skipped']}")
            continue
        ratio = "" if p["ratio"] is None else f"  {p['ratio']:5.1f}x original"
        lines.append(f"  {p['name']:<9}{p['fps']:7.1f} fps  p50 {p['p50_ms']:6.2f} ms  p99 {p['p99_ms']:6.2f} ms  "
                     f"face in {100 * p['frames_with_face']:5.1f}% of {p['frames']} frames  agree "
                     f"{100 * p['model_agreement']:5.1f}%{ratio}  ({p['what']}; ran on {p['provider']}, "
                     f"search_lag {p['detector']['search_lag']})")
        lines.append("            " + "  ".join(f"{k} {100 * p['stage_share'][k]:.0f}% ({p['stage_ms'][k]:.2f} ms)"
                                              for k in STAGE_KEYS))
    return lines


def format_table(result: dict[str, Any]) -> str:
    """A compact human-readable summary with every target marked met or missed."""
    m, v = result["machine"], result["versions"]
    lines = [
        f"benchmark{' (quick)' if result['quick'] else ''} {result['date_utc']}, {result['wall_s']:.0f} s",
        f"machine  {m['cpu_model']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores, "
        f"load {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}, {' '.join(m['cpu_flags'])}",
        f"versions python {v['python']}, numpy {v['numpy']} ({v['blas']}), opencv {v['opencv']}, "
        f"onnxruntime {v['onnxruntime']}, openvino {v['openvino'] or '-'}, tensorflow {v['tensorflow'] or '-'}, "
        f"keras {v['keras'] or '-'}",
        *_limit_lines(result),
        *_model_lines(result),
    ]
    keras = result["keras"]
    if keras["skipped"]:
        lines.append(f"keras    skipped: {keras['skipped']}")
    else:
        for key, what in (("predict_one", "model.predict"), ("call_one", "model(x)")):
            k = keras[key]
            lines.append(f"keras    {what:<13} 1 face: {k['p50_ms']:.2f} ms p50, {k['p99_ms']:.2f} ms p99, "
                         f"{k['faces_per_s']:.0f} faces/s ({keras['device']}, {keras['weights']})")
    for c in result["pipeline"]["clips"]:
        lines += _clip_lines(c)
    lines.append("targets  (goals, not asserted)")
    for t in TARGETS:
        e = result["targets"][t.key]
        value = e["value"]
        shown = "n/a" if value is None else (f"{100 * value:.0f}%" if t.unit == "fraction" else f"{value:.2f} {t.unit}")
        mark = "n/a" if e["met"] is None else ("met" if e["met"] else "MISSED")
        lines.append(f"  {t.goal:<62} {shown:>10}  {mark:<6} ({e['basis']})")
    return "\n".join(lines)


def draw_chart(result: dict[str, Any], path: Path) -> None:
    """Model faces/s by batch with the limits (top left), limits and model peaks (top right), frames/s of
    every pipeline configuration vs the original loop (bottom left), stage shares (bottom right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(17, 10.5))
    _plot_model(axes[0, 0], result)
    _plot_limits(axes[0, 1], result)
    _plot_fps(axes[1, 0], result)
    _plot_stages(axes[1, 1], result)
    m = result["machine"]
    fig.suptitle(f"emocam benchmark{' (quick)' if result['quick'] else ''} {result['date_utc']}: {m['cpu_model']}, "
                 f"{m['logical_cores']} cores, load {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_model(ax: Any, result: dict[str, Any]) -> None:
    """Faces/s against batch size, one line per (variant, engine) with its agreement, Keras points, the limits."""
    agree = {(p["variant"], p["provider"]): p["agreement"] for p in result["model"]["peak"]}
    series: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for run in result["model"]["runs"]:
        series.setdefault((run["variant"], run["provider"]), []).append((run["batch"], run["faces_per_s"]))
    for key, pts in series.items():
        xs, ys = zip(*sorted(pts), strict=True)
        ax.plot(xs, ys, marker="o", label=f"{key[0]} {key[1]} (agrees {100 * agree[key]:.1f}%)")
    keras = result["keras"]
    if not keras["skipped"]:
        ax.scatter([1], [keras["predict_one"]["faces_per_s"]], marker="x", s=70, color="k", label="Keras predict")
        ax.scatter([1], [keras["call_one"]["faces_per_s"]], marker="+", s=90, color="k", label="Keras model(x)")
    flops = result["model"]["flops_per_face"]
    for (precision, rate), style in zip(result["limits"]["best"].items(), ("--", "-.", ":"), strict=True):
        if rate:
            faces = rate * 1e9 / flops
            ax.axhline(faces, ls=style, color="grey", label=f"{precision} limit ({faces:.0f})")
    batches = sorted({r["batch"] for r in result["model"]["runs"]})
    ax.set(xscale="log", yscale="log", xlabel="batch size (faces per call)", ylabel="faces/s",
           title="model throughput (agreement: argmax vs fp32 on onnxruntime cpu, real faces)")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best", ncol=2)


def _plot_limits(ax: Any, result: dict[str, Any]) -> None:
    """The measured limits (GFLOP/s, GOP/s for int8) beside the model's best run against each."""
    rows = [r for r in result["limits"]["rows"] if not r["skipped"]]
    labels = [f"{r['precision']} {r['engine']}\nlimit" for r in rows]
    values = [r["g_per_s"] for r in rows]
    colors = ["tab:grey"] * len(rows)
    for p in result["model"]["peak"]:
        if p["limit"] is not None:
            labels.append(f"model {p['variant']}\n{p['provider']}")
            values.append(p["gflops"])
            colors.append("tab:blue")
    idx = np.arange(len(values))
    bars = ax.bar(idx, values, 0.7, color=colors)
    notes = [f"{v:.0f}" for v in values[: len(rows)]] + [
        f"{p['gflops']:.0f}\n{100 * p['limit_fraction']:.0f}% of {p['limit']}"
        for p in result["model"]["peak"] if p["limit"] is not None]
    ax.bar_label(bars, labels=notes, fontsize=7)
    skipped = [f"{r['precision']} {r['engine']}: {r['skipped']}" for r in result["limits"]["rows"] if r["skipped"]]
    ax.set(xticks=idx, ylabel="GFLOP/s (int8: GOP/s)", ylim=(0, max(values) * 1.2),
           title="measured limits (grey) and the model's best run (blue)" + ("\n" + "; ".join(skipped)[:160]
                                                                           if skipped else ""))
    ax.set_xticklabels(labels, fontsize=7)


def _plot_fps(ax: Any, result: dict[str, Any]) -> None:
    """Frames/s of the original loop and every pipeline configuration per clip, with ratios and agreement."""
    clips = result["pipeline"]["clips"]
    names = ["original", *[c["name"] for c in clips[0]["configs"]]]
    width = 0.8 / len(names)
    top = 0.0
    for i, name in enumerate(names):
        fps, notes = [], []
        for c in clips:
            entry = c["original"] if name == "original" else next(x for x in c["configs"] if x["name"] == name)
            if entry["skipped"]:
                fps.append(0.0)
                notes.append("skipped")
                continue
            fps.append(entry["fps"])
            note = f"{entry['fps']:.0f}\np99 {entry['p99_ms']:.1f}"
            if name != "original":
                note += f"\n{entry['ratio']:.1f}x" if entry["ratio"] is not None else ""
                note += "\ntarget" if c["target_config"] == name else ""
            notes.append(note)
        top = max(top, *fps)
        bars = ax.bar(np.arange(len(clips)) + (i - (len(names) - 1) / 2) * width, fps, width, label=name)
        ax.bar_label(bars, labels=notes, fontsize=7)
    ax.set(xticks=np.arange(len(clips)), xticklabels=[Path(c["path"]).stem[:28] for c in clips], ylabel="frames/s",
           ylim=(0, top * 1.3), title="frames/s: pipeline configurations vs the original notebook loop")
    ax.legend(fontsize=8, loc="upper left")


def _plot_stages(ax: Any, result: dict[str, Any]) -> None:
    """Every configuration's stage shares on every clip, as stacked horizontal bars labelled where wide enough."""
    rows = [(Path(c["path"]).stem[:14], p) for c in result["pipeline"]["clips"] for p in c["configs"]
            if not p["skipped"]]
    idx = np.arange(len(rows))
    left = np.zeros(len(rows))
    for k in STAGE_KEYS:
        share = np.asarray([p["stage_share"][k] for _, p in rows])
        bars = ax.barh(idx, share, 0.5, left=left, label=k)
        ax.bar_label(bars, labels=[f"{100 * v:.0f}%" if v >= 0.05 else "" for v in share], label_type="center",
                     fontsize=8)
        left += share
    ax.set(yticks=idx, yticklabels=[f"{clip}\n{p['name']} ({p['mean_ms']:.1f} ms)" for clip, p in rows], xlim=(0, 1),
           xlabel="share of a frame's time (decode + pipeline)", title="pipeline stage shares")
    ax.invert_yaxis()  # first clip on top
    ax.legend(fontsize=8, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.12))


def write_outputs(result: dict[str, Any], out_dir: Path, base: str) -> tuple[Path, Path | None]:
    """Write ``<base>.png`` and ``<base>.json`` and their ``latest.*`` copies, each atomically.

    Returns:
        The JSON path and the PNG path (None when matplotlib is missing).
    """
    png: Path | None = out_dir / f"{base}.png"
    try:
        draw_chart(result, png)
    except ImportError:
        log("no chart: matplotlib is not installed (pip install matplotlib)")
        png = None
    result["files"]["png"] = png.name if png else None
    json_path = out_dir / f"{base}.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    for src in (json_path, png):
        if src is not None:
            with atomic_path(out_dir / f"latest{src.suffix}") as tmp:
                shutil.copyfile(src, tmp)
    return json_path, png

