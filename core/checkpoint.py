"""Checkpoints as safetensors: tensors in the body, everything else as JSON in the header.

Nothing here unpickles: nested state (an optimizer's state_dict, RNG states, counters) is split
into tensors, stored by path, and a JSON skeleton that says where each tensor goes back.
"""

import hashlib
import json
import struct
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

FORMAT = "annlab-checkpoint/2"  # /2 adds lists stored as one stacked tensor
READS = frozenset({"annlab-checkpoint/1", FORMAT})


def _alike(items: list[Any]) -> bool:
    """A list of two or more tensors of one shape, dtype and device (LBFGS's history)."""
    if len(items) < 2 or not all(isinstance(t, torch.Tensor) for t in items):
        return False
    first = items[0]
    return all(
        (t.shape, t.dtype, t.device) == (first.shape, first.dtype, first.device) for t in items
    )


def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[path] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": path}
    if isinstance(obj, dict):
        # Pairs, not a JSON object: an optimizer's state is keyed by int.
        return {"__dict__": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, list) and _alike(obj):  # one tensor in the file, not one per item
        tensors[path] = torch.stack([t.detach() for t in obj]).to("cpu").contiguous()
        return {"__stacked__": path}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint")


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if isinstance(node, dict):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__stacked__" in node:
            return list(tensors[node["__stacked__"]].unbind(0))
        if "__tuple__" in node:
            return tuple(_unflatten(v, tensors) for v in node["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in node["__dict__"]}
    return node


def pack(state: dict[str, Any], meta: dict[str, Any] | None = None) -> bytes:
    """Serialize nested state (tensors at any depth) plus JSON metadata to safetensors bytes."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "s", tensors)
    header = {"format": FORMAT, "state": json.dumps(skeleton), "meta": json.dumps(meta or {})}
    return save_tensors(tensors, metadata=header)


def read_metadata(blob: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ (an 8-byte length, then JSON)."""
    (length,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8 : 8 + length]).get("__metadata__", {})


def unpack(
    blob: bytes, device: torch.device | str = "cpu"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The inverse of pack: (state, meta)."""
    header = read_metadata(blob)
    if header.get("format") not in READS:
        raise ValueError(f"not an annlab checkpoint (format {header.get('format')!r})")
    tensors = {k: v.to(device) for k, v in load_tensors(blob).items()}
    return _unflatten(json.loads(header["state"]), tensors), json.loads(header["meta"])


def pack_weights(model: torch.nn.Module, meta: dict[str, Any]) -> bytes:
    """Plain safetensors of the state_dict (names as PyTorch gives them), for serving and export."""
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return save_tensors(weights, metadata={"format": "annlab-weights/1", "meta": json.dumps(meta)})


def unpack_weights(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    header = read_metadata(blob)
    if header.get("format") != "annlab-weights/1":
        raise ValueError(f"not annlab weights (format {header.get('format')!r})")
    return load_tensors(blob), json.loads(header["meta"])


def weights_hash(model: torch.nn.Module) -> str:
    """sha256 of the weights (names, shapes and values), e.g. as they start."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        array = tensor.detach().cpu().contiguous()
        digest.update(f"{name}{tuple(array.shape)}{array.dtype}".encode())
        digest.update(array.numpy().tobytes())
    return digest.hexdigest()
