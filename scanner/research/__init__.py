"""Research and training commands: `dfscan train`, `eval`, `probe`, `separability`, `synth`,
with their data, augmentation, statistics and model-card helpers."""
