"""Audio helpers shared by every engine: encoding to files (`encode`) and measurements (`analysis`).

Audio inside Harmonia is float32 numpy, shaped `(frames,)` for mono or `(frames, channels)`,
nominally in [-1, 1].
"""
