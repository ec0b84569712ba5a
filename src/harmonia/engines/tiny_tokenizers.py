"""Tokenizers for the tiny random-weight checkpoints, made on the spot (no hub, no download).

The checkpoints that `harmonia make-tiny` writes (MusicGen, ACE-Step, Stable Audio) need a real
tokenizer of the kind their text encoder uses, saved with the checkpoint and loaded back with
`from_pretrained`: a T5 (Unigram) tokenizer from a small written vocabulary, and a Qwen-style
byte-level BPE tokenizer whose merges are learnt from a few lines of text right here.
"""

from __future__ import annotations

import string
from typing import Any

# Words a prompt is likely to contain get whole-word pieces; anything else falls back to letters.
_WORDS = (
    "piano solo melody drums bass guitar synth jazz rock pop ambient calm fast slow loud soft song "
    "beat track music with and the a of in lofi hip hop strings orchestra violin electronic dance"
).split()

# Text the byte-level BPE learns its merges from: the shape of what ACE-Step's pipeline feeds its
# text encoder (its prompt template, metadata and a lyric sheet with section tags).
_BPE_CORPUS = [
    "# Instruction\nFill the audio semantic mask based on the given conditions:\n\n# Caption\n",
    "Repaint the mask area based on the given conditions:\n\n# Metas\n- bpm: 120\n- timesignature: 4\n",
    "- keyscale: C major\n- duration: 30 seconds\n<|endoftext|>\n# Languages\nen\n\n# Lyric\n",
    "[verse]\nsoft notes in the morning light\n[chorus]\nmusic fills the air tonight\n[bridge]\n",
    " ".join(_WORDS),
]


def t5_tokenizer() -> Any:
    """A T5 (Unigram) tokenizer over a written vocabulary of prompt words and single characters."""
    from transformers import T5Tokenizer

    vocab: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -3.0) for w in _WORDS]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    vocab += [(c, -5.0) for c in chars] + [("\u2581" + c, -5.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def qwen_tokenizer(vocab_size: int = 400) -> Any:
    """A Qwen2 (byte-level BPE) tokenizer: the 256 byte symbols plus merges learnt from the text
    above, `<|endoftext|>` as end, padding and special token, as in Qwen3's tokenizer."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_BPE_CORPUS, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges: Any = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=merges)
