"""LSTM (Hochreiter & Schmidhuber 1997): one-step forecasting of a time series from its last
`lag` values, and sequence classification of images read row by row."""

import torch
from torch import Tensor, nn

from core.catalog import DatasetInfo
from models.base import Family, register
from models.configs.lstm import LSTMConfig, LSTMJob, sequence_shape
from models.supervised import (
    SupervisedTrainer,
    activation,
    forecast,
    forecast_picture,
    predict,
)


def unrolled(lstm: nn.LSTM, x: Tensor) -> Tensor:
    """The final hidden states (layers * directions, batch, hidden) of `lstm` over x (batch,
    steps, features), step by step in plain tensor operations, the gates in torch's order
    (input, forget, cell, output): what torch.func.vmap can run, which the fused op is not."""
    directions = 2 if lstm.bidirectional else 1
    finals, inputs = [], x
    for layer in range(lstm.num_layers):
        outputs = []
        for direction in range(directions):
            suffix = f"l{layer}" + ("_reverse" if direction else "")
            w_ih, w_hh = getattr(lstm, f"weight_ih_{suffix}"), getattr(lstm, f"weight_hh_{suffix}")
            projected = inputs @ w_ih.T  # (batch, steps, 4 * hidden), every step at once
            if lstm.bias:
                projected = projected + getattr(lstm, f"bias_ih_{suffix}")
                projected = projected + getattr(lstm, f"bias_hh_{suffix}")
            h = c = x.new_zeros(len(x), lstm.hidden_size)
            steps = range(x.shape[1])
            seen = []
            for t in reversed(steps) if direction else steps:
                i, f, g, o = (projected[:, t] + h @ w_hh.T).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                seen.append(h)
            outputs.append(torch.stack(seen[::-1] if direction else seen, dim=1))
            finals.append(h)
        inputs = torch.cat(outputs, dim=2)
    return torch.stack(finals)


class LSTM(nn.Module):
    vmapped = False  # set while a stack runs it under torch.func.vmap (models/stack.py)

    def __init__(self, *, input_shape: tuple[int, ...], n_out: int, config: LSTMConfig):
        super().__init__()
        self.steps, self.features = sequence_shape(input_shape)
        self.directions = 2 if config.bidirectional else 1
        self.lstm = nn.LSTM(
            self.features,
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout,
            bidirectional=config.bidirectional,
            batch_first=True,
        )
        head: list[nn.Module] = []
        width = self.directions * config.hidden
        for size in config.head:
            head += [nn.Linear(width, size), activation(config.activation)]
            width = size
        head.append(nn.Linear(width, n_out))
        self.to_outputs = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:  # (batch, *input_shape) -> (batch, n_out)
        if x.dim() == 4:  # an image, read row by row: (batch, height, channels, width)
            x = x.permute(0, 2, 1, 3)
        sequence = x.reshape(len(x), self.steps, self.features)  # (batch, steps, features)
        if self.vmapped:
            final = unrolled(self.lstm, sequence)
        else:
            _, (final, _) = self.lstm(sequence)  # (layers * directions, batch, hidden)
        # The last layer's final states: forward after the last step and, if bidirectional,
        # backward after the first step, so each direction has read the whole sequence.
        last = final[-self.directions :].transpose(0, 1)  # (batch, directions, hidden)
        return self.to_outputs(last.reshape(len(x), -1))


def build(spec: LSTMJob, info: DatasetInfo) -> LSTM:
    return LSTM(
        input_shape=info.input_shape,
        n_out=info.n_classes or info.target_dim,
        config=spec.model,
    )


register(
    Family(
        spec=LSTMJob,
        build=build,
        trainer=SupervisedTrainer,
        verbs={"predict": predict, "forecast": forecast},
        images={"forecast": forecast_picture},
    )
)
