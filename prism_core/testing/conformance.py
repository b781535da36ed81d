"""Conformance suites, one per role. A plugin's tests subclass one and set ``spec`` to a tiny instance:

    from prism_core.testing.conformance import VisionBackboneConformance

    class TestSiglipConformance(VisionBackboneConformance):
        spec = SiglipSpec.from_preset("siglip-tiny")

Every test here checks something users rely on: the kind is installed under its own name, loading the spec class is
cheap (no torch), specs survive TOML round trips, typos are rejected, every preset is valid, and the built object
keeps the role's contract.
"""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
from typing import Any, ClassVar

import attrs
import pytest

from prism_core.protocols import PROTOCOLS
from prism_core.spec import ROLE_BASES, ComponentSpec, SpecError, _flatten, converter
from prism_core.types import IGNORE_INDEX, Segment, Turn


def _structure_one(spec_class: type[ComponentSpec], table: dict[str, Any]) -> Any:
    """Structure a role table through the strict converter, with the spec's own class resolved directly."""
    try:
        return converter.structure(table, spec_class)
    except Exception as exc:  # report like a spec file would
        raise SpecError(list(_flatten(exc, spec_class.kind)), "conformance") from None


class ComponentConformance:
    spec: ClassVar[ComponentSpec]

    @property
    def spec_class(self) -> type[ComponentSpec]:
        return type(self.spec)

    def test_entry_point_is_named_after_the_kind(self) -> None:
        cls = self.spec_class
        group = cls.role.group
        points = [ep for ep in metadata.entry_points(group=group) if ep.name == cls.kind]
        assert points, f"no entry point {cls.kind!r} in group {group!r}: is the distribution installed?"
        assert {ep.value for ep in points} == {f"{cls.__module__}:{cls.__qualname__}"}

    def test_spec_module_imports_without_torch(self) -> None:
        module = self.spec_class.__module__
        code = f"import sys, {module}; heavy = [m for m in ('torch', 'timm', 'transformers') if m in sys.modules]; " \
               "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"importing {module} imported {result.stdout.strip() or result.stderr}"

    def test_spec_is_a_frozen_attrs_subclass_of_the_role_base(self) -> None:
        cls = self.spec_class
        assert issubclass(cls, ROLE_BASES[cls.role]) and attrs.has(cls)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            self.spec.preset = "x"  # type: ignore[misc]

    def test_toml_round_trip(self) -> None:
        import tomli_w

        from prism_core.spec import tomllib

        table = converter.unstructure(self.spec)
        assert table.pop("kind") == self.spec.kind
        again = _structure_one(self.spec_class, tomllib.loads(tomli_w.dumps(table)))
        assert again == self.spec

    def test_unknown_field_is_rejected_with_its_name(self) -> None:
        table = converter.unstructure(self.spec)
        table.pop("kind")
        with pytest.raises(SpecError, match="no_such_field_xyz"):
            _structure_one(self.spec_class, {**table, "no_such_field_xyz": 1})

    def test_every_preset_structures_and_validates(self) -> None:
        for name, values in self.spec_class.presets.items():
            spec = _structure_one(self.spec_class, {**values, "preset": name})
            assert list(spec.problems()) == [], f"preset {name!r}: {list(spec.problems())}"

    #: Numeric fields that have no range (every other int or float field must declare one: ``spec_field(at_least=)``).
    unranged_fields: ClassVar[frozenset[str]] = frozenset()

    def test_every_numeric_field_declares_its_range(self) -> None:
        import re

        numeric = re.compile(r"\b(int|float)\b")
        missing = [f.name for f in attrs.fields(self.spec_class)
                   if numeric.search(str(f.type)) and "range" not in f.metadata and f.name not in self.unranged_fields]
        assert not missing, f"numeric fields without a declared range (spec_field(at_least=/above=/at_most=)): " \
                            f"{missing}"

    def test_preset_names_are_valid_spec_names(self) -> None:
        for name in self.spec_class.presets:
            # Preset names are TOML values (never dotted keys), so original ids like "mistral-v0.1-7b-pure" are fine.
            assert name and name == name.strip() and not any(c.isspace() for c in name), name


