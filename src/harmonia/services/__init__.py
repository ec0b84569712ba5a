"""The sync HTTP services: `model` (a model engine behind POST /generate: musicgen, diffsinger)
and `ollama` (the prompt-helper wrapper over an LLM server).
"""
