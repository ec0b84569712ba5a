"""Stable Audio Open: 44.1 kHz stereo clips from a prompt, through diffusers' `StableAudioPipeline`
(input model, engine, checkpoint check, tiny checkpoint builder)."""
