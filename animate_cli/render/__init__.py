"""Rendering: the neural and warp renderers, the warp geometry, compositing and the pipeline."""
