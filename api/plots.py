"""Pictures (matplotlib, no display), PNG or SVG: learning curves, sweep figures, forecasts,
image grids."""

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _png(figure: Any, fmt: str = "png") -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


# Distinct (colour, line style) pairs: ten colours, then the same ten dashed, dotted...
_COLOURS = plt.get_cmap("tab10").colors
_STYLES = ("-", "--", ":", "-.")


def style(index: int) -> tuple[Any, str]:
    """The `index`th line's colour and style; no two of the first 40 are alike."""
    return _COLOURS[index % len(_COLOURS)], _STYLES[(index // len(_COLOURS)) % len(_STYLES)]


def learning_curves(history: list[dict[str, Any]], title: str) -> bytes:
    """One panel per metric kind the job records (loss, accuracy, a GAN's d_loss, g_loss,
    d_real and d_fake, ...), train and val (and each fold), three panels a row."""
    kinds = list(
        dict.fromkeys(
            k.split("_", 1)[1] for row in history for k in row if k.startswith(("train_", "val_"))
        )
    )
    if "loss" in kinds and "mse" in kinds:  # regression's mse repeats its loss
        kinds.remove("mse")
    kinds = kinds or ["loss"]
    columns = min(3, len(kinds))
    rows_of_panels = -(-len(kinds) // columns)
    figure, axes = plt.subplots(
        rows_of_panels, columns, figsize=(5 * columns, 3.6 * rows_of_panels), squeeze=False
    )
    for ax in axes.flat[len(kinds) :]:
        ax.set_visible(False)
    folds = sorted({row.get("fold", 0) for row in history})
    for ax, kind in zip(axes.flat, kinds, strict=False):
        for fold in folds:
            rows = [r for r in history if r.get("fold", 0) == fold]
            suffix = f" (fold {fold + 1})" if len(folds) > 1 else ""
            for split, style in (("train", "-"), ("val", "--")):
                name = f"{split}_{kind}"
                points = [(r["epoch"], r[name]) for r in rows if name in r]
                if points:
                    epochs, values = zip(*points, strict=True)
                    ax.plot(epochs, values, style, label=split + suffix)
        ax.set_xlabel("epoch")
        ax.set_ylabel(kind)
        if kind in ("loss", "mse", "nmse") and all(r.get(f"train_{kind}", 1) > 0 for r in history):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    return _png(figure)


def lines(
    series: dict[str, Sequence[float] | None], title: str, xlabel: str, ylabel: str = ""
) -> bytes:
    """Curves over x = 1, 2, ...; a series whose name starts with "truth" is drawn in black."""
    figure, ax = plt.subplots(figsize=(8, 3.6))
    for name, values in series.items():
        if not values:
            continue
        x = np.arange(1, len(values) + 1)
        style = {"color": "black"} if name.startswith("truth") else {}
        ax.plot(x, values, label=name, linewidth=1, marker="." if len(x) < 30 else None, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps, sweeps: whole numbers
    return _finish(figure, ax, title, xlabel, ylabel)


def path_on_curve(
    curve_x: Sequence[float],
    curve_f: Sequence[float],
    xs: Sequence[float],
    fs: Sequence[float],
    title: str,
) -> bytes:
    """A 1-D function and an optimizer's path on it, the steps coloured from first to last."""
    figure, ax = plt.subplots(figsize=(8, 4))
    ax.plot(curve_x, curve_f, color="gray", linewidth=1, label="f(x)")
    ax.plot(xs, fs, color="black", linewidth=0.5, alpha=0.4)
    points = ax.scatter(xs, fs, c=np.arange(len(xs)), cmap="viridis", s=14, zorder=3)
    ax.scatter(xs[:1], fs[:1], marker="x", color="red", s=40, zorder=4, label="x0")
    figure.colorbar(points, ax=ax, label="step")
    return _finish(figure, ax, title, "x", "f(x)")


Series = dict[str, tuple[Sequence[float], Sequence[float], Sequence[float | None]]]


def bands_figure(
    panels: dict[str, Series], title: str, xlabel: str, ylabel: str, log: bool = False
) -> Any:
    """Small multiples: one panel per key of `panels`, in each a mean curve per label with a
    band of one standard deviation (none where the std is None: one run). Each label keeps
    its colour and line style in every panel. A metric that is never negative has its band
    clipped at zero. Returns the matplotlib Figure."""
    labels = list(dict.fromkeys(label for series in panels.values() for label in series))
    columns = min(3, max(1, len(panels)))
    rows = -(-max(1, len(panels)) // columns)
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(5.2 * columns, 3.8 * rows + 0.6),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    nonnegative = all(
        m >= 0 for series in panels.values() for _, means, _ in series.values() for m in means
    )
    for ax, (panel, series) in zip(axes.flat, panels.items(), strict=False):
        for label, (xs, means, stds) in series.items():
            colour, dash = style(labels.index(label))
            mean = np.asarray(means, dtype=float)
            ax.plot(xs, mean, dash, color=colour, linewidth=1.3, label=label)
            if all(s is not None for s in stds) and len(stds):
                std = np.asarray(stds, dtype=float)
                low = np.maximum(mean - std, 0) if nonnegative else mean - std
                ax.fill_between(xs, low, mean + std, color=colour, alpha=0.15, linewidth=0)
        if log:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if panel:
            ax.set_title(panel, fontsize=10)
    handles, names = axes.flat[0].get_legend_handles_labels()
    for ax in list(axes.flat)[1 : len(panels)]:  # every label once, from whichever panel
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    figure.legend(handles, names, fontsize=8, loc="outside lower center", ncols=min(4, len(names)))
    figure.suptitle(title)
    return figure


def bands(
    panels: dict[str, Series],
    title: str,
    xlabel: str,
    ylabel: str,
    log: bool = False,
    fmt: str = "png",
) -> bytes:
    return _png(bands_figure(panels, title, xlabel, ylabel, log), fmt)


def errorbars(
    lines: dict[str, tuple[Sequence[Any], Sequence[float], Sequence[float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    log: bool = False,
    fmt: str = "png",
) -> bytes:
    """label -> (xs, means, stds) with error bars; xs that are not numbers are categories, in
    the order they first appear (the order the sweep gives them)."""
    figure, ax = plt.subplots(figsize=(8, 4.5))
    categories = list(
        dict.fromkeys(str(x) for _, (xs, _, _) in lines.items() for x in xs if not _is_number(x))
    )
    for index, (label, (xs, means, stds)) in enumerate(lines.items()):
        colour, dash = style(index)
        # Numbers in order, then categories by name.
        order = sorted(
            range(len(xs)),
            key=lambda i: (0, xs[i], "") if _is_number(xs[i]) else (1, 0, str(xs[i])),
        )
        x = [xs[i] if _is_number(xs[i]) else categories.index(str(xs[i])) for i in order]
        ax.errorbar(
            x,
            [means[i] for i in order],
            yerr=[stds[i] for i in order],
            marker="o",
            capsize=3,
            linewidth=1,
            color=colour,
            linestyle=dash,
            label=label,
        )
    if categories:
        ax.set_xticks(range(len(categories)), categories)
    elif log:
        ax.set_xscale("log")
        ticks = sorted({x for xs, _, _ in lines.values() for x in xs})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])  # the swept values, not powers of 10
        ax.minorticks_off()
    return _finish(figure, ax, title, xlabel, ylabel, fmt)


def _finish(figure: Any, ax: Any, title: str, xlabel: str, ylabel: str, fmt: str = "png") -> bytes:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return _png(figure, fmt)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def render(picture: Any, title: str) -> bytes:
    """A models.base.Picture as PNG."""
    # A picture exists only once a model was loaded.
    from models.base import ImageGrid, Trajectories

    if isinstance(picture, ImageGrid):
        return image_rows(picture.rows, title)
    if isinstance(picture, Trajectories):
        return trajectories(picture, title)
    return lines(picture.series, title, picture.xlabel, picture.ylabel)


# How a marked point is drawn, by what it is (models.base.Trajectories.points).
MARKERS: dict[str, dict[str, Any]] = {
    "stable": {"marker": "o", "color": "black"},
    "saddle": {"marker": "D", "color": "tab:orange"},
    "unstable": {"marker": "o", "facecolors": "none", "edgecolors": "tab:red"},
    "fixed point": {"marker": "o", "color": "black"},
    "stored": {"marker": "*", "color": "black"},
}


def trajectories(picture: Any, title: str) -> bytes:
    """Paths through a state space, one square panel per pair of coordinates: each path from
    its start (a dot) on, the marked points over them, the arrows (if any) under them."""
    low, high = picture.bounds
    figure, axes = plt.subplots(
        1, len(picture.panels), figsize=(4.6 * len(picture.panels), 4.2), squeeze=False
    )
    figure.subplots_adjust(wspace=0.35)
    for ax, (i, j) in zip(axes[0], picture.panels, strict=True):
        if picture.arrows is not None:
            x, y, dx, dy = picture.arrows.T
            ax.quiver(x, y, dx, dy, color="0.6", angles="xy", width=0.003)
        for k, path in enumerate(picture.paths):
            (line,) = ax.plot(path[:, i], path[:, j], linewidth=1, alpha=0.8)
            ax.scatter(path[:1, i], path[:1, j], s=12, color=line.get_color())
            if k == 0:
                line.set_label("paths")
        for kind, points in picture.points.items():
            if len(points):
                style = MARKERS.get(kind, {"marker": "s"})
                ax.scatter(points[:, i], points[:, j], s=60, zorder=4, label=kind, **style)
        ax.set_xlim(low - 0.05, high + 0.05)
        ax.set_ylim(low - 0.05, high + 0.05)
        ax.set_aspect("equal")
        ax.set_xlabel(picture.names[i])
        ax.set_ylabel(picture.names[j])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.suptitle(title)
    return _png(figure)


def image_rows(rows: Sequence[tuple[str, np.ndarray]], title: str) -> bytes:
    """A grid with one labelled row per array of images, each (n, channels, height, width)."""
    n = max(len(images) for _, images in rows)
    size = 1.2 if n <= 16 else 0.6
    figure, axes = plt.subplots(
        len(rows), n, figsize=(size * n, (size + 0.1) * len(rows)), squeeze=False
    )
    for (label, images), row_axes in zip(rows, axes, strict=True):
        for i, ax in enumerate(row_axes):
            ax.axis("off")
            if i < len(images):
                image = np.clip(images[i], 0, 1)
                if image.shape[0] == 1:
                    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(image.transpose(1, 2, 0))
        row_axes[0].set_title(label, fontsize=8, loc="left")
    figure.suptitle(title)
    return _png(figure)
