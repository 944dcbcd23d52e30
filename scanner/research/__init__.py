"""Training and robustness research tools (`dfscan train`, perturbed evaluation)."""
