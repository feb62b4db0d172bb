"""The evaluation wing: perplexity, KL, sparsity, per-example records, zero-shot through lm-eval, latency, the checkpoint hand-off (docs/architecture.md)."""
