"""t2: Transformer-Squared self-adaptive LLMs (SVF expert vectors + two-pass inference)."""

__version__ = "0.1.0"
