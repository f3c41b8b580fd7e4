import json

import pytest
import torch
from safetensors.torch import load, save

from core.checkpoint import pack, pack_weights, unpack, unpack_weights


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_optimizer_state_round_trips_exactly(optimizer: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = (
        torch.optim.Adam(model.parameters())
        if optimizer == "adam"
        else torch.optim.LBFGS(model.parameters(), line_search_fn="strong_wolfe")
    )
    x = torch.randn(16, 4)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    blob = pack(
        {"model": model.state_dict(), "optim": opt.state_dict(), "step": 7},
        {"spec": {"family": "mlp"}},
    )
    state, meta = unpack(blob)
    assert meta == {"spec": {"family": "mlp"}} and state["step"] == 7

    # Two copies stepped on from the saved state stay identical.
    twin = torch.nn.Linear(4, 2)
    twin.load_state_dict(state["model"])
    twin_opt = type(opt)(
        twin.parameters(), **({"line_search_fn": "strong_wolfe"} if optimizer == "lbfgs" else {})
    )
    twin_opt.load_state_dict(state["optim"])
    opt.step(closure)

    def twin_closure() -> torch.Tensor:
        twin_opt.zero_grad()
        loss = twin(x).pow(2).mean()
        loss.backward()
        return loss

    twin_opt.step(twin_closure)
    assert torch.equal(model.weight, twin.weight)


def test_foreign_safetensors_are_refused() -> None:
    blob = save({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="not an annlab checkpoint"):
        unpack(blob)
    with pytest.raises(ValueError, match="not annlab weights"):
        unpack_weights(blob)


def test_weights_are_plain_safetensors_with_the_spec() -> None:
    model = torch.nn.Linear(3, 2)
    tensors, meta = unpack_weights(pack_weights(model, {"spec": {"family": "mlp"}}))
    assert set(tensors) == {"weight", "bias"} and torch.equal(tensors["weight"], model.weight)
    assert meta["spec"]["family"] == "mlp"


def test_a_list_of_like_tensors_is_one_tensor_in_the_file() -> None:
    """LBFGS's history (a list of equal-sized vectors) is stored stacked: one entry in the
    file, not hundreds, and it comes back as the same list."""
    history = [torch.randn(5) for _ in range(100)]
    mixed = [torch.zeros(2), torch.zeros(3)]
    blob = pack({"old_dirs": history, "mixed": mixed, "one": [torch.ones(1)]})
    state, _ = unpack(blob)
    assert isinstance(state["old_dirs"], list) and len(state["old_dirs"]) == 100
    assert all(torch.equal(a, b) for a, b in zip(state["old_dirs"], history, strict=True))
    assert [t.shape for t in state["mixed"]] == [(2,), (3,)]
    assert torch.equal(state["one"][0], torch.ones(1))
    assert len(load(blob)) == 1 + 2 + 1


def test_a_checkpoint_of_the_first_format_still_loads() -> None:
    skeleton = {"__dict__": [["w", [{"__tensor__": "s.w.0"}, {"__tensor__": "s.w.1"}]]]}
    header = {"format": "annlab-checkpoint/1", "state": json.dumps(skeleton), "meta": "{}"}
    blob = save({"s.w.0": torch.zeros(2), "s.w.1": torch.ones(2)}, metadata=header)
    state, meta = unpack(blob)
    assert [t.tolist() for t in state["w"]] == [[0.0, 0.0], [1.0, 1.0]] and meta == {}
