"""JCT distributions per policy as a PNG (optional: needs the ``plot`` extra, matplotlib)."""

from __future__ import annotations

__all__ = ["plot_jct"]


def plot_jct(jcts: dict[str, list[float]], path: str, title: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise SystemExit("--plot needs matplotlib: pip install -e '.[plot]'") from exc
    fig, (cdf, box) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in jcts.items():
        xs = sorted(max(v, 1e-3) for v in values)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        cdf.plot(xs, ys, label=name)
    cdf.set_xscale("log")
    cdf.set_xlabel("JCT (h, log)")
    cdf.set_ylabel("fraction of jobs")
    cdf.set_title("JCT CDF")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()
    names = list(jcts)
    box.boxplot([[max(v, 1e-3) for v in jcts[n]] for n in names], whis=(5, 95), showfliers=False)
    box.set_xticks(range(1, len(names) + 1), names, rotation=20)
    box.set_yscale("log")
    box.set_ylabel("JCT (h, log); whiskers p5-p95")
    means = [sum(jcts[n]) / len(jcts[n]) for n in names]
    box.scatter(range(1, len(names) + 1), means, marker="D", color="red", label="mean", zorder=3)
    box.legend()
    box.set_title("JCT by policy")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
