"""Reading channels, parsing rows per task, tokenisation with word alignment, windows, batching."""
