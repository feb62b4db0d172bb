"""The tools wing: the method contract, the new-method scaffold and the developer benchmarks behind bench/*.json (docs/architecture.md)."""
