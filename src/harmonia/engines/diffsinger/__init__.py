"""The `diffsinger` family: singing synthesis with openvpi DiffSinger ONNX voicebanks.

`input` (lyrics + notes, MIDI, .ds), `dictionary` (lyrics -> phonemes), `voicebank` (the folder and
its configs), `phrases` (timed phonemes per phrase), `pitch` (the f0 curve), `engine` (ONNX runs).
"""
