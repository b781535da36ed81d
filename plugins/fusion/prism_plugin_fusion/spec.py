"""The ``fused`` vision backbone spec: two or more member backbone specs of any kind. Torch-free.

Each member keeps its own normalisation and transform; the image transform returns ``{member key: tensor}`` and
the features are the members' patch features concatenated channel-wise, so every member must produce the same
number of patches (checked at spec time when the members can tell, else at build time).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar, Literal

import attrs

from prism_core.spec import VisionBackboneSpec, spec_field

if TYPE_CHECKING:
    from prism_plugin_fusion.fused import FusedVisionBackbone

DINO_L = {"kind": "dinov2", "preset": "dinov2-vit-l"}


@attrs.frozen(kw_only=True)
class FusedSpec(VisionBackboneSpec):
    """Member backbones run side by side; ``embed_dim`` is the sum of theirs."""

    kind: ClassVar[str] = "fused"
    presets: ClassVar[dict[str, dict]] = {
        # The original's CLIP half lacked quick_gelu; set members[1].act_layer = "gelu" to reproduce that.
        "dinoclip-vit-l-336px": {"members": [{**DINO_L, "image_size": 336},
                                             {"kind": "clip", "preset": "clip-vit-l-336px"}]},
        "dinosiglip-vit-so-224px": {"members": [DINO_L, {"kind": "siglip", "preset": "siglip-vit-so400m"}]},
        "dinosiglip-vit-so-384px": {"members": [{**DINO_L, "image_size": 384, "partial_patches": True},
                                                {"kind": "siglip", "preset": "siglip-vit-so400m-384px"}]},
        "dinosiglip-tiny": {"members": [{"kind": "dinov2", "preset": "dinov2-tiny"},
                                        {"kind": "siglip", "preset": "siglip-tiny"}]},
    }

    members: tuple[VisionBackboneSpec, ...] = spec_field(help="the member backbones, each a table with its kind")
    keys: tuple[str, ...] | None = spec_field(
        None, help="keys of the members' pixels in the transform's output; default: each kind's own "
                   "(dinov2 → 'dino', siglip → 'siglip', clip → 'clip', else the kind)")
    resize: Literal["resize-naive", "resize-crop", "letterbox"] | None = spec_field(
        None, help="when set, replaces every member's resize strategy (the original used one for both)")

    def member_keys(self) -> tuple[str, ...]:
        if self.keys is not None:
            return self.keys
        return tuple(getattr(type(m), "fusion_key", m.kind) for m in self.members)

    def resolved_members(self) -> tuple[VisionBackboneSpec, ...]:
        """The members with ``resize`` applied."""
        if self.resize is None:
            return self.members
        return tuple(attrs.evolve(m, resize=self.resize) for m in self.members)  # type: ignore[misc]

    @property
    def num_patches(self) -> int | None:
        counts = {m.num_patches for m in self.members}
        return counts.pop() if len(counts) == 1 else None

    def problems(self) -> Iterator[tuple[str, str]]:
        if len(self.members) < 2:
            yield "members", f"need at least two member backbones, got {len(self.members)}"
        keys = self.member_keys()
        if self.keys is not None and len(self.keys) != len(self.members):
            yield "keys", f"has {len(self.keys)} keys for {len(self.members)} members"
        for key in keys:
            if not key.isidentifier():
                yield "keys", f"{key!r} is not a valid key (letters, digits and underscores)"
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            where = "keys" if self.keys is not None else "members"
            yield where, f"member keys must be unique, {', '.join(map(repr, repeated))} repeats: set keys = [...]"
        known = [(i, m.num_patches) for i, m in enumerate(self.members) if m.num_patches is not None]
        if len({n for _, n in known}) > 1:
            listing = ", ".join(f"members[{i}] ({keys[i] if i < len(keys) else self.members[i].kind}) {n}"
                                for i, n in known)
            yield "members", f"members must produce the same number of patches to be concatenated, got {listing}"
        if self.resize is not None:
            for i, member in enumerate(self.members):
                if not (attrs.has(type(member)) and "resize" in attrs.fields_dict(type(member))):
                    yield f"members[{i}]", f"kind {member.kind!r} has no resize field for resize = {self.resize!r}"

    def build(self) -> FusedVisionBackbone:
        from prism_plugin_fusion.fused import FusedVisionBackbone

        members = self.resolved_members()
        return FusedVisionBackbone({key: member.build() for key, member in zip(self.member_keys(), members,
                                                                                 strict=True)})
