"""The LLM backbone module: a Hugging Face causal LM plus its tokenizer, driven by input embeddings."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from prism_plugin_hf_llm.spec import HFCausalLMSpec


def find_decoder_layer_classes(llm: nn.Module) -> tuple[type[nn.Module], ...]:
    """The repeated decoder block classes: those Hugging Face lists in ``_no_split_modules``, else the class of
    the longest ``nn.ModuleList`` (the layer stack)."""
    names = set(getattr(llm, "_no_split_modules", None) or ())
    classes = tuple(dict.fromkeys(type(m) for m in llm.modules() if type(m).__name__ in names))
    if classes:
        return classes
    stacks = [m for m in llm.modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not stacks:
        raise TypeError(f"cannot find the decoder layers of {type(llm).__name__}")
    return (type(max(stacks, key=len)[0]),)


#: Config attributes of models whose logits are more than ``lm_head(hidden)``: their loss uses the full logits.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class HFCausalLMBackbone(nn.Module):
    """Implements ``prism_core.protocols.LLMBackbone``. The Hugging Face model is ``self.llm`` (the original's name,
    so released checkpoints' ``llm.*`` keys load unchanged).

    Materialisation hooks (``prism_core.materialize``): ``initial_state()`` is model_id's pretrained weights
    (memory-mapped; ``{}`` for ``weights = "random"``), ``init_module`` the model's own ``_init_weights``, seeded by
    the spec's ``init_seed`` (it also recomputes the rotary-embedding buffers).
    """

    #: Autocast dtype for mixed precision (the original trains every family in bf16).
    half_precision_dtype = torch.bfloat16
    #: Packed rows (``example_ids``) are isolated by every attention kernel the spec offers: SDPA and eager get the
    #: block-diagonal causal mask transformers builds from position ids that restart per example (with no 2-D
    #: mask); flash-attention 2 gets the examples' ``cu_seqlens`` and runs its variable-length kernel.
    supports_packing = True

    def __init__(
        self,
        llm: nn.Module,
        tokenizer: Any = None,
        *,
        spec: HFCausalLMSpec,
        tokenizer_loader: Callable[[], Any] | None = None,
        model_source: str | None = None,
    ) -> None:
        super().__init__()
        if tokenizer is None and tokenizer_loader is None:
            raise ValueError("give a tokenizer or a tokenizer_loader")
        self.llm = llm
        self.spec = spec
        self.init_seed: int = spec.init_seed
        self._model_source = model_source
        self._tokenizer = None
        self._tokenizer_loader = tokenizer_loader
        if tokenizer is not None:
            self._adopt_tokenizer(tokenizer)
        self.embed_dim: int = llm.config.hidden_size
        self.decoder_layer_classes = find_decoder_layer_classes(llm)
        self.default_prompt_format: str = spec.default_prompt_format
        self.bos_in_prompt_text: bool = spec.bos_in_prompt_text
        # transformers >= 5.2x takes the KV cache as `cache=` (``past_key_values=`` is deprecated there).
        self._cache_kwarg = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"

    # -- tokenizer ---------------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        """The tokenizer (PAD added, right padding). Meta-device builds load it here, on first use."""
        if self._tokenizer is None:
            assert self._tokenizer_loader is not None
            self._adopt_tokenizer(self._tokenizer_loader())
        return self._tokenizer

    def _adopt_tokenizer(self, tokenizer: Any) -> None:
        rows = self.llm.get_input_embeddings().weight.shape[0]
        if self.spec.padded_vocab_size(len(tokenizer)) != rows:  # a preset's tokenizer_size that is wrong
            raise ValueError(f"{self.spec.name}: the tokenizer has {len(tokenizer)} entries (PAD included), which "
                             f"needs {self.spec.padded_vocab_size(len(tokenizer))} embedding rows, but the model was "
                             f"built with {rows}: fix the spec's tokenizer_size")
        self.llm.config.pad_token_id = tokenizer.pad_token_id
        self._tokenizer = tokenizer

    @contextlib.contextmanager
    def left_padding(self) -> Iterator[Any]:
        """``with llm.left_padding() as tok:`` — the tokenizer pads on the left inside the block (batched
        generation), and on the right again after it (training)."""
        tokenizer = self.tokenizer
        previous = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            yield tokenizer
        finally:
            tokenizer.padding_side = previous

    def encode_prompts(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(input_ids, attention_mask)`` for a batch of prompts, BOS added as the contract says."""
        with self.left_padding() as tokenizer:
            encoded = tokenizer(list(prompts), padding=True, truncation=True, return_tensors="pt")
        return encoded.input_ids, encoded.attention_mask

    # -- model -------------------------------------------------------------------------------------------------
    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids)

    @property
    def output_head(self) -> nn.Module | None:
        """The module mapping final hidden states to logits (``lm_head``), so the training loss can be computed
        without full logits; None for a model that transforms its logits further (soft-capping, scaling)."""
        if any(getattr(self.llm.config, name, None) for name in _LOGIT_TRANSFORMS):
            return None
        return self.llm.get_output_embeddings()

    def forward(
        self,
        *,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        example_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Hugging Face ``CausalLMOutputWithPast``: ``.loss`` (shifted, mean over labels != IGNORE), ``.logits``,
        ``.past_key_values`` (pass it back as ``past_key_values`` to continue decoding). A packed batch comes with
        ``example_ids`` and their restarting ``position_ids`` (see ``supports_packing``). ``logits=False``: the
        base model's output instead, whose ``.last_hidden_state`` ``output_head`` maps to logits."""
        if past_key_values is not None:
            kwargs[self._cache_kwarg] = past_key_values
        if example_ids is not None:
            attention_mask = None  # the isolation replaces the padding mask: padding is an example of its own
            kwargs.update(position_ids=position_ids, **self._varlen_kwargs(example_ids))
        if not logits:
            return self.llm.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
                                       **kwargs)
        return self.llm(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, use_cache=use_cache, **kwargs
        )

    def _varlen_kwargs(self, example_ids: torch.Tensor) -> dict[str, Any]:
        """For flash attention, the boundaries of every example (and padding run) of the flattened rows: its
        variable-length kernel attends within each. transformers only infers them from position ids for a single
        row, so they are given. Other kernels need nothing beyond the position ids."""
        if not str(self.llm.config._attn_implementation).startswith("flash"):
            return {}
        flat = example_ids.flatten()
        starts = torch.ones_like(flat, dtype=torch.bool)
        starts[1:] = flat[1:] != flat[:-1]
        starts[:: example_ids.shape[1]] = True  # every row begins a sequence
        bounds = torch.cat([starts.nonzero().flatten(), flat.new_tensor([flat.numel()])]).to(torch.int32)
        longest = int((bounds[1:] - bounds[:-1]).max())
        return {"cu_seq_lens_q": bounds, "cu_seq_lens_k": bounds, "max_length_q": longest, "max_length_k": longest}

    @torch.no_grad()
    def generate(self, *, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> Any:
        """New token ids ``[B, new]`` only (KV-cached; rows that hit EOS are filled with the pad id).

        Batches must be left-padded (see ``left_padding``/``encode_prompts``). Takes Hugging Face generation
        arguments (``max_new_tokens``, ``do_sample``, ``temperature``, ...); with ``return_dict_in_generate=True``
        the Hugging Face output object is returned instead (its ``sequences`` hold the new tokens only).
        """
        if attention_mask.ndim != 2 or not bool(attention_mask[:, -1].all()):
            raise ValueError("generate needs a left-padded batch: every row's last position must be attended "
                             "(use llm.left_padding() or llm.encode_prompts())")
        tokenizer = self.tokenizer
        kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
        kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
        kwargs.setdefault("use_cache", True)
        return self.llm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)

    # -- materialisation ---------------------------------------------------------------------------------------
    def initial_state(self) -> dict[str, Any]:
        """model_id's pretrained weights (keys ``llm.*``), memory-mapped, vocabulary fitted; ``{}`` when random."""
        if self.spec.weights != "pretrained":
            return {}
        from prism_plugin_hf_llm.weights import pretrained_state

        state = pretrained_state(self.spec, self.llm, self._model_source)
        return {f"llm.{k}": v for k, v in state.items()}

    def init_module(self, module: nn.Module, name: str) -> None:
        """The model's own initialisation of one module (normal(initializer_range) linears and embeddings, unit
        norms, rotary frequencies)."""
        self.llm._init_weights(module)

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (``False``: no gradients, eval mode) or unfreeze every parameter."""
        self.llm.requires_grad_(trainable)
        self.train(trainable)

    def enable_gradient_checkpointing(self) -> None:
        """Recompute decoder layers in backward (non-reentrant, so a frozen LLM still passes gradients back)."""
        self.llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.llm.config.use_cache = False

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write model (safetensors) and tokenizer in Hugging Face format; ``model_id = directory`` reloads it."""
        directory = Path(directory)
        self.llm.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        return directory
