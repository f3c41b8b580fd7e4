"""CNN: a conv stack (filters, kernel, stride, padding, pooling) and a dense head, for images."""

import math

from torch import Tensor, nn

from core.catalog import DatasetInfo
from models.base import Family, register
from models.configs.cnn import CNNConfig, CNNJob
from models.supervised import SupervisedTrainer, activation, predict


class CNN(nn.Module):
    def __init__(self, *, input_shape: tuple[int, int, int], n_out: int, config: CNNConfig):
        super().__init__()
        blocks: list[nn.Module] = []
        channels = input_shape[0]
        for layer in config.conv:
            blocks.append(
                nn.Conv2d(channels, layer.filters, layer.kernel, layer.stride, layer.pad())
            )
            if layer.batchnorm:
                blocks.append(nn.BatchNorm2d(layer.filters))
            blocks.append(activation(config.activation))
            if layer.pool:
                pool = nn.MaxPool2d if layer.pool == "max" else nn.AvgPool2d
                blocks.append(pool(layer.pool_size))
            channels = layer.filters
        self.to_features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten()]
        width = math.prod(config.feature_shapes(input_shape)[-1])
        for size in config.dense:
            if config.dropout:
                head.append(nn.Dropout(config.dropout))
            head += [nn.Linear(width, size), activation(config.activation)]
            width = size
        if config.dropout:
            head.append(nn.Dropout(config.dropout))
        head.append(nn.Linear(width, n_out))
        self.to_logits = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, height, width) -> (batch, n_out)
        return self.to_logits(self.to_features(x))


def build(spec: CNNJob, info: DatasetInfo) -> CNN:
    return CNN(input_shape=info.input_shape, n_out=info.n_classes, config=spec.model)


register(Family(spec=CNNJob, build=build, trainer=SupervisedTrainer, verbs={"predict": predict}))
