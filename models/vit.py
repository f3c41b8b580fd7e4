"""ViT (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"): an image as a sequence of
patch tokens through a transformer encoder, for classification; predict can also return the
attention maps."""

from typing import Any

import torch
from torch import Tensor, nn

from core.catalog import DatasetInfo
from models import supervised
from models.base import BadRequest, Family, Served, register
from models.configs.verbs import PredictRequest
from models.configs.vit import ViTConfig, ViTJob
from models.supervised import SupervisedTrainer

MAX_ATTENTION_INPUTS = 64


class Patches(nn.Module):
    """Cut images into non-overlapping square patches, row by row, each flattened."""

    def __init__(self, patch: int):
        super().__init__()
        self.patch = patch

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, H, W) -> (batch, patches, C * p * p)
        p = self.patch
        x = x.unfold(2, p, p).unfold(3, p, p)  # (batch, C, H/p, W/p, p, p)
        batch, channels, rows, columns = x.shape[:4]
        x = x.permute(0, 2, 3, 1, 4, 5)  # (batch, H/p, W/p, C, p, p)
        return x.reshape(batch, rows * columns, channels * p * p)


class Block(nn.Module):
    """A pre-norm transformer encoder block: x + attention(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, *, dim: int, heads: int, mlp_dim: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, dim),
            nn.Dropout(dropout),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, attention: bool = False) -> tuple[Tensor, Tensor | None]:
        """(batch, tokens, dim) -> the same, and if `attention` the attention weights averaged
        over heads (batch, tokens, tokens); else None, which lets torch use fused attention."""
        h = self.attention_norm(x)
        h, weights = self.attention(h, h, h, need_weights=attention, average_attn_weights=True)
        x = x + self.dropout(h)  # weights[b, i, j]: how much token i reads token j
        return x + self.mlp(self.mlp_norm(x)), weights


class ViT(nn.Module):
    def __init__(self, *, input_shape: tuple[int, int, int], n_out: int, config: ViTConfig):
        super().__init__()
        self.grid = config.grid(input_shape)
        n_patches = self.grid[0] * self.grid[1]
        self.to_patches = Patches(config.patch)
        self.to_embeddings = nn.Linear(input_shape[0] * config.patch**2, config.dim)
        # With pool "mean" the head reads the mean patch token, and there is no CLS token.
        self.cls = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pool == "cls" else None
        tokens = n_patches + (self.cls is not None)
        self.position = nn.Parameter(torch.empty(1, tokens, config.dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(
                dim=config.dim, heads=config.heads, mlp_dim=config.mlp_dim, dropout=config.dropout
            )
            for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(config.dim)
        self.to_logits = nn.Linear(config.dim, n_out)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, H, W) -> (batch, n_out)
        return self.run(x, attention=False)[0]

    def run(self, x: Tensor, *, attention: bool) -> tuple[Tensor, Tensor | None]:
        """Logits and, if `attention`, each block's attention averaged over heads
        (batch, depth, tokens, tokens), tokens being [CLS,] patch 0, patch 1, ... row by row."""
        tokens = self.to_embeddings(self.to_patches(x))  # (batch, patches, dim)
        if self.cls is not None:
            cls = self.cls.expand(len(x), -1, -1)  # (batch, 1, dim)
            tokens = torch.cat([cls, tokens], dim=1)  # (batch, 1 + patches, dim)
        tokens = self.dropout(tokens + self.position)
        maps = []
        for block in self.blocks:
            tokens, weights = block(tokens, attention=attention)
            maps.append(weights)
        tokens = self.norm(tokens)
        pooled = tokens[:, 0] if self.cls is not None else tokens.mean(dim=1)  # (batch, dim)
        return self.to_logits(pooled), torch.stack(maps, dim=1) if attention else None

    def attention_maps(self, x: Tensor) -> Tensor:
        """(batch, depth, H/p, W/p): per block, the attention over the patches of what the head
        reads — the CLS token (which also attends to itself, so a map sums to 1 minus that), or
        with mean pooling the patch tokens' attention averaged over them (a map sums to 1)."""
        weights = self.run(x, attention=True)[1]  # (batch, depth, tokens, tokens)
        if self.cls is not None:
            over_patches = weights[:, :, 0, 1:]  # the CLS row, patch columns
        else:
            over_patches = weights.mean(dim=2)
        return over_patches.reshape(len(x), len(self.blocks), *self.grid)


def build(spec: ViTJob, info: DatasetInfo) -> ViT:
    return ViT(input_shape=info.input_shape, n_out=info.n_classes, config=spec.model)


class Predict(supervised.Predict):
    """Labels and probabilities, and with `attention` each input's attention maps per block
    (such a call is answered alone)."""

    def joins(self, request: PredictRequest) -> bool:
        return not request.attention

    def rows(self, served: Served, request: PredictRequest) -> Tensor:
        if request.attention and len(request.inputs) > MAX_ATTENTION_INPUTS:
            raise BadRequest(
                "inputs", f"attention maps are returned for at most {MAX_ATTENTION_INPUTS} inputs"
            )
        return super().rows(served, request)

    @torch.inference_mode()
    def __call__(self, served: Served, request: PredictRequest) -> dict[str, Any]:
        x = self.rows(served, request)
        answer = self.answer(served, x)
        if request.attention:
            answer["attention"] = served.module.attention_maps(x).cpu().tolist()
        return answer


register(Family(spec=ViTJob, build=build, trainer=SupervisedTrainer, verbs={"predict": Predict()}))
