"""prism model adapters on peft: LoRA, DoRA, QLoRA (spec classes in ``prism_plugin_peft.spec``)."""
