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


def format_table(result: dict[str, Any]) -> str:
    """A compact human-readable summary with every target marked met or missed."""
    m, v = result["machine"], result["versions"]
    lines = [
        f"benchmark{' (quick)' if result['quick'] else ''} {result['date_utc']}, {result['wall_s']:.0f} s",
        f"machine  {m['cpu_model']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores, "
        f"load {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}, {' '.join(m['cpu_flags'])}",
        f"versions python {v['python']}, numpy {v['numpy']} ({v['blas']}), opencv {v['opencv']}, "
        f"onnxruntime {v['onnxruntime']}, tensorflow {v['tensorflow'] or '-'}, keras {v['keras'] or '-'}",
        f"GEMM     fp32 {result['gemm']['n']}^3 matmul: {result['gemm']['gflops']:.1f} GFLOP/s (best of "
        f"{result['gemm']['repeats']}) = {result['gemm']['gflops'] * 1e9 / result['model']['flops_per_face']:.0f} "
        f"faces/s limit",
    ]
    model = result["model"]
    batches = sorted({r["batch"] for r in model["runs"]})
    lines.append(f"model    faces/s by batch ({model['faces']})")
    lines.append("  " + f"{'variant':<12}" + "".join(f"{'b=' + str(b):>9}" for b in batches)
                 + f"{'p50 ms@peak':>13}{'%GEMM':>8}")
    for p in model["peak"]:
        rs = {r["batch"]: r for r in model["runs"] if r["variant"] == p["variant"] and r["provider"] == p["provider"]}
        cells = "".join(f"{_fmt(rs[b]['faces_per_s'], '.0f') if b in rs else '-':>9}" for b in batches)
        frac = p["gemm_fraction"]
        lines.append(f"  {p['variant'] + ' ' + p['provider']:<12}{cells}{rs[p['batch']]['p50_ms']:>13.2f}"
                     f"{_fmt(None if frac is None else 100 * frac, '.0f') + '%':>8}")
    lines += [f"  {x['name']}: {x['skipped']}" for x in model["variants"] if x["skipped"]]
    lines += [f"  {f['variant']} {f['provider']}: {f['reason']}" for f in model["failures"]]
    keras = result["keras"]
    if keras["skipped"]:
        lines.append(f"keras    skipped: {keras['skipped']}")
    else:
        for key, what in (("predict_one", "model.predict"), ("call_one", "model(x)")):
            k = keras[key]
            lines.append(f"keras    {what:<13} 1 face: {k['p50_ms']:.2f} ms p50, {k['p99_ms']:.2f} ms p99, "
                         f"{k['faces_per_s']:.0f} faces/s ({keras['device']}, {keras['weights']})")
    for c in result["pipeline"]["clips"]:
        p, o = c["project"], c["original"]
        lines.append(f"video    {Path(c['path']).name} {c['width']}x{c['height']}, decode {c['decode']['mean_ms']:.2f} "
                     f"ms/frame")
        lines.append(f"  project  {p['fps']:7.1f} frames/s  p50 {p['p50_ms']:6.2f} ms  p99 {p['p99_ms']:6.2f} ms  "
                     f"face in {100 * p['frames_with_face']:.0f}% of {p['frames']} frames ({p['provider']})")
        if o["skipped"]:
            lines.append(f"  original skipped: {o['skipped']}")
        else:
            lines.append(f"  original {o['fps']:7.1f} frames/s  p50 {o['p50_ms']:6.2f} ms  p99 {o['p99_ms']:6.2f} ms  "
                         f"face in {100 * o['frames_with_face']:.0f}% of {o['frames']} frames")
            lines.append(f"  ratio    {c['ratio']:.1f}x (project / original, first {c['ratio_frames']} frames)")
        lines.append("  stages   " + "  ".join(f"{k} {100 * p['stage_share'][k]:.0f}% ({p['stage_ms'][k]:.2f} ms)"
                                               for k in STAGE_KEYS))
    lines.append("targets  (goals, not asserted)")
    for t in TARGETS:
        e = result["targets"][t.key]
        value = e["value"]
        shown = "n/a" if value is None else (f"{100 * value:.0f}%" if t.unit == "fraction" else f"{value:.2f} {t.unit}")
        mark = "n/a" if e["met"] is None else ("met" if e["met"] else "MISSED")
        lines.append(f"  {t.goal:<62} {shown:>10}  {mark:<6} ({e['basis']})")
    return "\n".join(lines)