class VisionBackboneConformance(ComponentConformance):
    """``spec`` must build quickly on CPU."""

    @pytest.fixture(scope="class")
    @classmethod
    def backbone(cls) -> Any:
        return cls.spec.build()

    def test_satisfies_protocol(self, backbone: Any) -> None:
        assert isinstance(backbone, PROTOCOLS["vision_backbones"])
        assert getattr(backbone.image_transform, "is_prismatic", False) is True

    def test_patch_features_have_the_declared_shape(self, backbone: Any) -> None:
        import torch
        from PIL import Image

        pixels = backbone.image_transform(Image.new("RGB", (40, 30), (200, 10, 10)))
        batch = {k: torch.stack([v, v]) for k, v in pixels.items()} if isinstance(pixels, dict) else \
            torch.stack([pixels, pixels])
        with torch.no_grad():
            features = backbone(batch)
        assert features.shape == (2, backbone.num_patches, backbone.embed_dim)
        if self.spec.num_patches is not None:
            assert self.spec.num_patches == backbone.num_patches

    def test_set_trainable_toggles_every_parameter(self, backbone: Any) -> None:
        backbone.set_trainable(False)
        assert not any(p.requires_grad for p in backbone.parameters())
        backbone.set_trainable(True)
        assert all(p.requires_grad for p in backbone.parameters())

    def test_shard_block_classes_occur_in_the_module(self, backbone: Any) -> None:
        assert backbone.shard_block_classes
        assert any(isinstance(m, backbone.shard_block_classes) for m in backbone.modules())


class LLMBackboneConformance(ComponentConformance):
    @pytest.fixture(scope="class")
    @classmethod
    def llm(cls) -> Any:
        return cls.spec.build()

    def test_satisfies_protocol(self, llm: Any) -> None:
        assert isinstance(llm, PROTOCOLS["llm_backbones"])
        assert llm.tokenizer.pad_token_id is not None

    def test_bos_contract(self, llm: Any) -> None:
        tok = llm.tokenizer
        with_special = tok("What colour is the shape?").input_ids
        without = tok("What colour is the shape?", add_special_tokens=False).input_ids
        if llm.bos_in_prompt_text:
            assert tok.bos_token_id not in without[:1]
        else:
            assert with_special[0] == tok.bos_token_id and with_special[1] != tok.bos_token_id
            assert without[0] != tok.bos_token_id

    def test_forward_over_embeddings_gives_loss_and_logits(self, llm: Any) -> None:
        import torch

        ids = torch.tensor([llm.tokenizer("a red circle").input_ids] * 2)
        embeds = llm.embed_input_ids(ids)
        assert embeds.shape == (*ids.shape, llm.embed_dim)
        labels = ids.clone()
        labels[:, 0] = IGNORE_INDEX
        out = llm(inputs_embeds=embeds, attention_mask=torch.ones_like(ids, dtype=torch.bool), labels=labels)
        assert out.logits.shape[:2] == ids.shape and torch.isfinite(out.loss)

    def test_generate_returns_only_new_tokens(self, llm: Any) -> None:
        import torch

        ids = torch.tensor([llm.tokenizer("a red circle").input_ids])
        with torch.no_grad():
            new = llm.generate(inputs_embeds=llm.embed_input_ids(ids), attention_mask=torch.ones_like(ids),
                               max_new_tokens=3, do_sample=False)
        assert new.ndim == 2 and new.shape[0] == 1 and 1 <= new.shape[1] <= 3

    def test_decoder_layer_classes_occur_in_the_module(self, llm: Any) -> None:
        assert any(isinstance(m, llm.decoder_layer_classes) for m in llm.modules())

    def test_default_prompt_format_is_known_without_building(self) -> None:
        assert self.spec.default_prompt_format

    @pytest.mark.parametrize("exchanges", [1, 2, 3])
    def test_training_tokens_match_generation_with_the_default_prompt_format(self, llm: Any, exchanges: int) -> None:
        from prism_core.composition import default_prompt_format_spec
        from prism_core.testing.prompt_checks import assert_training_matches_generation, sample_conversation

        format_spec = default_prompt_format_spec(self.spec)
        if format_spec is None:
            pytest.skip(f"prompt format {self.spec.default_prompt_format!r} is not installed")
        prompt_format = format_spec.build(tokenizer=llm.tokenizer)
        for start in range(5):
            turns = sample_conversation(exchanges, start=start)
            assert_training_matches_generation(llm.tokenizer, prompt_format, turns)


