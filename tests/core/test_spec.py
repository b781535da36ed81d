"""Specs: strict typing, every problem at once with dotted paths, presets, overrides, schema, round trips."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_core import spec as specmod
from prism_core.spec import RunSpec, SpecError, TrainSpec, dumps_spec, loads_spec

from .toy_specs import ALL, GOOD_SPEC, ToyFused, ToyLLM, ToyProjector, ToyVision


@pytest.fixture(autouse=True)
def toys(prism_registry, register_plugin):
    for cls in ALL:
        register_plugin(cls, distribution="prism-toys")
    return prism_registry


def problems(text: str, overrides=()) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        loads_spec(text, overrides)
    return dict(info.value.problems)


def test_good_spec_structures_into_typed_frozen_objects():
    spec = loads_spec(GOOD_SPEC)
    assert isinstance(spec, RunSpec)
    assert spec.model.vision == ToyVision(preset="toy-small", image_size=32, patch_size=8)
    assert spec.model.llm == ToyLLM(hidden_size=32)
    assert spec.model.projector == ToyProjector()


def test_stage_defaults_follow_the_original_recipe():
    align = loads_spec(GOOD_SPEC).train
    assert (align.global_batch_size, align.learning_rate, align.weight_decay, align.epochs) == (256, 1e-3, 0.0, 1)
    finetune = loads_spec(GOOD_SPEC.replace('"align"', '"finetune"')).train
    assert (finetune.global_batch_size, finetune.learning_rate, finetune.weight_decay) == (128, 2e-5, 0.1)
    assert (finetune.warmup_ratio, finetune.max_grad_norm) == (0.03, 1.0)
    explicit = loads_spec(GOOD_SPEC, ["train.learning_rate=5e-4"]).train
    assert explicit.learning_rate == 5e-4 and explicit.global_batch_size == 256


def test_every_problem_is_reported_at_once_with_its_dotted_path():
    bad = """\
