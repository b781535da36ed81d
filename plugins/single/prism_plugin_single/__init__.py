"""prism-plugin-single: the single-process training strategy (kind ``single``)."""
