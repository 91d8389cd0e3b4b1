"""Corpus preparation: library functions that write JSONL manifests."""
