"""PNG figures (matplotlib, headless Agg backend)."""

from __future__ import annotations

STYLE = {"rm": ("tab:blue", "o"), "tests": ("tab:green", "s"), "random": ("tab:gray", "^"),
         "majority": ("tab:orange", "D"), "oracle": ("black", "")}


def best_of_n_png(curve: dict, path: str, title: str = "Best-of-N") -> str:
    """Accuracy against N (log2 axis) for each strategy in `curve` = {"n": [...], "accuracy": {name: [...]}}."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    for name, ys in curve["accuracy"].items():
        color, marker = STYLE.get(name, (None, "x"))
        ax.plot(curve["n"], ys, label=name, color=color, marker=marker or None,
                linestyle="--" if name == "oracle" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve["n"], [str(n) for n in curve["n"]])
    ax.set_xlabel("N (candidates per problem)")
    ax.set_ylabel("accuracy of the selected candidate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
