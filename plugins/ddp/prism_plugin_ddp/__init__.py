"""prism-plugin-ddp: DistributedDataParallel training strategy (kind ``ddp``)."""
