"""A dataset whose workers build a FlexibleUNet by lightly-derm backbone name.

Imported by spawned DataLoader workers in tests/plugins/test_flexunet.py, as user code
would be: the module imports lightly_derm.segmentation, then MONAI.
"""

from __future__ import annotations

import torch

import lightly_derm.segmentation  # noqa: F401  (registers the FlexibleUNet backbones)


class BuildNet(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> torch.Tensor:
        from monai.networks.nets import FlexibleUNet

        net = FlexibleUNet(3, 1, backbone="lightly-derm-resnet18").eval()
        with torch.no_grad():
            return torch.tensor(net(torch.zeros(1, 3, 32, 32)).shape)
