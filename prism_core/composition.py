"""Build a ``PrismVLM`` from specs: ``compose(vision=..., projector=..., llm=...)`` in Python, ``build(spec)`` from
a ``ModelSpec`` or ``RunSpec``. Construction is deterministic in ``seed`` and leaves the caller's RNG untouched.

Components are constructed on the meta device and materialised once (``prism_core.materialize``): each weight
comes straight from where it is stored, or from its component's seeded initialisation, never via a random copy
that is then overwritten. ``build(spec, device="meta")`` stops before materialising (training strategies shard
first and materialise only what each rank holds). A component whose plugin predates this (its module defines no
``init_module`` hook, or it fails to build on meta) is built eagerly instead, as before.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
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
    import torch

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


def build(spec: ModelSpec | RunSpec, *, load_init_weights: bool = True,
          device: str | torch.device | None = None) -> PrismVLM:
    """Build every component on the meta device, call the ``prism_model_built`` hook, then materialise on ``device``
    (default CPU) from the components' weights, or ``spec.init_from`` (unless ``load_init_weights`` is false).
    ``device="meta"`` returns the model unmaterialised: ``prism_core.materialize.materialize`` finishes it."""
    import torch

    from prism_core.hooks import get_plugin_manager
    from prism_core.materialize import materialize
    from prism_core.vlm import PrismVLM

    if isinstance(spec, RunSpec):
        spec = spec.model
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"build() takes a ModelSpec or RunSpec, got {type(spec).__name__}")
    vision = _build_component(spec.seed, spec.vision.build)
    llm = _build_component(spec.seed, spec.llm.build)
    _check_patches(spec, vision)
    try:
        projector = _build_component(spec.seed, lambda: spec.projector.build(vision.embed_dim, llm.embed_dim,
                                                                              seed=spec.seed))
    except ValueError as exc:  # a projector's build says what it cannot take (e.g. heads that do not divide)
        raise SpecError([("projector", str(exc))], "model") from None
    _check_widths(spec, vision, projector, llm)
    format_spec = spec.prompt_format or default_prompt_format_spec(spec.llm)
    if spec.prompt_format is None and format_spec is not None:  # save the format actually used, not "default"
        spec = attrs.evolve(spec, prompt_format=format_spec)
    on_meta = device is not None and torch.device(device).type == "meta"
    tokenizer = _TokenizerOnFirstUse(llm) if on_meta else llm.tokenizer
    prompt_format = None if format_spec is None else format_spec.build(tokenizer=tokenizer)
    vlm = PrismVLM(vision, projector, llm, prompt_format=prompt_format, spec=spec, prompt_format_spec=format_spec)
    vlm.init_from = spec.init_from if load_init_weights else None
    get_plugin_manager().hook.prism_model_built(model=vlm, spec=spec)
    if vlm.init_from is not None:
        _warm_start_eager_components(vlm)
    if not on_meta:
        materialize(vlm, device=device or "cpu")
    return vlm


def _build_component(seed: int, make: Callable[[], Any]) -> Any:
    """``make()`` on the meta device; eagerly (seeded, as before) if it fails there or leaves meta tensors that no
    ``init_module`` hook of it initialises (a third-party plugin that does not implement the hooks)."""
    import torch

    from prism_core.materialize import uninitializable

    try:
        with torch.device("meta"), warnings.catch_warnings():
            # A hookless plugin loading weights in build() gets them dropped here (and is rebuilt below).
            warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter", category=UserWarning)
            component = make()
        if not uninitializable(component):
            return component
    except (NotImplementedError, RuntimeError):  # what torch raises for data access on meta tensors
        pass
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _warm_start_eager_components(vlm: PrismVLM) -> None:
    """Copy ``init_from``'s values into components that were built eagerly (meta ones take them when
    materialised)."""
    from prism_core.materialize import has_meta_tensors, materialize

    real = [name for name in ("vision_backbone", "projector", "llm_backbone")
            if not has_meta_tensors(getattr(vlm, name))]
    if real:
        state = vlm.initial_state()
        for name in real:
            part = {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(f"{name}.")}
            materialize(getattr(vlm, name), state=part, strict=True)


class _TokenizerOnFirstUse:
    """The LLM's tokenizer, fetched when a prompt format first uses it: a meta build of a released model needs no
    tokenizer files (the template formats never touch it; ``chat-template`` does at once)."""

    def __init__(self, llm: Any) -> None:
        self._llm = llm

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm.tokenizer, name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._llm.tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._llm.tokenizer)


def _check_patches(spec: ModelSpec, vision: Any) -> None:
    """The projector's grid checks against the built tower's patch count (a vision kind whose spec does not know
    it gets them here instead of at spec time)."""
    problems = [(f"projector.{name}" if name else "projector", message)
                for name, message in spec.projector.patch_problems(int(vision.num_patches))]
    if problems:
        raise SpecError(problems, "model")


def _check_widths(spec: ModelSpec, vision: Any, projector: Any, llm: Any) -> None:
    problems = []
    if getattr(projector, "in_dim", vision.embed_dim) != vision.embed_dim:
        problems.append(("projector", f"input width {projector.in_dim} != vision width {vision.embed_dim}"))
    if getattr(projector, "out_dim", llm.embed_dim) != llm.embed_dim:
        problems.append(("projector", f"output width {projector.out_dim} != LLM width {llm.embed_dim}"))
    from prism_core.protocols import image_tokens

    patches = int(vision.num_patches)
    tokens, said = image_tokens(projector, patches), spec.projector.num_tokens(patches)
    if tokens != said:
        problems.append(("projector", f"the module makes {tokens} image tokens of {patches} patches but its spec's "
                                      f"num_tokens says {said} (they must agree: `prism data check` budgets with the "
                                      "spec's)"))
    elif tokens < 1:
        problems.append(("projector", f"makes {tokens} image tokens of {patches} patches"))
    if problems:
        raise SpecError(problems, "model")


__all__ = ["build", "compose", "default_prompt_format_spec"]
