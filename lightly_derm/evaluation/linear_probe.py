"""Linear probe: multinomial logistic regression on frozen features, full batch.

The linear evaluation protocol of SSL papers (a linear classifier on frozen features),
solved as a convex problem instead of with SGD: standardised features, softmax
cross-entropy plus L2 on the weights, minimised by :class:`torch.optim.LBFGS` with a
strong-Wolfe line search over the whole training set at once. Deterministic, a few
seconds for 25k × 2048 features, and with no learning rate or epochs to tune (lightly's
:class:`~lightly.utils.benchmarking.LinearClassifier` is the SGD alternative for data
that does not fit in memory).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightly_derm.evaluation.features import Features
from lightly_derm.evaluation.metrics import classification_metrics, require_two_classes


class LinearProbe:
    """Multinomial logistic regression: ``softmax(standardise(x) @ W.T + b)``.

    Minimises ``Σ_i w_i CE(x_i, y_i) / Σ_i w_i + weight_decay / 2 · ||W||²`` (the bias is
    not penalised), with ``w_i = 1``, or with ``class_weight="balanced"`` ``w_i = N / (C
    n_{y_i})`` (scikit-learn's convention). With ``standardize``, features are centred
    and scaled by the training mean and standard deviation first.

    Args:
        weight_decay: The L2 strength λ (> 0 keeps the problem strictly convex).
        max_iter: L-BFGS iterations.
        standardize: Standardise features with the training statistics.
        class_weight: ``None`` or ``"balanced"``.
        device: Where to solve; default the features' device.

    Attributes:
        weight: (C, D) after :meth:`fit`, in standardised feature space.
        bias: (C,).
        converged: Whether L-BFGS stopped on its gradient tolerance.

    Example:
        >>> import torch
        >>> x = torch.cat([torch.randn(20, 5) + 2, torch.randn(20, 5) - 2])
        >>> y = torch.cat([torch.zeros(20), torch.ones(20)]).long()
        >>> probe = LinearProbe().fit(x, y)
        >>> float((probe.predict(x) == y).float().mean())
        1.0
    """

    def __init__(
        self,
        weight_decay: float = 1e-3,
        max_iter: int = 500,
        standardize: bool = True,
        class_weight: Literal["balanced"] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
        if class_weight not in (None, "balanced"):
            raise ValueError(
                f"class_weight must be None or 'balanced', got {class_weight!r}"
            )
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.standardize = standardize
        self.class_weight = class_weight
        self.device = device
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.converged = False

    def _prepare(self, features: Tensor) -> Tensor:
        x = features.float()
        if self.mean is not None and self.std is not None:
            x = (x.to(self.mean.device) - self.mean) / self.std
        return x

    def fit(
        self, features: Tensor, targets: Tensor, num_classes: int | None = None
    ) -> LinearProbe:
        """Fits the probe on (N, D) features and (N,) class indices; returns ``self``."""
        if features.ndim != 2 or targets.shape != features.shape[:1]:
            raise ValueError(
                f"features must be (N, D) and targets (N,), got {tuple(features.shape)} and "
                f"{tuple(targets.shape)}"
            )
        if features.shape[0] == 0:
            raise ValueError("no samples to fit the linear probe on")
        device = (
            torch.device(self.device) if self.device is not None else features.device
        )
        y = targets.long().to(device)
        if int(y.min()) < 0:
            raise ValueError(
                "targets hold negative (unlabelled) entries; fit on labelled samples"
            )
        num_classes = int(y.max()) + 1 if num_classes is None else num_classes
        if int(y.max()) >= num_classes:
            raise ValueError(
                f"a target is {int(y.max())} but num_classes is {num_classes}"
            )
        x = features.float().to(device)
        if self.standardize:
            self.mean = x.mean(0)
            self.std = x.std(0, unbiased=False).clamp_min(1e-6)
            x = (x - self.mean) / self.std
        else:
            self.mean = self.std = None
        counts = torch.bincount(y, minlength=num_classes).float()
        if self.class_weight == "balanced":
            sample_weight = (y.numel() / (num_classes * counts.clamp_min(1)))[y]
        else:
            sample_weight = torch.ones_like(y, dtype=torch.float32)
        sample_weight = sample_weight / sample_weight.sum()
        weight = torch.zeros(num_classes, x.shape[1], device=device, requires_grad=True)
        bias = torch.zeros(num_classes, device=device, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=self.max_iter,
            history_size=20,
            tolerance_grad=1e-6,
            tolerance_change=1e-10,
            line_search_fn="strong_wolfe",
        )

        def closure() -> Tensor:
            optimizer.zero_grad()
            logits = x @ weight.T + bias
            loss = (F.cross_entropy(logits, y, reduction="none") * sample_weight).sum()
            loss = loss + 0.5 * self.weight_decay * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        state = optimizer.state[weight]
        self.converged = int(state.get("n_iter", 0)) < self.max_iter
        self.weight = weight.detach()
        self.bias = bias.detach()
        return self

    def decision_function(self, features: Tensor) -> Tensor:
        """(N, C) logits."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("call fit before predicting")
        if features.ndim != 2 or features.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"features must be (N, {self.weight.shape[1]}), got {tuple(features.shape)}"
            )
        x = self._prepare(features.to(self.weight.device))
        return x @ self.weight.T + self.bias

    def predict_proba(self, features: Tensor) -> Tensor:
        """(N, C) class probabilities."""
        return self.decision_function(features).softmax(dim=1)

    def predict(self, features: Tensor) -> Tensor:
        """(N,) predicted class indices."""
        return self.decision_function(features).argmax(dim=1)


def linear_probe_evaluate(
    train: Features,
    test: Features,
    num_classes: int | None = None,
    weight_decay: float = 1e-3,
    max_iter: int = 500,
    class_weight: Literal["balanced"] | None = None,
) -> dict[str, Any]:
    """Fits a :class:`LinearProbe` on ``train`` and scores it on ``test``.

    Unlabelled training samples (target ``-1``) are left out.

    Returns:
        ``{"linear_accuracy", "linear_balanced_accuracy", "linear_auc" (binary),
        "linear_num_samples", "linear_weight_decay", "linear_class_weight",
        "linear_converged"}``.

    Raises:
        DataError: The labelled training samples hold fewer than two classes (see
            :func:`~lightly_derm.evaluation.require_two_classes`).
    """
    bank = train.labelled()
    if bank.targets.numel() == 0:
        raise ValueError("the training features have no labelled sample")
    require_two_classes(bank.targets, "the training labels")
    if num_classes is None:
        num_classes = int(max(int(bank.targets.max()), int(test.targets.max()))) + 1
    probe = LinearProbe(weight_decay, max_iter, class_weight=class_weight)
    probe.fit(bank.features, bank.targets, num_classes)
    result = classification_metrics(
        probe.predict_proba(test.features).cpu(), test.targets, prefix="linear_"
    )
    result["linear_weight_decay"] = weight_decay
    result["linear_class_weight"] = class_weight
    result["linear_converged"] = probe.converged
    return result
