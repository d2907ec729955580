"""The report's pictures: matplotlib figures written as inline SVG (text kept as text, no
external reference), one function per kind of picture.

Every function takes numbers the report has already picked out of the records and returns the
SVG text of one figure; every figure has a title, labelled axes with their units, and one colour
and one marker per backend column (:class:`Looks`), the same in every figure of the page, so that
lines of backends that agree exactly still show as distinct markers on one line.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.ticker import NullLocator

WIDTH = 11.0            # inches at 96 dpi: the page's content width (1,100 CSS pixels) at most
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
EXACT = "exactly 0"     # how a bar of value 0 on a log axis is labelled


@dataclass
class Looks:
    """One colour and one marker per backend column label, in the order the columns come."""

    labels: Sequence[str] = ()
    _index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = {label: k for k, label in enumerate(dict.fromkeys(self.labels))}

    def _k(self, label: str) -> int:
        return self._index.setdefault(label, len(self._index))

    def colour(self, label: str) -> str:
        return f"C{self._k(label) % 10}"

    def marker(self, label: str) -> str:
        return MARKERS[self._k(label) % len(MARKERS)]

    def line(self, label: str) -> dict:
        """Plot keywords: the column's colour and marker, hollow, the first columns drawn larger and
        thicker so that a later backend's identical line lies inside an earlier one's."""
        k = self._k(label)
        return {"color": self.colour(label), "marker": self.marker(label), "markerfacecolor": "none",
                "markersize": max(4.0, 9.0 - 1.6 * k), "linewidth": max(1.0, 2.8 - 0.6 * k), "label": label}


# ------------------------------------------------------------------------------------ writing

def svg(fig: Any, name: str, title: str) -> str:
    """``fig`` as inline SVG: text kept as text, no prolog, no metadata, the element ids that are
    referenced made unique to this figure (``name``) and the others dropped, scaled to the page's
    width, with ``title`` as its accessible name."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": name}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    refs = set(re.findall(r'href="#([^"]+)"', text)) | set(re.findall(r"url\(#([^)]+)\)", text))
    text = re.sub(r'\s+id="([^"]+)"', lambda m: m.group(0) if m.group(1) in refs else "", text)   # unused ids
    text = re.sub(r'\bid="', f'id="{name}-', text)
    text = text.replace('href="#', f'href="#{name}-').replace("url(#", f"url(#{name}-")
    width = float(re.search(r'<svg[^>]*? width="([0-9.]+)pt"', text).group(1)) * 4 / 3   # pt -> CSS px
    label = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return re.sub(r'(<svg[^>]*?) width="[^"]*" height="[^"]*"',
                  rf'\1 class="chart" style="max-width:{width:.0f}px" role="img" aria-label="{label}"', text,
                  count=1)


