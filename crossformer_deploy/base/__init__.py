"""The torch-free base every layer may import: errors, the input-size rule, what an exported model says about
itself (ModelInfo, model files), image loading and preprocessing, class names, atomic file writes, signals,
the cache folder. It runs in Triton's serving environment, which has no torch."""
