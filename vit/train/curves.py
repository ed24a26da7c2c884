"""The training curves written beside every checkpoint (<out>.png): loss and accuracy per evaluated epoch."""
from __future__ import annotations

from matplotlib.figure import Figure  # the object API: no pyplot state, nothing left open per run


def plot_history(history: list[dict], title: str = "") -> Figure:
    """Loss and accuracy per epoch for every split the history holds (train, val, test)."""
    fig = Figure(figsize=(10, 3.6))
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for split, style in (("train", "-"), ("val", "--"), ("test", ":")):
        if f"{split}_loss" in history[0]:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], style, label=split)
            ax_acc.plot(epochs, [r[f"{split}_acc"] for r in history], style, label=split)
    for ax, name in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(0, 1.02)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