schema = 1
[model]
vision = { kind = "toy-vision", image_size = "big", colour = "red" }
llm = { kind = "toy-lm", hidden_size = 3.9 }
projector = { kind = "toy-mlp", depth = "2" }
[train]
stage = "alignn"
epochs = 1.5
activation_checkpointing = "no"
trainable = "projector.*"
"""
    found = problems(bad)
    assert found["model.vision.image_size"] == "expected int, got str 'big'"
    assert found["model.vision.colour"].startswith("unknown field")
    assert "did you mean 'toy-llm'" in found["model.llm"] and "prism-toys" in found["model.llm"]
    assert found["model.projector.depth"] == "expected int, got str '2'"
    assert "'align'" in found["train.stage"] and "'alignn'" in found["train.stage"]
    assert found["train.epochs"] == "expected int, got float 1.5"
    assert found["train.activation_checkpointing"] == "expected bool, got str 'no'"
    assert found["train.trainable"] == "expected an array, got str 'projector.*'"
    assert len(found) == 8


def test_a_typo_in_a_field_name_suggests_the_field():
    found = problems(GOOD_SPEC.replace("per_device_batch_size", "per_device_batch_sise"))
    assert found["train.per_device_batch_sise"] == "unknown field; did you mean 'per_device_batch_size'?"


def test_cross_field_problems_name_the_field():
    found = problems(GOOD_SPEC, ["model.vision.image_size=33", "train.per_device_batch_size=7"])
    assert found["model.vision.image_size"] == "must be a multiple of patch_size (8), got 33"
    assert found["train.global_batch_size"].startswith("must be a multiple of per_device_batch_size (7)")


def test_unknown_kind_lists_installed_kinds_and_what_to_install(prism_registry):
    found = problems(GOOD_SPEC.replace('{ kind = "toy-mlp" }', '{ kind = "fsdp" }'))
    message = found["model.projector"]
    assert "unknown projector kind 'fsdp'" in message and "installed: toy-mlp" in message
    found = problems(GOOD_SPEC.replace('vision = "toy-small"', 'vision = { kind = "siglip" }'))
    assert "pip install prism-plugin-siglip" in found["model.vision"]


def test_presets_are_data_that_fields_override():
    spec = loads_spec(GOOD_SPEC, ["model.vision.image_size=64"])
    assert spec.model.vision == ToyVision(preset="toy-small", image_size=64, patch_size=8)
    assert ToyVision.from_preset("toy-big", patch_size=32) == ToyVision(preset="toy-big", image_size=448,
                                                                          patch_size=32)
    found = problems(GOOD_SPEC.replace('"toy-small"', '{ kind = "toy-vision", preset = "toy-smal" }'))
    assert "did you mean 'toy-small'" in found["model.vision"]


def test_nested_role_tables_resolve_by_their_own_kind_with_indexed_paths():
    text = GOOD_SPEC.replace('vision = "toy-small"', 'vision = { kind = "toy-fused", members = ["toy-small", '
                             '{ kind = "toy-vision", image_size = "x" }] }')
    found = problems(text)
    assert found == {"model.vision.members[1].image_size": "expected int, got str 'x'"}
    ok = loads_spec(GOOD_SPEC.replace('vision = "toy-small"', 'vision = { kind = "toy-fused", members = '
                                      '["toy-small", "toy-big"] }'))
    assert ok.model.vision == ToyFused(members=(ToyVision.from_preset("toy-small"), ToyVision.from_preset("toy-big")))


def test_overrides_parse_toml_values_and_fall_back_to_strings():
    spec = loads_spec(GOOD_SPEC, ["train.epochs=3", "train.precision=fp32", "train.trackers=['jsonl', 'wandb']",
                                  "model.vision.mean=[0.1, 0.2, 0.3]"])
    assert spec.train.epochs == 3 and spec.train.precision == "fp32"
    assert spec.train.trackers == ("jsonl", "wandb") and spec.model.vision.mean == (0.1, 0.2, 0.3)
    with pytest.raises(SpecError, match=r"dotted\.key=value"):
        loads_spec(GOOD_SPEC, ["train.epochs"])


def test_schema_is_required_newer_schemas_are_refused_and_older_ones_migrate(monkeypatch):
    assert "schema" in problems(GOOD_SPEC.replace("schema = 1\n", ""))
    assert "upgrade prism-core" in problems(GOOD_SPEC.replace("schema = 1", "schema = 2"))["schema"]

    def rename_llm_table(data):
        data["model"]["llm"] = data["model"].pop("language_model")
        return data

    monkeypatch.setitem(specmod.MIGRATIONS, 0, rename_llm_table)
    old = GOOD_SPEC.replace("schema = 1", "schema = 0").replace("[model.llm]", "[model.language_model]")
    assert loads_spec(old) == loads_spec(GOOD_SPEC)


def test_invalid_toml_is_one_problem_with_the_location():
    found = problems("schema = 1\n[model\n")
    assert "invalid TOML" in found[""] and "line 2" in found[""]


# -- round trips ---------------------------------------------------------------------------------------------------
finite = st.floats(min_value=1e-6, max_value=1e3, allow_nan=False)
train_specs = st.builds(
    TrainSpec,
    stage=st.sampled_from(["align", "finetune", "full-finetune"]),
    epochs=st.integers(1, 5),
    per_device_batch_size=st.just(4),
    global_batch_size=st.sampled_from([4, 8, 64]),
    learning_rate=finite,
    weight_decay=st.floats(0, 1),
    max_steps=st.none() | st.integers(1, 10_000),
    trainable=st.none() | st.lists(st.sampled_from(["projector.*", "llm.*"]), max_size=2).map(tuple),
    precision=st.sampled_from(["fp32", "bf16"]),
    activation_checkpointing=st.booleans(),
    run_name=st.none() | st.text("abcxyz-_", min_size=1, max_size=8),
    strategy=st.just(None),
)
model_specs = st.builds(
    specmod.ModelSpec,
    vision=st.builds(ToyVision, image_size=st.sampled_from([32, 64]), patch_size=st.sampled_from([8, 16]),
                     mean=st.lists(finite, min_size=3, max_size=3).map(tuple)),
    llm=st.builds(ToyLLM, hidden_size=st.integers(1, 4096), use_cache=st.booleans()),
    projector=st.builds(ToyProjector, depth=st.integers(1, 3)),
    seed=st.integers(0, 2**31),
    init_from=st.none() | st.text(min_size=1, max_size=10),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=model_specs, train=train_specs)
def test_dump_then_load_is_the_identity(toys, model, train):  # the registry fixture is read-only here
    spec = RunSpec(model=model, train=train)
    again = loads_spec(dumps_spec(spec))
    # A dumped spec names its strategy explicitly; None means the default single-process strategy.
    assert again.train.strategy is not None and again.train.strategy.kind == "single"
    assert again == RunSpec(model=model, train=TrainSpec(**{**_fields(train), "strategy": again.train.strategy}))
    assert dumps_spec(again) == dumps_spec(loads_spec(dumps_spec(again)))


def _fields(obj):
    import attrs

    return {f.name: getattr(obj, f.name) for f in attrs.fields(type(obj))}