def _figure(width: float, height: float, panels: int = 1, **kwargs) -> tuple[Any, list]:
    """A figure (matplotlib's object API: no display, no global state) and its ``panels`` axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=96)
    fig.set_layout_engine("constrained")
    return fig, list(np.atleast_1d(fig.subplots(1, panels, **kwargs)))


def _finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _positive_floor(values: list[float]) -> float:
    """A decade under the smallest positive value: where a bar of 0 ends on a log axis."""
    positive = [v for v in values if v and v > 0]
    return 10.0 ** math.floor(math.log10(min(positive)) - 1) if positive else 1e-3


def _log_bars(ax, groups: list[str], series: dict[str, list[float | None]], colours: list[str],
              base: float | None = None) -> None:
    """Horizontal grouped bars on a log axis growing from ``base`` (or a decade under the smallest
    value); a value of 0 has no bar but the words "exactly 0" at the base, a missing one nothing."""
    positive = [v for vals in series.values() for v in vals if v is not None and v > 0]
    start = base if base is not None else _positive_floor(positive)
    h = 0.8 / max(len(series), 1)
    y = np.arange(len(groups))
    for k, ((label, vals), colour) in enumerate(zip(series.items(), colours, strict=True)):
        at = y + (k - (len(series) - 1) / 2) * h
        ax.barh(at, [v - start if v else 0 for v in vals], h, left=start, label=label, color=colour)
        for pos, v in zip(at, vals, strict=True):
            if v == 0:
                ax.text(start, pos, f"  {EXACT}", va="center", fontsize=7)
    ax.set_yticks(y, groups)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.set_xlim(min([*positive, start]) / 10, max([*positive, start]) * 10)
    ax.xaxis.set_minor_locator(NullLocator())     # decades only: minor ticks cost more to lay out than they say
    if base is not None:
        ax.axvline(base, color="black", linewidth=0.8)


# ------------------------------------------------------------------------------ generic charts

def heatmap(rows: list[str], cols: list[str], values: list[list[float | None]], title: str, name: str,
            unit: str) -> str:
    """A log10 heatmap with every value written in its cell (None: not measured, 0: exact)."""
    positive = [v for row in values for v in row if v]
    floor = min(positive) if positive else 1.0                    # an exact 0 gets the best colour
    data = np.array([[np.nan if v is None else math.log10(max(v, floor)) for v in row] for row in values])
    fig, (ax,) = _figure(min(WIDTH, max(6.0, 2.5 + 1.3 * len(cols))), 1.2 + 0.3 * len(rows))
    finite = data[np.isfinite(data)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    vmax = max(hi, lo + 1)
    im = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", aspect="auto", vmin=lo, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=20, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            dark = v is not None and (data[i, j] - lo) / (vmax - lo) < 0.6      # viridis is dark below that
            ax.text(j, i, "—" if v is None else ("0" if v == 0 else f"{v:.1e}"), ha="center", va="center",
                    fontsize=8, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label=f"log10 {unit}")
    return svg(fig, name, title)


def training(title: str, runs: dict[str, dict[str, list[float] | None]], looks: Looks, name: str) -> str:
    """Test accuracy against epoch, one line per backend, and beside it the training loss when any
    run recorded one per epoch."""
    losses = any(run.get("loss") for run in runs.values())
    fig, axes = _figure(WIDTH if losses else WIDTH * 0.6, 3.6, 2 if losses else 1)
    for label, run in runs.items():
        axes[0].plot(range(1, len(run["accuracy"]) + 1), [100 * a for a in run["accuracy"]], **looks.line(label))
        if run.get("loss"):
            axes[1].plot(range(1, len(run["loss"]) + 1), run["loss"], **looks.line(label))
    _finish(axes[0], "test accuracy" if losses else "", "epoch", "test accuracy (%)")
    if losses:
        _finish(axes[1], "training loss", "epoch", "mean minibatch loss (cross-entropy, nats)")
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
    return svg(fig, name, title)


CELL = 0.36    # inches per value of an image panel at most: room for the value written in it


Panel = tuple[str, np.ndarray, "tuple[float, float] | None"]    # a label, a 2-D array, its grey scale (None: its own)


def image_rows(title: str, rows: list[tuple[str, list[Panel]]], name: str) -> str:
    """Rows of small 2-D arrays as grey images (dark = high), each value written in its cell and
    each row named at its left: the spec's input, kernel and output, then each backend's output
    (the outputs on one grey scale, so that a wrong one looks wrong). Panels are laid out by hand
    in inches (no layout engine: far faster with a text per cell)."""
    from matplotlib.figure import Figure

    gap, left, head = 0.3, 1.3, 0.45                     # between panels, the row names, a panel's title
    need = max(left + sum(a.shape[1] * CELL + gap for _, a, _ in panels) for _, panels in rows)
    cell = CELL * min(1.0, (WIDTH - left) / (need - left))
    heights = [head + max(a.shape[0] for _, a, _ in panels) * cell + 0.15 for _, panels in rows]
    width, height = min(WIDTH, need), sum(heights)
    fig = Figure(figsize=(width, height), dpi=96)
    top = height
    for (row_name, panels), h in zip(rows, heights, strict=True):
        top -= h
        fig.text(0.1 / width, (top + h / 2) / height, row_name, fontsize=9, va="center", fontweight="bold")
        x = left
        for label, a, scale in panels:
            ax = fig.add_axes((x / width, (top + h - head - a.shape[0] * cell) / height, a.shape[1] * cell / width,
                               a.shape[0] * cell / height))
            _plane(ax, f"{label}\n{a.shape[0]}×{a.shape[1]}", a, scale or value_range([a]))
            x += a.shape[1] * cell + gap
    return svg(fig, name, title)


def value_range(arrays: list[np.ndarray]) -> tuple[float, float]:
    """The smallest and the largest finite value of the arrays; (0, 1) when there is none."""
    finite = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def _plane(ax, label: str, a: np.ndarray, scale: tuple[float, float]) -> None:
    """One array as a grey image on the scale (lo, hi) with its values written in; NaN and ±inf
    are written, not drawn."""
    lo, hi = scale
    ax.imshow(np.where(np.isfinite(a), a, np.nan), cmap="Greys", vmin=lo, vmax=hi if hi > lo else lo + 1,
              interpolation="nearest", aspect="auto")
    for (i, j), v in np.ndenumerate(a):
        dark = hi > lo and np.isfinite(v) and (v - lo) / (hi - lo) > 0.55
        ax.text(j, i, f"{v:.4g}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_title(label, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def filter_bank(title: str, rows: list[tuple[str, np.ndarray]], name: str) -> str:
    """Convolution filters (O, C, kh, kw) as small images side by side, one row of O filters per
    entry (its first input channel), one colour scale for all (red positive, blue negative), so
    that equal filters look equal."""
    kh, kw = rows[0][1].shape[2:]
    o = max(w.shape[0] for _, w in rows)
    limit = max(float(np.nanmax(np.abs(w))) for _, w in rows) or 1.0
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, 0.6 + len(rows) * (0.25 + 0.16 * kh)), dpi=96)
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.16, right=0.9, top=0.95, bottom=0.12 if len(rows) > 1 else 0.3, hspace=0.35)
    for ax, (label, w) in zip(axes, rows, strict=True):
        mosaic = np.full((kh, o * (kw + 1) - 1), np.nan)
        for k in range(w.shape[0]):
            mosaic[:, k * (kw + 1):k * (kw + 1) + kw] = w[k, 0]
        im = ax.imshow(mosaic, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_xticks([k * (kw + 1) + (kw - 1) / 2 for k in range(o)], [str(k + 1) for k in range(o)], fontsize=7)
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        ax.tick_params(length=0)
        for side in ax.spines.values():
            side.set_visible(False)
    axes[-1].set_xlabel(f"filter (each {kh}×{kw})")
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01, label="weight")
    return svg(fig, name, title)


# ---------------------------------------------------------------------------------- performance

@dataclass(frozen=True)
class Point:
    """One forward measurement on the roofline."""

    backend: str
    concept: str
    size: str
    intensity: float   # FLOP per byte of the minimal traffic
    gflops: float
    unsteady: bool = False   # the bench found its spread too wide to trust: drawn hollow


def roofline(title: str, points: list[Point], peak: float | None, bandwidth: float | None, looks: Looks,
             name: str) -> str:
    """Achieved GFLOP/s against arithmetic intensity (log-log): the measured peak as the flat
    roof, the measured memory bandwidth (GB/s) as the slanted one, one point per measurement; a
    concept's name sits by its fastest point. The x axis spans the points and the ridge point
    (peak / bandwidth, where the roofs meet, marked), each with a margin, however few the points."""
    fig, (ax,) = _figure(WIDTH, 5.4)
    ridge = peak / bandwidth if peak and bandwidth else None   # FLOP/byte where the two roofs meet
    xs = [p.intensity for p in points] + ([ridge] if ridge else [])
    lo, hi = min(xs) / 3, max(xs) * 3   # the ridge inside too: both roofs and their meeting are seen
    grid = np.geomspace(lo, hi, 200)
    if peak:
        roof = np.full_like(grid, peak) if not bandwidth else np.minimum(peak, bandwidth * grid)
        ax.plot(grid, roof, color="black", linewidth=1.6, label="roof")
        ax.annotate(f"peak {peak:.3g} GFLOP/s", (hi, peak), xytext=(-4, 4), textcoords="offset points",
                    ha="right", fontsize=8)
    if bandwidth:
        ax.plot(grid, bandwidth * grid, color="black", linewidth=0.8, linestyle=":",
                label=f"memory bandwidth {bandwidth:.3g} GB/s")
    if ridge:
        ax.plot([ridge], [peak], marker="o", markersize=5, color="black", linestyle="none")
        ax.annotate(f"ridge {ridge:.3g} FLOP/byte", (ridge, peak), xytext=(5, -12), textcoords="offset points",
                    ha="left", fontsize=7, color="0.25")
    for backend in dict.fromkeys(p.backend for p in points):
        mine = [p for p in points if p.backend == backend]
        colour = looks.colour(backend)
        ax.scatter([p.intensity for p in mine], [p.gflops for p in mine], s=28, label=backend,
                   marker=looks.marker(backend), facecolors=["none" if p.unsteady else colour for p in mine],
                   edgecolors=colour, alpha=0.85)
    if any(p.unsteady for p in points):
        ax.scatter([], [], s=28, marker="o", facecolors="none", edgecolors="0.3",
                   label="hollow: spread too wide to trust")
    best = {}
    for p in points:
        if p.concept not in best or p.gflops > best[p.concept].gflops:
            best[p.concept] = p
    for p in best.values():
        ax.annotate(p.concept, (p.intensity, p.gflops), xytext=(4, 3), textcoords="offset points", fontsize=7,
                    color="0.25")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    _finish(ax, "", "arithmetic intensity (FLOP per byte of input and output, float32)",
            "achieved GFLOP/s (log scale)")
    ax.legend(fontsize=8, loc="lower right")
    return svg(fig, name, title)


def relative(title: str, groups: list[str], series: dict[str, list[float | None]], looks: Looks,
             reference: str, name: str) -> str:
    """Each backend's throughput over ``reference``'s on the same case: bars from 1 (to the
    right: faster), log scale."""
    fig, (ax,) = _figure(WIDTH, 1.0 + len(groups) * max(0.28, 0.14 * len(series)))
    _log_bars(ax, groups, series, [looks.colour(b) for b in series], base=1.0)
    _finish(ax, "", f"throughput / {reference}'s throughput (log scale; above 1 = faster than {reference})", "")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    return svg(fig, name, title)


# --------------------------------------------------------------------------------------- claims
#
# One picture per claim of spec/claims.yaml. Each takes the details of the claim's records, by
# backend column label (only records holding every key the claim's entry in CLAIMS names), the
# claim itself (its parameters and thresholds), the looks, the figure's name and its title (the
# report writes the title above the picture, so the picture itself has none).

QUANTITY = ("#4d4d4d", "#e39c2f")      # two measured quantities side by side (not backends)


def _bars(ax, groups: list[str], series: dict[str, list[float]], colours: list[str], unit: str = "") -> None:
    """Horizontal grouped bars on a linear axis with every value written at the bar's end."""
    h = 0.8 / max(len(series), 1)
    y = np.arange(len(groups))
    top = max((v for vals in series.values() for v in vals), default=1) or 1
    for k, ((label, vals), colour) in enumerate(zip(series.items(), colours, strict=True)):
        at = y + (k - (len(series) - 1) / 2) * h
        ax.barh(at, vals, h, label=label, color=colour)
        for pos, v in zip(at, vals, strict=True):
            ax.text(v + top * 0.01, pos, f"{v:,.4g}{unit}", va="center", fontsize=7)
    ax.set_yticks(y, groups)
    ax.set_ylim(len(groups) - 0.5, -0.5)
    ax.set_xlim(0, top * 1.18)