class ProjectorConformance(ComponentConformance):
    """``spec`` builds quickly at ``in_dim`` → ``out_dim``. A projector that changes the number of image tokens is
    held to the count it declares (``num_tokens``, module and spec alike) on every square patch grid of
    ``grid_sides`` that its spec accepts (``patch_problems``): the model's budgets are computed from that count."""

    in_dim: ClassVar[int] = 12
    out_dim: ClassVar[int] = 20
    #: Sides of the square patch grids the token count is checked on: odd and even, below and above any window.
    grid_sides: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5, 6, 7)

    def test_maps_patch_features_to_llm_width(self) -> None:
        import torch

        from prism_core.protocols import image_tokens

        projector = self.spec.build(self.in_dim, self.out_dim, seed=0)
        assert isinstance(projector, PROTOCOLS["projectors"])
        out = projector(torch.randn(2, 16, self.in_dim))
        assert out.shape == (2, image_tokens(projector, 16), self.out_dim)

    def test_declared_image_token_count_matches_the_output_on_several_grids(self) -> None:
        import torch

        from prism_core.protocols import image_tokens

        projector = self.spec.build(self.in_dim, self.out_dim, seed=0)
        checked = []
        for side in self.grid_sides:
            patches = side * side
            if list(self.spec.patch_problems(patches)):
                continue  # refused at spec time, never built for
            declared = image_tokens(projector, patches)
            said = self.spec.num_tokens(patches)
            assert said == declared, f"{side}×{side} grid: the spec's num_tokens says {said}, the module's {declared}"
            with torch.no_grad():
                out = projector(torch.randn(2, patches, self.in_dim))
            assert tuple(out.shape) == (2, declared, self.out_dim), \
                f"{side}×{side} grid: declared {declared} image tokens, made {tuple(out.shape)}"
            checked.append(side)
        assert len(checked) >= 2, f"the spec refuses all but {checked} of the grid sides {self.grid_sides}"

    def test_initialisation_is_deterministic_in_the_seed(self) -> None:
        first = self.spec.build(self.in_dim, self.out_dim, seed=3).state_dict()
        second = self.spec.build(self.in_dim, self.out_dim, seed=3).state_dict()
        other = self.spec.build(self.in_dim, self.out_dim, seed=4).state_dict()
        assert all((first[k] == second[k]).all() for k in first)
        assert any((first[k] != other[k]).any() for k in first)


