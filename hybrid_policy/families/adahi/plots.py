"""PNG plots of a calibration: Δ against rejection probability, and the measured
success-vs-transmission trade-off as τ sweeps, with τ* marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from hybrid_policy.families.adahi.threshold import EPS  # noqa: E402


def deviation_vs_rejection(doc: dict[str, Any], path: Path) -> Path:
    delta = np.array([np.nan if d is None else d for d in doc["samples"]["delta"]], float)
    r = np.asarray(doc["samples"]["rejection_prob"], float)
    keep = np.isfinite(delta)
    f, tau = doc["fit"], doc["thresholds"]["tau"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(delta[keep], r[keep], s=6, alpha=0.35, label="calibration steps")
    xs = np.linspace(0, np.nanmax(delta[keep]), 400)
    ax.plot(xs, f["intercept"] + f["slope"] * np.log(xs + EPS), "k-",
            label=f"fit r = {f['intercept']:.3f} + {f['slope']:.3f} ln(Δ + ε)")
    ax.set_ylim(-0.05, 1.05)
    c = doc["costs"]
    ax.axhline(c["rejection_budget"], color="tab:gray", ls=":", label="link bound L_v / C_e")
    lifted = c.get("quality_bound") is None
    ax.axhline(c["mean_rejection"], color="tab:olive", ls="-.",
               label="r̄ (quality bound lifted: the draft alone holds)" if lifted
               else "quality bound r̄")
    ax.axvline(tau, color="tab:red", ls="--", label=f"τ* = {tau:.3f}")
    ax.set_xlabel("action deviation Δ")
    ax.set_ylabel("rejection probability (exact, level-wise)")
    ax.set_title(f"{doc['task']}: Spearman ρ = {f['spearman']:.2f}, AUROC = {f['auroc']:.2f}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def tradeoff(doc: dict[str, Any], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for name, marker in (("adahi", "o-"), ("random_skip", "s--")):
        pts = sorted(doc["sweep"][name], key=lambda p: p["uplink_tx_per_step"])
        ax.plot([p["uplink_tx_per_step"] for p in pts], [p["success_rate"] for p in pts],
                marker, label=name)
    tau = doc["thresholds"]["tau"]
    star = min(doc["sweep"]["adahi"], key=lambda p: abs(p["param"] - tau))
    ax.plot(star["uplink_tx_per_step"], star["success_rate"], "r*", ms=16,
            label=f"ADAHI at τ* = {tau:.3f}")
    ax.set_xlabel("uplink transmissions per step")
    ax.set_ylabel("success rate")
    ax.set_title(f"{doc['task']} on {doc['link']}: success vs transmission as τ sweeps")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
