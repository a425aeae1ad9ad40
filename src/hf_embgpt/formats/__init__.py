"""Checkpoint formats: one module per format (GPT-2 folders, nanoGPT, llm.c, OpenAI TF) over `common`, with
`registry` to detect, read and write any of them. Nothing here imports from the layers above (training, tools)."""