class PromptFormatConformance(ComponentConformance):
    """Besides the structure of ``render``/``prompt``, checks on real tokenizers (``prism_core.testing.tokenizers``)
    that training tokenizes every conversation exactly as generation will see it. ``real_tokenizers`` names the
    tokenizer families the format is used with (Llama-style SentencePiece by default; ``("byte-bpe",)`` for a
    GPT-2-style BPE without BOS, as Phi-2's); ``uses_chat_template`` attaches a chat template to them."""

    tokenizer: ClassVar[Any] = None  # set for formats that need one (chat-template)
    real_tokenizers: ClassVar[tuple[str, ...]] = ("sentencepiece", "sentencepiece-nonlegacy", "sentencepiece-slow")
    uses_chat_template: ClassVar[bool] = False
    other_system_prompt: ClassVar[str] = "Answer briefly."

    def pytest_generate_tests(self, metafunc: Any) -> None:
        if "real_tokenizer_name" in metafunc.fixturenames:
            metafunc.parametrize("real_tokenizer_name", self.real_tokenizers)

    @pytest.fixture(scope="class")
    @classmethod
    def prompt_format(cls) -> Any:
        return cls.spec.build(tokenizer=cls.tokenizer)

    def test_satisfies_protocol(self, prompt_format: Any) -> None:
        assert isinstance(prompt_format, PROTOCOLS["prompt_formats"])

    def test_render_gives_one_segment_per_turn_supervising_the_assistant(self, prompt_format: Any) -> None:
        turns = [Turn("human", "<image>\nWhat colour?"), Turn("gpt", "red"), Turn("human", "Shape?"),
                 Turn("gpt", "circle")]
        segments = prompt_format.render(turns)
        assert [s.supervised for s in segments] == [False, True, False, True]
        assert all(isinstance(s, Segment) for s in segments)
        assert "<image>" not in "".join(s.text for s in segments)
        assert "red" in segments[1].text and "circle" in segments[3].text

    def test_prompt_ends_ready_for_the_answer(self, prompt_format: Any) -> None:
        prompt = prompt_format.prompt([Turn("human", "What colour?")])
        assert "What colour?" in prompt and prompt == prompt.rstrip(" \t"), "trailing spaces belong to the answer"

    def _variants(self, tokenizer: Any) -> list[Any]:
        """The format as specified, and with another (and no) system prompt where it has one."""
        specs = [self.spec]
        if "system_prompt" in {f.name for f in attrs.fields(type(self.spec))}:
            specs += [attrs.evolve(self.spec, system_prompt=self.other_system_prompt)]
            if "None" in str(attrs.fields_dict(type(self.spec))["system_prompt"].type):
                specs += [attrs.evolve(self.spec, system_prompt=None)]
        return [spec.build(tokenizer=tokenizer) for spec in specs]

    @pytest.mark.parametrize("exchanges", [1, 2, 3])
    def test_training_tokens_match_the_generation_prompt(self, real_tokenizer_name: str, exchanges: int) -> None:
        from prism_core.testing.prompt_checks import assert_training_matches_generation, sample_conversation
        from prism_core.testing.tokenizers import real_tokenizer

        tokenizer = real_tokenizer(real_tokenizer_name, chat_template=self.uses_chat_template)
        for prompt_format in self._variants(tokenizer):
            for start in range(5):
                turns = sample_conversation(exchanges, start=start)
                assert_training_matches_generation(tokenizer, prompt_format, turns)

    def test_get_potential_prompt_is_the_prompt_after_one_more_human_turn(self, prompt_format: Any) -> None:
        from prism_core.prompting import PromptBuilder

        builder = PromptBuilder(prompt_format)
        builder.add_turn("human", "What colour?")
        builder.add_turn("gpt", "red")
        expected = prompt_format.prompt([*builder.turns, Turn("human", "And the shape?")])
        assert builder.get_potential_prompt("And the shape?") == expected
        assert len(builder.turns) == 2

    def test_roles_must_alternate_and_the_error_names_the_turn(self, prompt_format: Any) -> None:
        with pytest.raises(ValueError, match="1"):
            prompt_format.render([Turn("human", "a"), Turn("human", "b")])


class DatasetConformance(ComponentConformance):
    """Subclasses provide a ``dataset`` fixture (built with a real tokenizer and prompt format)."""

    def test_satisfies_protocol(self, dataset: Any) -> None:
        assert isinstance(dataset, PROTOCOLS["datasets"]) and len(dataset) > 0

    def test_examples_are_consistent_with_modality_lengths(self, dataset: Any) -> None:
        lengths = dataset.modality_lengths()
        assert len(lengths) == len(dataset)
        for i in range(min(len(dataset), 8)):
            example = dataset[i]
            assert example.input_ids.shape == example.labels.shape
            assert example.labels[0].item() == IGNORE_INDEX, "BOS must never be supervised"
            assert (example.labels != IGNORE_INDEX).any(), f"{example.source}: no supervised token"
            assert example.has_image == lengths[i][0]
            assert example.source


class TrainStrategyConformance(ComponentConformance):
    def test_single_rank_contract(self) -> None:
        import torch

        strategy = self.spec.build()
        assert isinstance(strategy, PROTOCOLS["train_strategies"])
        strategy.setup()
        try:
            assert strategy.world_size >= 1 and 0 <= strategy.rank < strategy.world_size
            total = strategy.all_reduce_sum(torch.ones(2))
            assert total.tolist() == [float(strategy.world_size)] * 2
        finally:
            strategy.teardown()


