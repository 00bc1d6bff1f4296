"""CodeScaler: execution-free reward models for code LLMs.

Stages live one per module (extract, shaping, scorer, sandbox, pairs, train_rm,
grpo, generate, select, evaluate, rmbench, server, cli). Importing the package
imports nothing heavy: torch and transformers load only when a stage needs them.
"""

__version__ = "0.1.0"
