"""prism-plugin-fsdp: FSDP2 (``fully_shard``) training strategy (kind ``fsdp``)."""
