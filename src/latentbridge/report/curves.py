"""Learning curves (PNG): accuracy per system and every loss term against step."""

from __future__ import annotations

from pathlib import Path

from latentbridge.eval.systems import SYSTEMS
from latentbridge.report.runs import RunRecord

# -- curves and the document --------------------------------------------------------------------------


def plot_curves(run: RunRecord, path: Path) -> bool:
    """Accuracy per system and every loss term against step; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [e["step"] for e in run.evaluations]
    for system in SYSTEMS:
        values = [run.accuracy(e, system) for e in run.evaluations]
        if any(v is not None for v in values):
            ax_acc.plot(steps, values, marker="o", label=system)
    ax_acc.set(xlabel="step", ylabel="accuracy", title=f"{run.run_id}: accuracy", ylim=(0, 1))
    ax_acc.legend()
    terms = sorted({k for m in run.metrics for k in m if k.startswith("loss/")})
    for key in ["loss", *terms]:
        points = [(m["step"], m[key]) for m in run.metrics if m.get(key) is not None]
        if points:
            ax_loss.plot(*zip(*points, strict=True), label=key)
    ax_loss.set(xlabel="step", ylabel="loss (unweighted terms)", title="training losses")
    ax_loss.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
