"""``hf-causal-lm``: any Hugging Face causal LM (hub id or local directory) as a prism LLM backbone.

Torch-free: the implementation is imported inside ``build``. Presets carry the Hugging Face config values of the
original Prismatic LLMs, so full-size models build on the meta device without any download.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import attrs

from prism_core.spec import SEED_RANGE, LLMBackboneSpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_hf_llm.backbone import HFCausalLMBackbone

#: Embedding rows are padded to a multiple of this after the PAD token is added (as the original does).
EMBEDDING_MULTIPLE = 64

#: Spec fields that map one to one onto Hugging Face config attributes (``None`` = keep the config's value).
ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "max_position_embeddings",
    "rope_theta",
    "partial_rotary_factor",
    "rms_norm_eps",
    "layer_norm_eps",
    "sliding_window",
    "initializer_range",
    "hidden_act",
    "tie_word_embeddings",
)

_MISTRAL_7B = {
    "model_type": "mistral", "vocab_size": 32000, "tokenizer_size": 32000, "hidden_size": 4096,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "sliding_window": 4096,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}


@attrs.frozen(kw_only=True)
class HFCausalLMSpec(LLMBackboneSpec):
    """A causal LM loaded with ``AutoModelForCausalLM`` (or built from its config for random init)."""

    kind: ClassVar[str] = "hf-causal-lm"
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "mistral-v0.1-7b-pure": {"model_id": "mistralai/Mistral-7B-v0.1", "prompt_format": "pure", **_MISTRAL_7B},
        "mistral-v0.1-7b-instruct": {
            "model_id": "mistralai/Mistral-7B-Instruct-v0.1", "prompt_format": "mistral-instruct", **_MISTRAL_7B,
        },
        "phi-2-3b": {
            "model_id": "microsoft/phi-2", "prompt_format": "phi-2", "pad_token": "<|pad|>",
            "bos_in_prompt_text": True, "model_type": "phi", "vocab_size": 51200, "tokenizer_size": 50295,
            "hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
            "intermediate_size": 10240, "max_position_embeddings": 2048, "rope_theta": 10000.0,
            "partial_rotary_factor": 0.4, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new",
            "tie_word_embeddings": False, "bos_token_id": 50256, "eos_token_id": 50256,
        },
    }

    # -- where the weights and tokenizer come from ---------------------------------------------------------------
    model_id: str | None = spec_field(
        None, help="hub id (e.g. 'mistralai/Mistral-7B-v0.1') or local directory in save_pretrained format"
    )
    revision: str | None = spec_field(None, help="hub revision (branch, tag or commit) of model_id")
    weights: Literal["pretrained", "random"] = spec_field(
        "pretrained", help="'pretrained' loads model_id's weights; 'random' initialises from the config"
    )
    tokenizer_id: str | None = spec_field(None, help="hub id or directory of the tokenizer (default: model_id)")
    gated: bool = spec_field(False, help="the hub repository needs an accepted licence and a token (Llama-2)")
    token_file: str | None = spec_field(
        None, help="file holding a Hugging Face token; default: HF_TOKEN, then huggingface_hub's stored token"
    )
    # -- behaviour ---------------------------------------------------------------------------------------------
    prompt_format: str = spec_field("pure", help="prompt-format kind the model was trained with")
    pad_token: str = spec_field("<PAD>", help="pad token added when the tokenizer has none")
    bos_in_prompt_text: bool = spec_field(
        False, help="the tokenizer adds no BOS; the prompt format writes it into the text (Phi-2)"
    )
    max_length: int = spec_field(2048, at_least=1, help="tokenizer model_max_length")
    attn_implementation: Literal["sdpa", "flash_attention_2", "eager"] = spec_field(
        "sdpa", help="attention kernel; flash_attention_2 needs the flash-attn package"
    )
    dtype: Literal["float32", "bfloat16", "float16"] = spec_field(
        "float32", help="parameter dtype (the original keeps fp32 weights and trains under bf16 autocast)"
    )
    init_seed: int = spec_field(0, **SEED_RANGE, help="seed for random initialisation and for new embedding rows")
    # -- architecture: lets the model be built without fetching config.json ---------------------------------------
    model_type: str | None = spec_field(
        None, help="Hugging Face model_type (llama, mistral, phi, ...); with it the config needs no download"
    )
    vocab_size: int | None = spec_field(None, at_least=1, help="config vocab_size before PAD resizing")
    tokenizer_size: int | None = spec_field(
        None, at_least=1,
        help="len(tokenizer) before the PAD token is added (sizes embeddings when the tokenizer is not loaded)")
    bos_token_id: int | None = spec_field(None, at_least=0, help="config bos_token_id")
    eos_token_id: int | None = spec_field(None, at_least=0, help="config eos_token_id")
    hidden_size: int | None = spec_field(None, at_least=1, help="config hidden_size (the embedding width)")
    num_hidden_layers: int | None = spec_field(None, at_least=1, help="config num_hidden_layers")
    num_attention_heads: int | None = spec_field(None, at_least=1, help="config num_attention_heads")
    num_key_value_heads: int | None = spec_field(
        None, at_least=1, help="config num_key_value_heads (grouped-query attention)")
    intermediate_size: int | None = spec_field(None, at_least=1, help="config intermediate_size (MLP width)")
    max_position_embeddings: int | None = spec_field(None, at_least=1, help="config max_position_embeddings")
    rope_theta: float | None = spec_field(None, above=0, help="rotary embedding base")
    partial_rotary_factor: float | None = spec_field(
        None, above=0, at_most=1, help="fraction of each head that is rotated (Phi)")
    rms_norm_eps: float | None = spec_field(None, above=0, help="config rms_norm_eps (Llama, Mistral)")
    layer_norm_eps: float | None = spec_field(None, above=0, help="config layer_norm_eps (Phi)")
    sliding_window: int | None = spec_field(None, at_least=1, help="config sliding_window (Mistral)")
    initializer_range: float | None = spec_field(None, above=0, help="std of the random initialisation")
    hidden_act: str | None = spec_field(None, help="config hidden_act")
    tie_word_embeddings: bool | None = spec_field(None, help="share input and output embeddings")

    @property
    def default_prompt_format(self) -> str:
        return self.prompt_format

    @property
    def supports_packing(self) -> bool:
        """Every attention kernel offered here keeps packed examples apart (``HFCausalLMBackbone``)."""
        return True

    @property
    def name(self) -> str:
        """How errors refer to this backbone: the preset, else the model id, else the kind."""
        return self.preset or self.model_id or self.kind

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.weights == "pretrained" and self.model_id is None:
            yield "model_id", "required with weights = 'pretrained' (or set weights = 'random')"
        if self.model_id is None and self.model_type is None:
            yield "model_type", "required when model_id is not set: the config is built from the spec's fields"
        if self.tokenizer_id is None and self.model_id is None:
            yield "tokenizer_id", "required when model_id is not set"
        if self.hidden_size and self.num_attention_heads and self.hidden_size % self.num_attention_heads:
            yield "hidden_size", (f"must be a multiple of num_attention_heads ({self.num_attention_heads}), "
                                  f"got {self.hidden_size}")
        if self.num_attention_heads and self.num_key_value_heads and \
                self.num_attention_heads % self.num_key_value_heads:
            yield "num_key_value_heads", (f"must divide num_attention_heads ({self.num_attention_heads}), "
                                          f"got {self.num_key_value_heads}")

    def architecture(self) -> dict[str, Any]:
        """The config values this spec carries (``None`` fields left out)."""
        values = {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
        values.update(vocab_size=self.vocab_size, bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id)
        return {k: v for k, v in values.items() if v is not None}

    def padded_vocab_size(self, tokenizer_len: int) -> int:
        """Embedding rows for a tokenizer of ``tokenizer_len`` entries (PAD included)."""
        return -(-tokenizer_len // EMBEDDING_MULTIPLE) * EMBEDDING_MULTIPLE

    def tokenizer_source(self) -> str:
        """Hub id or directory the tokenizer loads from; subclasses map their own names (``prism-tiny``)."""
        source = self.tokenizer_id or self.model_id
        assert source is not None, "checked by problems()"
        return source

    def build(self, *, device: str | None = None) -> HFCausalLMBackbone:
        """Load (or randomly initialise) the model and its tokenizer.

        ``device="meta"`` builds the module structure only: no weights are read, nothing is downloaded, and the
        tokenizer is loaded the first time ``backbone.tokenizer`` is used.
        """
        from prism_plugin_hf_llm.loading import build_backbone

        return build_backbone(self, device=device)

    def build_tokenizer(self) -> Any:
        from prism_plugin_hf_llm.loading import load_tokenizer

        return load_tokenizer(self)
