"""Applications built on the library: the ``unified-rl`` command, the demo, the paper's
experiments, plots and the embedded arithmetic task. The library never imports this package."""
