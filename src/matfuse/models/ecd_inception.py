"""InceptionV3 with a regression head for charge-density images.

torchvision is not importable beside torch 2.13 in this environment, so InceptionV3 (Szegedy et
al. 2016) is implemented here with torchvision's module names (``Conv2d_1a_3x3``, ``Mixed_5b`` ...,
``conv``/``bn`` inside each block, BatchNorm eps 1e-3): a torchvision ``inception_v3`` ImageNet
state dict saved to a local file loads into it (``fc`` and ``AuxLogits`` are skipped; the head is
new). Without such a file the network is randomly initialised and ``pretrained`` is False.
75x75 is the smallest input the stem accepts. Grey images are repeated to 3 channels.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class EcdInceptionConfig:
    """Constructor arguments (stored in checkpoints)."""

    in_channels: int = 1
    dropout: float = 0.2
    weights_path: str | None = None  # torchvision-format ImageNet state dict (.pth), optional

    def to_dict(self) -> dict:
        return asdict(self)


class BasicConv2d(nn.Module):
    def __init__(self, c_in: int, c_out: int, **kw: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    def __init__(self, c: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, c: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        bp = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        return torch.cat([b1, b3, bd, bp], 1)


class EcdInception(nn.Module):
    """InceptionV3 trunk -> global average pool -> Dropout -> Linear(2048, 1)."""

    feature_dim = 2048
    name = "ecd_inception"

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "EcdInception":
        """Build from :meth:`to_config`'s kwargs (the registry's factory)."""
        return cls(EcdInceptionConfig(**kwargs))

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.cfg.to_dict()}

    def __init__(self, cfg: EcdInceptionConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or EcdInceptionConfig()
        self.cfg = cfg
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2048, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        self.pretrained = False
        if cfg.weights_path:
            self.pretrained = self.load_imagenet(cfg.weights_path)

    def load_imagenet(self, path: str) -> bool:
        """Load a torchvision-format InceptionV3 state dict; False (logged) if the file is absent."""
        p = Path(path)
        if not p.is_file():
            log.warning("InceptionV3 weights %s not found: random initialisation (pretrained=false)", p)
            return False
        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        trunk = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits.", "head."))}
        missing, unexpected = self.load_state_dict(trunk, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise ValueError(f"{p}: not a torchvision InceptionV3 state dict (missing {missing[:3]}, unexpected {unexpected[:3]})")
        log.info("loaded ImageNet InceptionV3 weights from %s", p)
        return True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) with H, W >= 75 -> (B, 2048)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] < 75 or x.shape[-2] < 75:
            raise ValueError(f"InceptionV3 needs images of at least 75x75, got {tuple(x.shape[-2:])}")
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            x = getattr(self, name)(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B,)."""
        return self.head(self.dropout(self.features(x))).squeeze(-1)
