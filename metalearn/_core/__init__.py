"""The core layer: data, frames, checks, formulas, tasks and threads, results.

It imports nothing of metalearn above it.
"""
