"""Torch modules behind ``prism_core.testing.fakes`` (imported only when a fake spec is built).

Built eagerly by their specs, they also define the materialisation hook ``init_module`` (``prism_core.materialize``),
so ``prism_core.build`` constructs them on the meta device like first-party components.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from PIL import Image
from torch import nn


class FakeImageTransform:
    """PIL image (any mode, any size) → ``[3, S, S]`` float tensor in [-1, 1]."""

    is_prismatic = True

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB").resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        pixels = data.view(self.image_size, self.image_size, 3).permute(2, 0, 1).float()
        return pixels / 127.5 - 1.0


class FakeFusedTransform:
    is_prismatic = True

    def __init__(self, image_size: int, members: Sequence[str]) -> None:
        self.single = FakeImageTransform(image_size)
        self.members = tuple(members)

    def __call__(self, image: Image.Image) -> dict[str, torch.Tensor]:
        pixels = self.single(image)
        return {name: pixels.clone() for name in self.members}


class FakeBlock(nn.Module):
    """A pre-norm transformer block (what FSDP would wrap)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class _Tower(nn.Module):
    def __init__(self, image_size: int, patch_size: int, dim: int) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)
        self.num_patches = (image_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches, dim) * 0.02)
        self.block = FakeBlock(dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        return self.block(x + self.pos_embed)


class _TrainableMixin(nn.Module):
    def set_trainable(self, trainable: bool) -> None:
        self.requires_grad_(trainable)
        self.train(trainable)

    def init_module(self, module: nn.Module, name: str) -> None:
        """Materialisation hook (``prism_core.materialize``): torch's own initialisation of each layer."""
        init_torch_module(module)


def init_torch_module(module: nn.Module) -> None:
    """torch's default initialisation of ``module``'s own tensors; a tower's position embedding ~ N(0, 0.02)."""
    if isinstance(module, nn.MultiheadAttention):  # its out_proj is a child with its own reset
        nn.init.xavier_uniform_(module.in_proj_weight)
        nn.init.zeros_(module.in_proj_bias)
    elif isinstance(module, _Tower):
        nn.init.normal_(module.pos_embed, std=0.02)
    else:
        module.reset_parameters()


class FakeVisionBackbone(_TrainableMixin):
    shard_block_classes = (FakeBlock,)

    def __init__(self, image_size: int, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.tower = _Tower(image_size, patch_size, embed_dim)
        self.image_size = image_size
        self.embed_dim = embed_dim
        self.num_patches = self.tower.num_patches
        self.image_transform = FakeImageTransform(image_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.tower(pixel_values)


class FakeFusedVisionBackbone(_TrainableMixin):
    shard_block_classes = (FakeBlock,)

    def __init__(self, image_size: int, patch_size: int, embed_dims: Sequence[int]) -> None:
        super().__init__()
        self.members = nn.ModuleDict({f"tower{i}": _Tower(image_size, patch_size, d) for i, d in enumerate(embed_dims)})
        self.image_size = image_size
        self.embed_dim = sum(embed_dims)
        self.num_patches = (image_size // patch_size) ** 2
        self.image_transform = FakeFusedTransform(image_size, list(self.members))

    def forward(self, pixel_values: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tower(pixel_values[name]) for name, tower in self.members.items()], dim=-1)


class FakeMLPProjector(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, seed: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.init_seed = seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.projector = nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)

    def init_module(self, module: nn.Module, name: str) -> None:
        init_torch_module(module)


@lru_cache(maxsize=4)
def _byte_tokenizer_object() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tok


def byte_tokenizer(max_length: int = 256) -> Any:
    """A deterministic byte-level tokenizer with Llama's special-token conventions (BOS added, right padding)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_byte_tokenizer_object(),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="right",
        model_max_length=max_length,
    )


class FakeLLMBackbone(_TrainableMixin):
    default_prompt_format = "fake-pure"
    bos_in_prompt_text = False
    #: A real LlamaForCausalLM (SDPA): position ids that restart per example, with no 2-D mask, make transformers
    #: build the block-diagonal causal mask itself.
    supports_packing = True

    def __init__(self, tokenizer: Any, hidden_size: int, num_layers: int, num_heads: int, init_range: float,
                 vocab_size: int = 0) -> None:
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        self.tokenizer = tokenizer
        config = LlamaConfig(
            vocab_size=max(vocab_size, len(tokenizer)),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            max_position_embeddings=1024,
            initializer_range=init_range,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
        )
        config._attn_implementation = "sdpa"
        self.llm = LlamaForCausalLM(config)
        self.llm.generation_config.pad_token_id = tokenizer.pad_token_id
        self.llm.generation_config.eos_token_id = tokenizer.eos_token_id
        self.embed_dim = hidden_size
        self.decoder_layer_classes = (LlamaDecoderLayer,)

    def init_module(self, module: nn.Module, name: str) -> None:
        self.llm._init_weights(module)  # Hugging Face's own, rotary frequencies included

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(input_ids)

    @property
    def output_head(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    def forward(
        self,
        *,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
        example_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        logits: bool = True,
    ) -> Any:
        # Newer transformers take the KV cache as `cache=` (`past_key_values=` is deprecated): pass it only when
        # there is one, under the name this version's forward takes.
        import inspect

        name = "cache" if "cache" in inspect.signature(self.llm.forward).parameters else "past_key_values"
        kwargs: dict[str, Any] = {} if past_key_values is None else {name: past_key_values}
        if example_ids is not None:  # packed: isolation comes from the restarting positions (see supports_packing)
            attention_mask, kwargs["position_ids"] = None, position_ids
        if not logits:
            return self.llm.base_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False,
                                       **kwargs)
        return self.llm(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask, labels=labels, use_cache=use_cache, **kwargs
        )

    def generate(self, *, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.llm.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
