"""The bar chart of ``benchmarks/run.py --plot FILE.png``: each server against the raw floor.

Run on the benchmark's main thread after the table is printed; matplotlib
(in the ``bench`` extra) is imported only here, so only ``--plot`` needs it.
One horizontal bar per server and figure: its figure divided by the raw
threaded floor's in the same run (1.0, drawn as a line, is the floor). For
latencies a bar above 1 is worse, as the labels say; for the rest it is better.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

FLOOR = "raw floor"


def ratios(
    figures: Dict[str, Dict[str, float]], names: Sequence[str]
) -> List[Tuple[str, Dict[str, float]]]:
    """Each row's figures over the floor's, leaving out rows the floor has no figure for."""
    rows = []
    for label, row in figures.items():
        floor = row.get(FLOOR, float("nan"))
        if not floor or floor != floor:
            continue
        shown = label + (" (lower is better)" if "latency" in label else "")
        rows.append((shown, {name: row.get(name, float("nan")) / floor for name in names}))
    return rows


def draw(
    path: str,
    echo: Dict[str, Dict[str, float]],
    fan: Dict[str, Dict[str, float]],
    names: Sequence[str],
    info: Dict[str, str],
) -> None:
    """Write the chart of the echo and fan-out figures to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [name for name in names if name != FLOOR]
    rows = ratios(echo, names) + ratios(fan, names)
    if not rows or not others:
        raise SystemExit("--plot: nothing to draw (the raw floor and another server are needed)")
    height = 0.8 / len(others)
    figure, axes = plt.subplots(figsize=(11, 1.0 + 0.3 * len(rows) * len(others)))
    for index, name in enumerate(others):
        positions = [row + index * height for row in range(len(rows))]
        values = [figures.get(name, float("nan")) for _, figures in rows]
        axes.barh(positions, [0 if v != v else v for v in values], height, label=name)
        for position, value in zip(positions, values):
            text = "n/a" if value != value else f"{value:.2f}"
            axes.text(max(0 if value != value else value, 0) + 0.01, position, text, va="center")
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_yticks([row + 0.4 - height / 2 for row in range(len(rows))])
    axes.set_yticklabels([label for label, _ in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("server / raw threaded floor, same run (1.0 = the floor)")
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title("wsthread benchmark: echo and fan-out against the raw threaded floor")
    figure.text(
        0.01,
        0.005,
        f"{info.get('date', '?')}; {info.get('machine', '?')}; {info.get('python', '?')};"
        f" commit {info.get('commit', '?')[:40]}",
        fontsize=7,
    )
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
