"""Models: the embedded default model (tokenizer, training, cache) and loading any model."""
