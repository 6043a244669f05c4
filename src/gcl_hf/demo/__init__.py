"""The embedded offline demo: rendered-scene corpus, tiny backbone, CLIP vs GCL side by side."""
