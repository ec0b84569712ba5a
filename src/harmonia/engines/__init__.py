"""Engines: pure model code (tensors, audio, MIDI). No HTTP, no Redis."""
