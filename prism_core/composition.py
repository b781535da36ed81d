"""Build a ``PrismVLM`` from specs: ``compose(vision=..., projector=..., llm=...)`` in Python, ``build(spec)`` from
a ``ModelSpec`` or ``RunSpec``. Construction is deterministic in ``seed`` and leaves the caller's RNG untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from prism_core.spec import (
    LLMBackboneSpec,
    ModelSpec,
    ProjectorSpec,
    PromptFormatSpec,
    RunSpec,
    SpecError,
    VisionBackboneSpec,
    structure,
)

if TYPE_CHECKING:
    from prism_core.vlm import PrismVLM


def compose(
    vision: VisionBackboneSpec | str | dict[str, Any],
    projector: ProjectorSpec | str | dict[str, Any],
    llm: LLMBackboneSpec | str | dict[str, Any],
    prompt_format: PromptFormatSpec | str | dict[str, Any] | None = None,
    seed: int = 0,
) -> PrismVLM:
    """Compose a model from component specs (or preset names / tables, resolved like a spec file's)."""
    table = {"vision": vision, "projector": projector, "llm": llm, "seed": seed}
    if prompt_format is not None:
        table["prompt_format"] = prompt_format
    return build(structure(table, ModelSpec, source="compose()"))


def default_prompt_format_spec(llm: LLMBackboneSpec) -> PromptFormatSpec | None:
    """The prompt format the LLM was trained with, or None when no installed plugin provides that kind."""
    from prism_core.registry import PluginError, get_registry
    from prism_core.types import Role

    kind = llm.default_prompt_format
    try:
        get_registry().resolve(Role.PROMPT_FORMAT, kind)
    except PluginError:
        return None
    return structure({"kind": kind}, PromptFormatSpec, source=f"default prompt format {kind!r}")


def build(spec: ModelSpec | RunSpec, *, load_init_weights: bool = True) -> PrismVLM:
    """Build every component, call the ``prism_model_built`` hook, then warm-start from ``spec.init_from``."""
    import torch

    from prism_core.hooks import get_plugin_manager
    from prism_core.vlm import PrismVLM

    if isinstance(spec, RunSpec):
        spec = spec.model
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build() takes a ModelSpec or RunSpec, got {type(spec).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        vision = spec.vision.build()
        llm = spec.llm.build()
        projector = spec.projector.build(vision.embed_dim, llm.embed_dim, seed=spec.seed)
    _check_widths(spec, vision, projector, llm)
    format_spec = spec.prompt_format or default_prompt_format_spec(spec.llm)
    if spec.prompt_format is None and format_spec is not None:  # save the format actually used, not "default"
        spec = attrs.evolve(spec, prompt_format=format_spec)
    prompt_format = None if format_spec is None else format_spec.build(tokenizer=llm.tokenizer)
    vlm = PrismVLM(vision, projector, llm, prompt_format=prompt_format, spec=spec, prompt_format_spec=format_spec)
    get_plugin_manager().hook.prism_model_built(model=vlm, spec=spec)
    if spec.init_from is not None and load_init_weights:
        from prism_core.io import load_weights

        load_weights(vlm, spec.init_from)
    return vlm


def _check_widths(spec: ModelSpec, vision: Any, projector: Any, llm: Any) -> None:
    problems = []
    if getattr(projector, "in_dim", vision.embed_dim) != vision.embed_dim:
        problems.append(("projector", f"input width {projector.in_dim} != vision width {vision.embed_dim}"))
    if getattr(projector, "out_dim", llm.embed_dim) != llm.embed_dim:
        problems.append(("projector", f"output width {projector.out_dim} != LLM width {llm.embed_dim}"))
    if problems:
        raise SpecError(problems, "model")


__all__ = ["build", "compose", "default_prompt_format_spec"]