class _StubVLM:
    """Answers without a model: empty text, or the same probability for every candidate; counts its calls."""

    def __init__(self) -> None:
        from prism_core.testing.fakes import FakePureFormat

        self.prompt_format = FakePureFormat()
        self.calls = 0

    def get_prompt_builder(self, system_prompt: str | None = None) -> Any:
        from prism_core.prompting import PromptBuilder

        return PromptBuilder(self.prompt_format)

    def generate_batch(self, pixel_values: Any, texts: list[str], return_string_probabilities: Any = None,
                       **kwargs: Any) -> list[Any]:
        self.calls += 1
        assert len(pixel_values) == len(texts), "one pixel entry (or None) per prompt"
        if return_string_probabilities is not None:
            return [[1 / len(return_string_probabilities)] * len(return_string_probabilities) for _ in texts]
        return ["" for _ in texts]


class EvalTaskConformance(ComponentConformance):
    """Subclasses provide a ``task`` fixture: the kind built on a tiny fixture of its official files (at least four
    examples)."""

    def _answer_all(self, task: Any) -> tuple[list[dict[str, Any]], int]:
        examples = list(task.examples())
        vlm = _StubVLM()
        records = task.predict(vlm, examples, [None] * len(examples))
        return records, vlm.calls

    def test_satisfies_protocol(self, task: Any) -> None:
        assert isinstance(task, PROTOCOLS["eval_tasks"]) and task.name and task.headline

    def test_examples_have_unique_ids_and_name_their_source(self, task: Any) -> None:
        examples = list(task.examples())
        assert examples and len({e.id for e in examples}) == len(examples)
        assert all(e.source for e in examples)

    def test_a_batch_is_answered_by_a_few_batched_calls_one_record_each(self, task: Any) -> None:
        import json

        records, calls = self._answer_all(task)
        examples = list(task.examples())
        assert [r["id"] for r in records] == [e.id for e in examples]
        assert len(examples) >= 4, "the fixture needs at least 4 examples to tell batched calls from a loop"
        assert calls < len(examples), f"{calls} model calls for {len(examples)} examples: one per example?"
        json.dumps(records)

    def test_score_has_the_headline_and_ignores_record_order(self, task: Any) -> None:
        import json

        records, _ = self._answer_all(task)
        metrics = task.score(records)
        assert task.headline in metrics
        assert metrics == task.score(list(reversed(records)))
        json.dumps(metrics)


