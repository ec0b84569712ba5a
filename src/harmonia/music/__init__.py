"""Shared music vocabulary: keys and chords, scores, instruments, song plans and syllables. Every
model family may use it; none of it knows engines, HTTP or Redis.
"""
