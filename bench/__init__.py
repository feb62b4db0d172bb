"""PruneBench: one protocol to compare post-training pruning methods for LLMs."""
__version__ = "0.1.0"