def _configs(runs: dict[str, dict]) -> list[str]:
    first = next(iter(runs.values()))
    return sorted((k for k in first if re.fullmatch(r"config\d+", k)), key=lambda k: int(k[6:]))


def _config_label(claim: dict, i: int) -> str:
    cfg = claim["parameters"]["configs"][i]
    return f"config {i + 1}: x {'×'.join(map(str, cfg['x']))}, w {'×'.join(map(str, cfg['w']))}"


def _usage_panels(runs: dict[str, dict], claim: dict, looks: Looks, keys: tuple[str, str], titles: tuple[str, str],
                  xlabels: tuple[str, str], bases: tuple[float | None, float | None]) -> Any:
    """Two panels of log bars, one row per configuration of the claim and one bar per backend."""
    configs = _configs(runs)
    groups = [_config_label(claim, int(c[6:])) for c in configs]
    fig, axes = _figure(WIDTH, 1.5 + 0.45 * len(groups) * max(2, len(runs)), 2)
    colours = [looks.colour(b) for b in runs]
    for ax, key, title, xlabel, base in zip(axes, keys, titles, xlabels, bases, strict=True):
        _log_bars(ax, groups, {b: [d[c][key] for c in configs] for b, d in runs.items()}, colours, base)
        _finish(ax, title, xlabel, "", legend=False)
    axes[1].set_yticks([])
    axes[0].legend(fontsize=8, loc="lower left")
    return fig