def draw_chart(result: dict[str, Any], path: Path) -> None:
    """Faces/s vs batch per variant (left), frames/s project vs original (middle), stage shares (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.2), gridspec_kw={"width_ratios": [1.3, 1, 1]})
    _plot_model(axes[0], result)
    _plot_fps(axes[1], result)
    _plot_stages(axes[2], result)
    m = result["machine"]
    fig.suptitle(f"emocam benchmark{' (quick)' if result['quick'] else ''} {result['date_utc']}: {m['cpu_model']}, "
                 f"{m['logical_cores']} cores, load {m['load_avg_1m_start']} -> {m['load_avg_1m_end']}", fontsize=11)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_model(ax: Any, result: dict[str, Any]) -> None:
    """Faces/s against batch size, one line per (variant, provider), Keras points, the GEMM limit."""
    series: dict[str, list[tuple[int, float]]] = {}
    for run in result["model"]["runs"]:
        series.setdefault(f"ONNX {run['variant']} {run['provider']}", []).append((run["batch"], run["faces_per_s"]))
    for label, pts in series.items():
        xs, ys = zip(*sorted(pts), strict=True)
        ax.plot(xs, ys, marker="o", label=label)
    keras = result["keras"]
    if not keras["skipped"]:
        ax.scatter([1], [keras["predict_one"]["faces_per_s"]], marker="x", s=70, color="k", label="Keras predict")
        ax.scatter([1], [keras["call_one"]["faces_per_s"]], marker="+", s=90, color="k", label="Keras model(x)")
    limit = result["gemm"]["gflops"] * 1e9 / result["model"]["flops_per_face"]
    ax.axhline(limit, ls="--", color="grey", label=f"GEMM-derived limit ({limit:.0f})")
    batches = sorted({r["batch"] for r in result["model"]["runs"]})
    ax.set(xscale="log", yscale="log", xlabel="batch size (faces per call)", ylabel="faces/s",
           title="model throughput")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _plot_fps(ax: Any, result: dict[str, Any]) -> None:
    """Frames/s of the project pipeline and the original loop per clip, with their ratio."""
    clips = result["pipeline"]["clips"]
    idx = np.arange(len(clips))
    proj = [c["project"]["fps"] for c in clips]
    orig = [0.0 if c["original"]["skipped"] else c["original"]["fps"] for c in clips]
    for offset, fps, label in ((-0.2, proj, "project Pipeline"), (0.2, orig, "original loop")):
        ax.bar_label(ax.bar(idx + offset, fps, 0.4, label=label), fmt="%.1f", fontsize=8)
    names = [Path(c["path"]).stem[:24] + "\n" + (f"project {c['ratio']:.1f}x original" if c["ratio"] is not None
                                                  else "original skipped") for c in clips]
    ax.set(xticks=idx, xticklabels=names, ylabel="frames/s", ylim=(0, max(proj + orig) * 1.15),
           title="frames/s: project pipeline vs original notebook loop")
    ax.legend(fontsize=8, loc="upper right")


def _plot_stages(ax: Any, result: dict[str, Any]) -> None:
    """The project's stage shares per clip, as stacked horizontal bars labelled where wide enough."""
    clips = result["pipeline"]["clips"]
    idx = np.arange(len(clips))
    left = np.zeros(len(clips))
    for k in STAGE_KEYS:
        share = np.asarray([c["project"]["stage_share"][k] for c in clips])
        bars = ax.barh(idx, share, 0.5, left=left, label=k)
        ax.bar_label(bars, labels=[f"{100 * v:.0f}%" if v >= 0.05 else "" for v in share], label_type="center",
                     fontsize=8)
        left += share
    ax.set(yticks=idx, yticklabels=[Path(c["path"]).stem[:14] for c in clips], xlim=(0, 1),
           xlabel="share of a frame's time (decode + pipeline)", title="project stage shares")
    ax.invert_yaxis()  # first clip on top
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.15))


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

