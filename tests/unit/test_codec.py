"""The codec turns nested training state into tensors + JSON and back, losslessly, without pickle."""

import math
import random

import numpy as np
import pytest
import torch

from waypoint.checkpoint import UnsupportedValueError, decode, encode


def roundtrip(state):
    tensors, tree = encode(state)
    return decode(tree, dict(tensors))


def test_optimizer_state_with_int_keys_round_trips():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    out = roundtrip(opt.state_dict())
    assert set(out["state"]) == {0, 1}
    assert torch.equal(out["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert out["param_groups"] == opt.state_dict()["param_groups"]


def test_rng_states_of_python_numpy_and_torch_round_trip():
    state = {"py": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state()}
    out = roundtrip(state)
    assert out["py"] == state["py"]
    assert out["np"][0] == "MT19937" and np.array_equal(out["np"][1], state["np"][1]) and out["np"][1].dtype == np.uint32
    assert torch.equal(out["torch"], state["torch"])


def test_tuples_non_finite_floats_and_numpy_scalars_keep_their_types():
    state = {"t": (1, "a", None, True), "nan": float("nan"), "inf": -math.inf, "np": np.float32(2.5)}
    out = roundtrip(state)
    assert out["t"] == (1, "a", None, True) and isinstance(out["t"], tuple)
    assert math.isnan(out["nan"]) and out["inf"] == -math.inf
    assert out["np"] == np.float32(2.5) and isinstance(out["np"], np.float32)


def test_dict_keys_that_look_like_markers_are_escaped():
    state = {"__tensor__": "not a tensor", "__tuple__": [1]}
    assert roundtrip(state) == state


def test_tied_tensors_are_listed_under_every_key_and_restored_shared():
    w = torch.randn(5, 5)
    tensors, tree = encode({"a": w, "b": w})
    assert set(tensors) == {"a", "b"} and tensors["a"] is tensors["b"]
    out = decode(tree, {"a": tensors["a"]})
    assert out["a"] is out["b"]


def test_views_of_one_storage_with_different_shapes_are_distinct_tensors():
    base = torch.arange(12.0)
    tensors, _ = encode({"a": base, "b": base.view(3, 4)})
    assert len(tensors) == 2


def test_unsupported_object_is_refused_naming_its_key_path():
    with pytest.raises(UnsupportedValueError, match=r"'model/head/fn'.*function"):
        encode({"model": {"head": {"fn": lambda x: x}}})


def test_unsupported_dict_key_type_is_refused():
    with pytest.raises(UnsupportedValueError, match="key of type"):
        encode({"d": {(1, 2): 3}})


def test_tensor_keys_are_the_escaped_state_path():
    tensors, _ = encode({"model": {"blocks.0/weight": torch.zeros(1)}, "opt": [torch.ones(1)]})
    assert set(tensors) == {"model/blocks.0~1weight", "opt/0"}
