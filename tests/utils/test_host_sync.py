from __future__ import annotations

import torch

from lightly_derm.utils.host_sync import record_host_syncs


def test_records_what_syncs_on_a_gpu() -> None:
    x = torch.randn(16)
    with record_host_syncs(factories=True) as syncs:
        x[x > 0].sum()  # boolean mask: nonzero
        float(x.max())  # value read on the host
        x.tolist()
        torch.zeros(3)  # created on the host
        torch.tensor(2.0, device=x.device)  # copied from Python data
        torch.arange(4).repeat_interleave(torch.tensor([1, 2, 1, 0]))
    ops = [r.op for r in syncs]
    assert any("index.Tensor (boolean mask)" in op for op in ops)
    assert any("_local_scalar_dense" in op for op in ops)
    assert "Tensor.tolist" in ops
    assert "torch.zeros" in ops and "torch.tensor(<Python data>)" in ops
    assert any("repeat_interleave" in op for op in ops)
    assert all(__file__ in r.location for r in syncs)
    # zeros, tensor(2.0), arange(4) and tensor([1, 2, 1, 0])
    assert len(syncs.host_tensors()) == 4
    assert len(syncs.syncs()) == len(syncs) - 4


def test_sync_free_code_records_nothing() -> None:
    x = torch.randn(8, 4)
    with record_host_syncs(factories=True) as syncs:
        y = torch.where(x > 0, x, torch.zeros_like(x)).sum(0)
        torch.full((), 0.5, device=x.device) * y
        x.masked_fill(x < 0, 0.0)  # a mask as a tensor argument, not as an index
        torch.arange(8, device=x.device) // 2
    assert len(syncs) == 0, syncs.summary()
    assert syncs.summary() == "no host synchronisations"
