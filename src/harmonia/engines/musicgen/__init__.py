"""The `musicgen` family: MusicGen through Hugging Face transformers.

`input` (the request), `loader` (hub id or local checkpoint), `decode` + `packed` (the decode
loop: static KV cache, CUDA graphs, int8 on CPU), `streaming`, `engine`, `tiny` (random-weight
checkpoints for offline trials). Only `input` and `loader` import without torch.
"""
