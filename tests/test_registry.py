"""The one model registry: everything that names models derives from it."""

from __future__ import annotations

import sys
import typing

import pytest

from conftest import REPO
from matfuse import registry
from matfuse.config import GRAPH_MODELS, TEXT_MODELS, ModelName
from matfuse.density.config import DensityConfig


def test_registry_is_torch_free():
    import subprocess

    code = "import sys, matfuse.registry, matfuse.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_config_names_come_from_the_registry():
    assert set(typing.get_args(ModelName)) == set(registry.names("crystal"))
    assert TEXT_MODELS == {n for n, s in registry.SPECS.items() if s.inputs & {"text", "tokens"}}
    assert GRAPH_MODELS == {n for n, s in registry.SPECS.items() if s.family == "crystal" and "graph" in s.inputs}
    density_models = typing.get_args(typing.get_args(DensityConfig.model_fields["models"].annotation)[0])
    assert set(density_models) == set(registry.names("density"))


MINILM = {"encoder": "packaged:minilm", "weights": "packaged:minilm", "max_length": 16}


@pytest.mark.parametrize("name", list(registry.SPECS))
def test_every_spec_builds_and_round_trips_its_config(name):
    from matfuse.models import build_model, model_from_config

    small = {
        "cgcnn": {}, "cgcnn_paper": {"n_conv": 4, "h_fea_len": 32}, "text": {"text_dim": 8}, "matmmfuse_frozen": {"text_dim": 8, "graph": {}},
        "matmmfuse": {"text": MINILM, "fusion_dim": 16, "heads": 2}, "text_finetune": {"text": MINILM},
        "matmmfuse_tokens": {"text_dim": 8, "graph": {}}, "crysmmnet": {"text_dim": 8, "graph": {}},
        "alignn": {"hidden_features": 16, "embedding_features": 8},
        "crysmmnet_alignn": {"text_dim": 8, "graph": {"hidden_features": 16, "embedding_features": 8}},
        "ecd_cnn": {"image_size": [16, 16], "channels": [4]}, "ecd_inception": {},
        "ecd_text": {"text_dim": 8, "image_cfg": {"image_size": [16, 16], "channels": [4]}},
        "cromel_composition": {"encoder": {"element_dim": 8, "hidden_dim": 8, "latent_dim": 4}},
        "cromel_encoder": {"element_dim": 8, "hidden_dim": 8, "latent_dim": 4},
        "cromel_structure": {"encoder": {"hidden_dim": 8, "n_conv": 1, "latent_dim": 4}},
        "flowllm_lm": {"n_embd": 16, "n_layer": 1, "n_head": 2, "n_positions": 64},
        "flowllm_rfm": {"hidden": 8, "n_layers": 1},
    }[name]
    model = build_model(name, **small)
    cfg = model.to_config()
    assert cfg["name"] == name
    again = model_from_config(cfg, for_loading=True)
    again.load_state_dict(model.state_dict())
    assert type(again) is type(model)


def test_generative_models_are_not_property_models():
    gen = set(registry.names("generative"))
    assert gen == {"flowllm_lm", "flowllm_rfm"}
    assert not gen & set(typing.get_args(ModelName)) and not gen & TEXT_MODELS and not gen & GRAPH_MODELS
    assert not any(f"`{n}`" in registry.markdown_table() for n in gen)


def test_unknown_model_names_say_which_exist():
    with pytest.raises(ValueError, match="unknown model 'nope'; known: "):
        registry.spec("nope")


def test_readme_model_table_is_the_registry_table():
    readme = (REPO / "README.md").read_text()
    assert registry.markdown_table() in readme
