"""Evaluation protocols (crops as in the paper, full frame, part crops) and their shared metrics."""
