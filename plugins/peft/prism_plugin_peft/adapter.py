"""``ModelAdapter`` for the kinds ``lora``, ``dora`` and ``qlora``: peft's LoRA layers injected into a ``PrismVLM``.

Injection: the core resolves which linear layers to adapt; peft's ``inject_adapter_in_model`` replaces them (the
LLM's inside its Hugging Face model, so the saved adapter is peft's own layout for it; others inside their
component) with the adapter's parameters on the meta device. Each adapted layer then names the original it wraps
(``wrapped_child_name = "base_layer"``: the base weights keep their state-dict names and seeds) and initialises
its own parameters with ``init_module``, seeded from the adapter's seed and the layer's name, so a meta build
materialised later, an eager one and every rank agree. DoRA's magnitudes need the base weights: they are filled
by ``after_materialize`` (each rank from its own shards). QLoRA quantises the adapted layers' weights first.

Saved layout (``write``): ``adapter_model.safetensors`` + ``adapter_config.json`` for the LLM, as peft writes them
(``PeftModel.from_pretrained(llm, directory)`` loads them), and ``adapter_extra.safetensors`` (prism's names) for
adapted layers outside the LLM.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prism_core.materialize import seed_for
from prism_plugin_peft.quantize import quiet_bitsandbytes
from prism_plugin_peft.spec import DoRASpec, LoRASpec, QLoRASpec

with quiet_bitsandbytes():
    from peft import LoraConfig, inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

ADAPTER_NAME = "default"  # peft's adapter name inside each layer (peft's saved files leave it out)
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
EXTRA_WEIGHTS = "adapter_extra.safetensors"
#: What peft prefixes the keys of a saved adapter with (PeftModel → LoraModel → the wrapped model).
PEFT_PREFIX = "base_model.model."
_ADAPTER_PARTS = ("lora_A", "lora_B", "lora_magnitude_vector")


def _llm_root(model: nn.Module) -> str:
    """The Hugging Face model inside the LLM backbone (``llm_backbone.llm``), whose adapter peft can load."""
    from transformers import PreTrainedModel

    llm = getattr(model, "llm_backbone", None)
    return "llm_backbone.llm" if isinstance(getattr(llm, "llm", None), PreTrainedModel) else "llm_backbone"


def _root_of(name: str, llm_root: str) -> str:
    return llm_root if name.startswith(f"{llm_root}.") else name.split(".", 1)[0]


class PeftAdapter:
    """Implements ``prism_core.protocols.ModelAdapter`` for ``LoRASpec``, ``DoRASpec`` and ``QLoRASpec``."""

    def __init__(self, spec: LoRASpec, seed: int = 0) -> None:
        self.spec = spec
        self.seed = seed
        self.llm_root = "llm_backbone.llm"
        self.targets: dict[str, list[str]] = {}  # injection root → adapted module names relative to it
        self._magnitudes_pending = False

    # -- injecting -----------------------------------------------------------------------------------------------
    def supports(self, module: nn.Module) -> bool:
        # Exactly nn.Linear: a subclass may not compute through its own forward (MultiheadAttention's out_proj).
        return type(module) is nn.Linear

    def config(self, target_modules: Sequence[str], task_type: str | None = None) -> LoraConfig:
        spec = self.spec
        return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, use_rslora=spec.rslora,
                          use_dora=isinstance(spec, DoRASpec), target_modules=list(target_modules),
                          init_lora_weights=True, bias="none", task_type=task_type)

    def inject(self, model: nn.Module, module_names: Sequence[str]) -> list[str]:
        if isinstance(self.spec, QLoRASpec):
            from prism_core.materialize import materialize
            from prism_plugin_peft.quantize import quantize_linears

            materialize(model)  # 4-bit weights are made from real ones: the base, on the CPU, from its sources
            quantize_linears(model, module_names, self.spec)
        self.llm_root = _llm_root(model)
        for name in module_names:
            root = _root_of(name, self.llm_root)
            self.targets.setdefault(root, []).append(name[len(root) + 1:])
        for root, names in self.targets.items():
            with quiet_bitsandbytes():
                inject_adapter_in_model(self.config(names), model.get_submodule(root), adapter_name=ADAPTER_NAME,
                                        low_cpu_mem_usage=True)  # the adapter's parameters on meta
        params = []
        for name in module_names:
            layer = model.get_submodule(name)
            self._prepare_layer(layer, name)
            params += [f"{name}.{p}" for p, _ in layer.named_parameters() if p.startswith(_ADAPTER_PARTS)]
        self._magnitudes_pending = isinstance(self.spec, DoRASpec)
        return params

    def _prepare_layer(self, layer: nn.Module, name: str) -> None:
        """Make the adapted layer transparent around its base and give it the adapter's initialisation."""
        for part in _ADAPTER_PARTS:  # move what peft made (on meta, or real for a real base) to meta
            table = getattr(layer, part, None)
            if table is not None and ADAPTER_NAME in table:
                table[ADAPTER_NAME].to_empty(device="meta")
        layer.wrapped_child_name = "base_layer"
        layer.init_seed = seed_for(self.seed, name)
        layer.init_module = _init_adapter_module

    def after_materialize(self, model: nn.Module) -> None:
        """DoRA: each magnitude starts as its base weight's row norms (B is zero, so ``||W + BA|| = ||W||``); the
        rows of a sharded weight and of its magnitude are sharded alike, so each rank fills its own."""
        if not self._magnitudes_pending:
            return
        with torch.no_grad():
            for layer in _adapted_layers(model):
                magnitude = layer.lora_magnitude_vector[ADAPTER_NAME].weight
                weight = _local(layer.get_base_layer().weight)
                _local(magnitude).copy_(weight.float().norm(p=2, dim=1).to(magnitude.dtype))
        self._magnitudes_pending = False

    # -- saving and loading ------------------------------------------------------------------------------------
    def write(self, state: Mapping[str, torch.Tensor], directory: Any) -> dict[str, Any]:
        from safetensors.torch import save_file

        directory = Path(directory)
        prefix = f"{self.llm_root}."
        llm = {_peft_key(k[len(prefix):]): v.detach().cpu().contiguous() for k, v in state.items()
               if k.startswith(prefix)}
        extra = {k: v.detach().cpu().contiguous() for k, v in state.items() if not k.startswith(prefix)}
        files = []
        if llm:
            save_file(llm, str(directory / PEFT_WEIGHTS), metadata={"format": "pt"})
            self.config(self.targets.get(self.llm_root, []), task_type="CAUSAL_LM").save_pretrained(str(directory))
            files += [PEFT_WEIGHTS, PEFT_CONFIG]
        if extra:
            save_file(extra, str(directory / EXTRA_WEIGHTS), metadata={"format": "pt"})
            files.append(EXTRA_WEIGHTS)
        return {"llm_root": self.llm_root, "files": files}

    def read(self, directory: Any, notes: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        directory = Path(directory)
        files = list(notes.get("files", []))
        state: dict[str, torch.Tensor] = {}
        if PEFT_WEIGHTS in files:
            root = notes.get("llm_root", self.llm_root)
            state.update({f"{root}.{_prism_key(k)}": v for k, v in _load(directory / PEFT_WEIGHTS).items()})
        if EXTRA_WEIGHTS in files:
            state.update(_load(directory / EXTRA_WEIGHTS))
        return state

    # -- merging and switching off -----------------------------------------------------------------------------
    def merge(self, model: nn.Module) -> None:
        """Fold each layer's update into its base weight (a 4-bit base is dequantised first, so the merged layer
        computes what the adapted one did) and put the plain layer back."""
        for name, layer in list(_named_adapted_layers(model)):
            base = layer.get_base_layer()
            if isinstance(self.spec, QLoRASpec):
                from prism_plugin_peft.quantize import dequantized_weight

                merged = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                                   device=base.weight.device, dtype=torch.float32)
                with torch.no_grad():
                    merged.weight.copy_(dequantized_weight(base) + layer.get_delta_weight(ADAPTER_NAME).float())
                    if base.bias is not None:
                        merged.bias.copy_(base.bias.float())
                base = merged
            else:
                layer.merge(safe_merge=True, adapter_names=[ADAPTER_NAME])
            base.requires_grad_(False)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, base)
        for root in self.targets:
            with contextlib.suppress(AttributeError):
                del model.get_submodule(root).peft_config

    @contextlib.contextmanager
    def disabled(self, model: nn.Module) -> Iterator[None]:
        layers = list(_adapted_layers(model))
        grads = {id(p): p.requires_grad for layer in layers for p in layer.parameters()}
        try:
            for layer in layers:
                layer.enable_adapters(False)
            yield
        finally:
            for layer in layers:
                layer.enable_adapters(True)
                for p in layer.parameters():  # peft's enable_adapters also turns gradients back on
                    p.requires_grad_(grads[id(p)])


