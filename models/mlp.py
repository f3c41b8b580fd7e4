"""MLP: a stack of fully connected layers for classification and regression.

Images are flattened, so the same job runs on digits, MNIST or a 2-D regression surface.
"""

import math

from torch import Tensor, nn

from core.catalog import DatasetInfo
from models.base import Family, register
from models.configs.mlp import MLPConfig, MLPJob
from models.supervised import (
    SupervisedTrainer,
    activation,
    forecast,
    forecast_picture,
    predict,
)


class MLP(nn.Module):
    def __init__(self, *, n_in: int, n_out: int, config: MLPConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = n_in
        for size in config.hidden:
            layers.append(nn.Linear(width, size))
            if config.batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(activation(config.activation))
            if config.dropout:
                layers.append(nn.Dropout(config.dropout))
            width = size
        self.to_features = nn.Sequential(*layers)
        self.to_outputs = nn.Linear(width, n_out)

    def forward(self, x: Tensor) -> Tensor:  # (batch, *input_shape) -> (batch, n_out)
        return self.to_outputs(self.to_features(x))


def build(spec: MLPJob, info: DatasetInfo) -> MLP:
    return MLP(
        n_in=math.prod(info.input_shape), n_out=info.n_classes or info.target_dim, config=spec.model
    )


register(
    Family(
        spec=MLPJob,
        build=build,
        trainer=SupervisedTrainer,
        verbs={"predict": predict, "forecast": forecast},
        images={"forecast": forecast_picture},
    )
)