def linear_collapse(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    fig, (ax,) = _figure(WIDTH, 1.2 + 0.55 * len(runs))
    labels = list(runs)
    _log_bars(ax, labels, {"largest |chain − collapsed|": [runs[k]["max_abs_diff"] for k in labels],
                           "allowed by the rounding bounds": [runs[k]["max_allowed"] for k in labels]}, list(QUANTITY))
    _finish(ax, "", f"absolute difference of the outputs after {next(iter(runs.values()))['layers']:,} layers "
                "(log scale)", "backend")
    return svg(fig, name, title)


def xor_needs_nonlinearity(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    from matplotlib.colors import ListedColormap

    p = claim["parameters"]
    pts, t = np.array(p["points"], float), np.array(p["targets"])
    first = next(iter(runs.values()))
    g = np.linspace(-0.5, 1.5, 201)
    gx, gy = np.meshgrid(g, g)
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    best = first["linear_best_model"]
    linear = (grid @ np.array(best["w"]) + best["b"] > 0).reshape(gx.shape)
    net = {k: np.array(v, float) for k, v in p["relu_net"].items()}
    relu = ((np.maximum(grid @ net["w1"] + net["b1"], 0) @ net["w2"] + net["b2"])[:, 0] > 0.5).reshape(gx.shape)
    fig, axes = _figure(WIDTH * 0.8, 4.0, 2)
    panels = ((f"the best linear model: {first['linear_best_correct']} of 4 right", linear),
              (f"two ReLU units: {first['relu_correct']} of 4 right", relu))
    for ax, (sub, region) in zip(axes, panels, strict=True):
        ax.imshow(region, origin="lower", extent=(-0.5, 1.5, -0.5, 1.5), cmap=ListedColormap(["#dbe7f3", "#f7dcc4"]),
                  vmin=0, vmax=1, interpolation="nearest")
        ax.contour(gx, gy, region.astype(float), levels=[0.5], colors="black", linewidths=1)
        for cls, marker, colour in ((0, "o", "#1f5f9f"), (1, "s", "#c0561b")):
            sel = t == cls
            ax.scatter(pts[sel, 0], pts[sel, 1], s=140, marker=marker, color=colour, zorder=3, label=f"XOR = {cls}")
        _finish(ax, sub, "x₁", "x₂", legend=False)
    for (x1, x2), y in zip(pts, first["relu_outputs"], strict=True):
        axes[1].annotate(f"y = {y:g}", (x1, x2), xytext=(0, -20), textcoords="offset points", ha="center", fontsize=8)
    axes[0].legend(fontsize=8, loc="upper left", title="shaded: class 0 (blue), class 1 (orange)", title_fontsize=7)
    return svg(fig, name, title)


def convolution_theorem(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    fig = _usage_panels(runs, claim, looks, ("max_abs_diff", "bound_usage"),
                        ("largest |FFT − direct|", "difference / allowed rounding"),
                        ("absolute difference (log scale)", "bound usage (log scale; the bound is 1)"), (None, 1.0))
    return svg(fig, name, title)


def convolution_is_flipped_correlation(runs: dict[str, dict], claim: dict, looks: Looks, name: str,
                                       title: str) -> str:
    xlabel = "|difference| / allowed rounding (log scale; the bound is 1)"
    fig = _usage_panels(runs, claim, looks, ("bound_usage", "unflipped_usage"),
                        ("convolve2d(x, w) − conv2d(x, flip(w)): within the bound",
                         "convolve2d(x, w) − conv2d(x, w): far outside it"), (xlabel, xlabel), (1.0, 1.0))
    return svg(fig, name, title)


def pooling_shift_invariance(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    k = claim["parameters"]["kernel"]
    first = next(iter(runs.values()))
    groups = [f"{first['shifts']} shifts inside a {k}×{k} window", f"one shift by a whole window ({k} rows)"]
    fig, (ax,) = _figure(WIDTH, 1.3 + 0.45 * len(runs))
    _bars(ax, groups, {b: [d["changed_within_window"], d["changed_by_whole_window"]] for b, d in runs.items()},
          [looks.colour(b) for b in runs])
    _finish(ax, "", f"pooled outputs that changed (count, of {first['pooled_outputs']:,})", "")
    return svg(fig, name, title)


def vanishing_gradients(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    fig, (ax,) = _figure(WIDTH, 4.2)
    for label, d in runs.items():
        for key, style, act in (("sigmoid_grad_norms", "-", "sigmoid"), ("relu_grad_norms", "--", "ReLU")):
            norms = d[key]
            ax.plot(range(1, len(norms) + 1), norms, **(looks.line(label) | {"linestyle": style,
                                                                            "label": f"{act} · {label}"}))
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _finish(ax, "", "layer (1 = first, next to the input)", "‖∂L/∂W‖ (Frobenius norm, log scale)")
    ax.legend(fontsize=8, ncol=2)
    return svg(fig, name, title)


def inception_reduction(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    fig, (ax,) = _figure(WIDTH, 1.2 + 0.6 * len(runs))
    rows, y = [], 0
    for label, d in runs.items():
        direct, red, five = (d[k] / 1e6 for k in ("direct_macs", "reduction_macs", "reduced_5x5_macs"))
        ax.barh(y, direct, 0.7, color=QUANTITY[0], label="5×5 directly" if y == 0 else None)
        ax.barh(y + 1, red, 0.7, color=QUANTITY[1], label="1×1 reduction" if y == 0 else None)
        ax.barh(y + 1, five, 0.7, left=red, color="#8fb9e3", label="5×5 on the reduced maps" if y == 0 else None)
        ax.text(direct, y, f" {direct:,.1f} M", va="center", fontsize=8)
        ax.text(red + five, y + 1, f" {red + five:,.1f} M ({direct / (red + five):.2f}× fewer)", va="center",
                fontsize=8)
        rows += [f"{label}: direct", f"{label}: reduced"]
        y += 2
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, max(d["direct_macs"] for d in runs.values()) / 1e6 * 1.3)
    _finish(ax, "", "million multiply-adds", "")
    return svg(fig, name, title)


def learned_features_beat_engineered(runs: dict[str, dict], claim: dict, looks: Looks, name: str,
                                     title: str) -> str:
    fig, (ax,) = _figure(WIDTH, 1.2 + 0.6 * len(runs))
    _bars(ax, list(runs), {"hand-made ink profiles, softmax regression": [100 * d["engineered_accuracy"]
                                                                          for d in runs.values()],
                           "features learned from the pixels (digits CNN)": [100 * d["learned_accuracy"]
                                                                             for d in runs.values()]},
          list(QUANTITY), "%")
    _finish(ax, "", "test accuracy (%)", "backend")
    ax.legend(fontsize=8, loc="lower right")
    return svg(fig, name, title)


def last_layer_is_logistic_regression(runs: dict[str, dict], claim: dict, looks: Looks, name: str,
                                      title: str) -> str:
    labels = list(runs)
    fig, (diff, usage) = _figure(WIDTH, 1.3 + 0.45 * len(labels), 2)
    _log_bars(diff, labels, {"difference": [runs[k]["max_abs_diff"] for k in labels]}, [QUANTITY[0]])
    _log_bars(usage, labels, {"usage": [runs[k]["bound_usage"] for k in labels]}, [QUANTITY[0]], 1.0)
    usage.set_yticks([])
    _finish(diff, "largest |difference| of the probabilities", "probability difference (log scale)", "",
            legend=False)
    _finish(usage, "difference / allowed rounding", "bound usage (log scale; the bound is 1)", "", legend=False)
    return svg(fig, name, title)


def lstm_long_memory(runs: dict[str, dict], claim: dict, looks: Looks, name: str, title: str) -> str:
    fig, (ax,) = _figure(WIDTH, 4.0)
    first = next(iter(runs.values()))
    for label, d in runs.items():
        ax.plot([r["delay"] for r in d["recall"]], [100 * r["accuracy"] for r in d["recall"]], **looks.line(label))
    ax.axvline(first["delay"], color="0.4", linewidth=0.8, label=f"the claim's delay ({first['delay']} steps)")
    ax.axhline(100 * claim["threshold"]["accuracy_min"], color="black", linestyle="--", linewidth=0.8,
               label="the claim's threshold")
    ax.axhline(100 * first["chance"], color="0.5", linestyle=":", linewidth=1, label="chance")
    ax.set_ylim(0, 105)
    _finish(ax, "", "delay (distractor steps between the token and the question)", "recall: test accuracy (%)")
    ax.legend(fontsize=8, loc="lower left")
    return svg(fig, name, title)


@dataclass(frozen=True)
class Picture:
    """A claim's picture: the detail keys it needs, the function drawing it, its title."""

    needs: tuple[str, ...]
    draw: Any
    title: str


CLAIMS = {
    "linear_collapse": Picture(
        ("max_abs_diff", "max_allowed", "layers"), linear_collapse,
        "A deep linear stack against the one layer of its product: their difference and what rounding allows"),
    "xor_needs_nonlinearity": Picture(
        ("linear_best_model", "linear_best_correct", "relu_outputs", "relu_correct"), xor_needs_nonlinearity,
        "XOR's four points and the region each model assigns to class 1"),
    "convolution_theorem": Picture(
        ("config0",), convolution_theorem,
        "conv2d_fft against conv2d on the same inputs: the difference and its share of the allowed rounding"),
    "convolution_is_flipped_correlation": Picture(
        ("config0",), convolution_is_flipped_correlation,
        "convolve2d(x, w) against conv2d with the kernel flipped, and without the flip"),
    "pooling_shift_invariance": Picture(
        ("shifts", "pooled_outputs", "changed_within_window", "changed_by_whole_window"), pooling_shift_invariance,
        "max_pool2d of a sparse feature map: pooled outputs that changed under each kind of shift"),
    "vanishing_gradients": Picture(
        ("sigmoid_grad_norms", "relu_grad_norms"), vanishing_gradients,
        "Weight-gradient norm per layer of a deep sigmoid stack (solid) and a deep ReLU stack (dashed)"),
    "inception_reduction": Picture(
        ("direct_macs", "reduction_macs", "reduced_5x5_macs"), inception_reduction,
        "Multiply-adds of the 5×5 branch with and without the 1×1 reduction, counted on the backend's calls"),
    "learned_features_beat_engineered": Picture(
        ("engineered_accuracy", "learned_accuracy"), learned_features_beat_engineered,
        "Test accuracy on the 8×8 digits: hand-made features against learned ones"),
    "last_layer_is_logistic_regression": Picture(
        ("bound_usage", "max_abs_diff"), last_layer_is_logistic_regression,
        "The digits CNN's class probabilities against softmax regression on its features"),
    "lstm_long_memory": Picture(
        ("recall", "delay", "chance"), lstm_long_memory,
        "Recall against delay: the trained LSTM's test accuracy as the gap between the token and the question "
        "grows"),
}
