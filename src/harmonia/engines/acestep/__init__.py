"""ACE-Step 1.5: songs with vocals from a style prompt and a lyric sheet, through diffusers'
`AceStepPipeline` (input model, engine, checkpoint check, tiny checkpoint builder)."""
