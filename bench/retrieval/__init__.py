"""Session-level retrieval benchmark on LongMemEval_S (see docs/retrieval.md)."""