class ModelAdapterConformance(ComponentConformance):
    """Adapts a composed model of the core fakes (widths of 64: 4-bit kinds need whole quantisation blocks) and
    checks what fine-tuning relies on: only the targeted layers change, training starts from the base (the
    adapter switched off computes the same), a meta build agrees with an eager one, a saved adapter loads back, and
    a merge computes what the adapter did. ``spec`` targets linear layers of the fake LLM. ``exact_base``: the
    adapted model starts equal to the full-precision base (not so for a kind that quantises it)."""

    exact_base: ClassVar[bool] = True
    tolerance: ClassVar[float] = 1e-5

    model: ClassVar[dict[str, Any]] = {"vision": {"kind": "fake-vit"}, "llm": {"kind": "fake-llama", "hidden_size": 64},
                                       "projector": {"kind": "fake-mlp"}}

    @pytest.fixture
    def fakes(self) -> Any:
        from prism_core.registry import use_registry
        from prism_core.testing.fakes import fake_registry

        with use_registry(fake_registry(extra=(self.spec_class,))) as registry:
            yield registry

    def _build(self, device: str | None = None) -> Any:
        from prism_core.composition import build
        from prism_core.spec import ModelSpec, structure

        return build(structure(self.model, ModelSpec), device=device)

    def _adapted(self, seed: int = 0) -> Any:
        from prism_core.adapters import adapt
        from prism_core.materialize import materialize

        vlm = self._build("meta")
        adapter = adapt(vlm, self.spec, seed=seed)
        materialize(vlm)
        adapter.after_materialize(vlm)
        return vlm.eval()

    @staticmethod
    def _logits(vlm: Any) -> Any:
        import torch

        gen = torch.Generator().manual_seed(0)
        ids = torch.randint(4, 200, (2, 9), generator=gen)
        ids[:, 0] = vlm.tokenizer.bos_token_id
        pixels = torch.rand(2, 3, 16, 16, generator=gen) * 2 - 1
        with torch.no_grad():
            return vlm(ids, torch.ones_like(ids, dtype=torch.bool), pixel_values=pixels).logits

    @staticmethod
    def _perturb(vlm: Any) -> None:
        """Move the adapter's parameters away from their start (as training would)."""
        import torch

        from prism_core.adapters import adapter_keys

        own = adapter_keys(vlm)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, param in vlm.named_parameters():
                if name in own:
                    param.add_(torch.randn(param.shape, generator=gen) * 0.05)

    def test_satisfies_protocol(self, fakes: Any) -> None:
        adapter = self.spec.build(seed=0)
        assert isinstance(adapter, PROTOCOLS["model_adapters"]) and adapter.spec == self.spec

    def test_only_the_targeted_layers_change_and_only_the_adapter_and_fully_trained_train(self, fakes: Any) -> None:
        from prism_core.adapters import adapt, adapter_keys, resolve_targets
        from prism_core.vlm import matching_patterns

        base, vlm = self._build(), self._build("meta")
        targets = resolve_targets(vlm, self.spec, self.spec.build())
        assert targets
        adapt(vlm, self.spec)
        before = dict(base.named_modules())
        for name, module in vlm.named_modules():
            if name in before and not any(name == t or name.startswith(f"{t}.") for t in targets):
                assert type(module) is type(before[name]), f"{name} changed though no target names it"
        for target in targets:
            assert type(vlm.get_submodule(target)) is not type(before[target]), f"{target} was not adapted"
        trainable = {n for n, p in vlm.named_parameters() if p.requires_grad}
        own = adapter_keys(vlm)
        assert own and own <= trainable
        assert {n for n in trainable - own if not matching_patterns(n, self.spec.fully_trained)} == set()

    def test_training_starts_from_the_base(self, fakes: Any) -> None:
        import torch

        from prism_core.adapters import disabled

        vlm = self._adapted()
        adapted = self._logits(vlm)
        with disabled(vlm):
            assert torch.allclose(self._logits(vlm), adapted, atol=self.tolerance, rtol=0)
        if self.exact_base:
            assert torch.allclose(self._logits(self._build()), adapted, atol=self.tolerance, rtol=0)

    def test_a_meta_build_agrees_with_an_eager_one(self, fakes: Any) -> None:
        import torch

        from prism_core.adapters import adapt

        eager = self._build()
        adapt(eager, self.spec, seed=5)
        eager.adapter.after_materialize(eager)
        meta = self._adapted(seed=5)
        ours, theirs = meta.state_dict(), eager.state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), key

    def test_saved_adapter_loads_back_with_equal_logits(self, fakes: Any, tmp_path: Any) -> None:
        import torch

        import prism_core

        vlm = self._adapted()
        self._perturb(vlm)
        expected = self._logits(vlm)
        prism_core.save(vlm, tmp_path / "adapted")
        again = prism_core.load(tmp_path / "adapted")
        assert again.adapter is not None and again.adapter.spec == self.spec
        assert torch.equal(self._logits(again), expected)

    def test_merge_computes_what_the_adapter_did(self, fakes: Any) -> None:
        import torch

        from prism_core.adapters import merge

        vlm = self._adapted()
        self._perturb(vlm)
        expected = self._logits(vlm)
        merge(vlm)
        assert vlm.adapter is None
        assert set(vlm.state_dict()) == set(self._build().state_dict())
        assert torch.allclose(self._logits(vlm), expected, atol=self.tolerance, rtol=0)


__all__ = [
    "DatasetConformance",
    "EvalTaskConformance",
    "LLMBackboneConformance",
    "ModelAdapterConformance",
    "ProjectorConformance",
    "PromptFormatConformance",
    "TrainStrategyConformance",
    "VisionBackboneConformance",
]
