"""A served model's weights are laid out for answering calls (models.base.for_inference):
convolutions NHWC, a CPU's nn.Linear weights column-major. The layout must change nothing but
speed: the module answers as it did when it trained."""

import copy

import pytest
import torch
from torch import nn

from core.datasets import load_dataset
from core.settings import Settings
from models.base import for_inference
from models.registry import get_family
from models.specs import parse_job_spec


@pytest.mark.parametrize(
    "model",
    [
        {"family": "mlp", "model": {"hidden": [64, 32]}},
        {"family": "cnn"},
        {"family": "vit"},
    ],
    ids=lambda m: m["family"],
)
def test_a_model_laid_out_for_inference_answers_as_it_trained(
    settings: Settings, model: dict
) -> None:
    spec = parse_job_spec({**model, "dataset": {"name": "digits"}})
    info = load_dataset(spec.dataset, settings).info
    torch.manual_seed(0)
    trained = get_family(spec.family).build(spec, info).eval()
    served = for_inference(copy.deepcopy(trained), torch.device("cpu"))
    linears = [m for m in served.modules() if type(m) is nn.Linear]
    assert linears and all(m.weight.t().is_contiguous() for m in linears)
    for m in served.modules():
        if isinstance(m, nn.Conv2d):
            assert m.weight.is_contiguous(memory_format=torch.channels_last)
    assert not served.training
    x = torch.rand(5, *info.input_shape)
    with torch.inference_mode():
        torch.testing.assert_close(served(x), trained(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(served(x[:1]), trained(x[:1]), rtol=1e-5, atol=1e-5)
    # The values are the trained ones: the state dict saves as it was.
    for name, tensor in trained.state_dict().items():
        assert torch.equal(served.state_dict()[name], tensor), name
