"""The `render` family: notes or MIDI -> audio with General MIDI SoundFont instruments."""
