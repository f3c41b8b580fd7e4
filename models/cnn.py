"""CNN: a conv stack (filters, kernel, stride, padding, pooling) and a dense head, for images
(2-D convolutions) and time series (1-D convolutions along a window, one channel)."""

import math

from torch import Tensor, nn

from core.catalog import DatasetInfo
from models.base import Family, register
from models.configs.cnn import CNNConfig, CNNJob, conv_input
from models.supervised import SupervisedTrainer, activation, forecast, forecast_picture, predict

CONVS: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d}
BATCHNORMS: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
POOLS: dict[tuple[str, int], type[nn.Module]] = {
    ("max", 1): nn.MaxPool1d,
    ("max", 2): nn.MaxPool2d,
    ("avg", 1): nn.AvgPool1d,
    ("avg", 2): nn.AvgPool2d,
}


def conv(
    dims: int,
    channels: int,
    filters: int,
    *,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
) -> nn.Module:
    """PyTorch's convolution over `dims` axes (a cross-correlation: the kernel is not flipped)."""
    return CONVS[dims](channels, filters, kernel, stride, padding)


def pool(
    kind: str,
    dims: int,
    *,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    padding: tuple[int, ...],
) -> nn.Module:
    """PyTorch's max or average pool over `dims` axes (an average counts the padding's zeros)."""
    return POOLS[kind, dims](size, stride, padding)


class CNN(nn.Module):
    def __init__(self, *, input_shape: tuple[int, ...], n_out: int, config: CNNConfig):
        super().__init__()
        shape = conv_input(input_shape)
        self.series = len(input_shape) == 1  # a window of values: one channel
        dims = len(shape) - 1
        blocks: list[nn.Module] = []
        channels = shape[0]
        for layer in config.conv:
            blocks.append(
                conv(
                    dims,
                    channels,
                    layer.filters,
                    kernel=layer.kernels(dims),
                    stride=layer.strides(dims),
                    padding=layer.pads(dims),
                )
            )
            if layer.batchnorm:
                blocks.append(BATCHNORMS[dims](layer.filters))
            blocks.append(activation(config.activation))
            if layer.pool:
                blocks.append(
                    pool(
                        layer.pool,
                        dims,
                        size=layer.pool_sizes(dims),
                        stride=layer.pool_strides(dims),
                        padding=layer.pool_pads(dims),
                    )
                )
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

    def forward(self, x: Tensor) -> Tensor:  # (batch, *input_shape) -> (batch, n_out)
        if self.series:
            x = x.unsqueeze(1)  # (batch, 1, length)
        return self.to_logits(self.to_features(x))


def build(spec: CNNJob, info: DatasetInfo) -> CNN:
    n_out = info.n_classes or info.target_dim
    return CNN(input_shape=info.input_shape, n_out=n_out, config=spec.model)


register(
    Family(
        spec=CNNJob,
        build=build,
        trainer=SupervisedTrainer,
        verbs={"predict": predict, "forecast": forecast},
        images={"forecast": forecast_picture},
    )
)
