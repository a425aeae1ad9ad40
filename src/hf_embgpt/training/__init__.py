"""Training pieces for `embgpt train` and recipes: arguments, data, nanoGPT's recipe on Trainer, checkpoint integrity,
callbacks."""