# -- helpers -----------------------------------------------------------------------------------------------------
def _init_adapter_module(module: nn.Module, name: str) -> None:
    """``init_module`` of an adapted layer (``name`` relative to it): peft's default LoRA initialisation, A as
    ``nn.Linear`` does (Kaiming-uniform) and B zero; DoRA's magnitude 1 until ``after_materialize``."""
    if name.startswith("lora_A."):
        nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    elif name.startswith("lora_B."):
        nn.init.zeros_(module.weight)
    elif name.startswith("lora_magnitude_vector."):
        nn.init.ones_(module.weight)


def _named_adapted_layers(model: nn.Module) -> Iterator[tuple[str, BaseTunerLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            yield name, module


def _adapted_layers(model: nn.Module) -> Iterator[BaseTunerLayer]:
    for _, module in _named_adapted_layers(model):
        yield module


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's local shard (FSDP2), or the tensor itself."""
    to_local = getattr(tensor, "to_local", None)
    return to_local() if to_local is not None else tensor


def _peft_key(key: str) -> str:
    """Our state-dict key (relative to the LLM) → peft's saved key: no adapter name, ``base_model.model.`` first,
    DoRA's magnitude without ``.weight`` (what ``get_peft_model_state_dict`` writes)."""
    key = key.replace(f".{ADAPTER_NAME}.", ".")
    if key.endswith("lora_magnitude_vector.weight"):
        key = key.removesuffix(".weight")
    return PEFT_PREFIX + key


def _prism_key(key: str) -> str:
    """Inverse of ``_peft_key``."""
    key = key.removeprefix(PEFT_PREFIX)
    if key.endswith("lora_magnitude_vector"):
        return f"{key}.{ADAPTER_NAME}.weight"
    for part in ("lora_A", "lora_B"):
        key = key.replace(f".{part}.", f".{part}.{ADAPTER_NAME}.")
    return key


def _load(file: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(file))
    except Exception as exc:  # missing, truncated, not safetensors
        raise ValueError(f"{file}: cannot be read as an adapter's weights ({exc})") from None
