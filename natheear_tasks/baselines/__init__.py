"""Reference HEAR modules without a learned encoder (lower baselines for comparisons)."""
