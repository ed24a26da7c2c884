"""Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks", Sec. 4.2) and the
two numbers that say whether it worked: expected calibration error (Eq. 3, ECE_BINS equal-width
confidence bins) and the negative log-likelihood."""
from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15  # Guo et al.'s M = 15 equal-width bins of the top-class probability over [0, 1]


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, max_iter: int = 100) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) on held-out (logits, labels): L-BFGS on
    log T, so T stays positive. One parameter: the top class, hence accuracy, never changes."""
    logits, labels = logits.detach().double().clone(), labels.detach().long().clone()  # not inference tensors
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits / temperature)."""
    return float(F.cross_entropy(logits.double() / temperature, labels.long()))


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Guo et al. Eq. 3: sum over equal-width bins of |accuracy - mean confidence| weighted by the
    bin's share of the photos; the confidence is the top-class probability. probs: (N, C)."""
    conf, pred = probs.double().max(1)
    return _ece_of(conf, (pred == labels).double(), bins)


def ece_equal_mass(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Eq. 3 over bins that hold equal numbers of photos (sorted by confidence; Nixon et al. 2019's
    adaptive ECE) instead of equal widths: no bin edge falls where the photos happen to crowd."""
    conf, pred = probs.double().max(1)
    order = conf.argsort()
    correct = (pred == labels).double()[order]
    gaps = [(c - k).sum().abs() for c, k in zip(conf[order].tensor_split(bins), correct.tensor_split(bins))]
    return float(sum(gaps) / len(conf))


def ece_by_binning(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """The ECE under other binnings than the reported one: on a few dozen photos it moves with where the
    bin edges fall, so a bar read at one binning alone can pass or fail by an edge."""
    return {"10 bins": ece(probs, labels, 10), "20 bins": ece(probs, labels, 20),
            f"{ECE_BINS} equal-mass": ece_equal_mass(probs, labels)}


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> list[dict]:
    """The reliability diagram's bars: per non-empty bin, its range, count, accuracy and mean confidence."""
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64).tolist()
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            rows.append({"lo": lo, "hi": hi, "count": int(in_bin.sum()), "accuracy": float(correct[in_bin].mean()),
                         "confidence": float(conf[in_bin].mean())})
    return rows


def ece_by_chance(probs: torch.Tensor, bins: int = ECE_BINS, draws: int = 2000, seed: int = 0) -> dict:
    """The ECE that a perfectly calibrated model would show on these N photos by chance alone
    (consistency resampling, Bröcker & Smith 2007; Vaicenavicius et al. 2019): each photo's top class
    is drawn correct with its own confidence, and the ECE of every draw is taken. On a few dozen
    photos that is far from 0, so an observed ECE below the 95th percentile is no evidence of
    miscalibration. {"median", "p95"} of the draws."""
    q = chance_draws(probs, bins, draws, seed).quantile(torch.tensor([0.5, 0.95], dtype=torch.float64))
    return {"median": float(q[0]), "p95": float(q[1]), "draws": draws}


def chance_draws(probs: torch.Tensor, bins: int = ECE_BINS, draws: int = 2000, seed: int = 0) -> torch.Tensor:
    """`ece_by_chance`'s draws, (draws,) float64: the ECE of each resampling (say, the share under a bar)."""
    conf = probs.double().max(1).values
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(draws):
        correct = torch.rand(conf.shape, generator=g, dtype=torch.float64) < conf
        values.append(_ece_of(conf, correct.double(), bins))
    return torch.tensor(values, dtype=torch.float64)


def ece_interval(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS, draws: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """A 95 % bootstrap interval of the ECE: the photos resampled with replacement (percentiles 2.5, 97.5)."""
    conf, pred = probs.double().max(1)
    correct = (pred == labels).double()
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(draws):
        i = torch.randint(len(conf), (len(conf),), generator=g)
        values.append(_ece_of(conf[i], correct[i], bins))
    q = torch.tensor(values, dtype=torch.float64).quantile(torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(q[0]), float(q[1])


def _ece_of(conf: torch.Tensor, correct: torch.Tensor, bins: int) -> float:
    """Eq. 3 on top-class confidences and 0/1 correctness: the bins ((m - 1) / M, m / M] of `ece` and
    `reliability` (one bin index per photo, so the resampling above stays fast)."""
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    index = torch.bucketize(conf, edges[1:-1]).clamp(max=bins - 1)  # edges[i - 1] < conf <= edges[i]
    gap = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, (correct - conf) * (conf > 0))
    return float(gap.abs().sum() / len(conf))
