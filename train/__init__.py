"""THAU's model work: the tool-calling dataset, the LoRA trainer and the evaluator.

Heavy libraries (torch, transformers, matplotlib) are imported inside the functions that
need them, so ``thau-train --help`` stays fast.
"""
