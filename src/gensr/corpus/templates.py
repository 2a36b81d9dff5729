"""Sentence templates of the bundled corpus: "subject verb object tail".

A sentence fills TEMPLATE slot by slot, e.g. "the young farmer carried a heavy box near the
river". Every word is common English found in pocketsphinx's default dictionary, so the
content metric can decode with a grammar built from the same slots (`jsgf_grammar()`), which
keeps WER about the audio rather than about out-of-vocabulary words.

Adjectives start with a consonant so that the determiner "a" always reads correctly.
"""

from __future__ import annotations

import numpy as np

# Slot order of every sentence; the subject and object are determiner + adjective + noun.
TEMPLATE: tuple[str, ...] = (
    "determiner",
    "person_adjective",
    "person",
    "verb",
    "determiner",
    "thing_adjective",
    "thing",
    "tail",
)

_SLOTS: dict[str, tuple[str, ...]] = {
    "determiner": ("the", "a", "my", "his", "her", "our", "their", "that", "this"),
    "person_adjective": (
        "young", "tall", "quiet", "happy", "busy", "small", "kind", "good",
        "new", "brave", "tired", "funny", "polite", "lucky", "careful", "strong",
    ),
    "person": (
        "man", "woman", "boy", "girl", "teacher", "doctor", "farmer", "driver",
        "student", "worker", "neighbor", "baker", "painter", "player", "singer", "writer",
        "nurse", "pilot", "sailor", "captain",
    ),
    "verb": (
        "found", "moved", "carried", "painted", "opened", "cleaned", "bought", "sold",
        "brought", "dropped", "washed", "watched", "fixed", "lost", "kept", "took",
        "left", "made", "held", "pushed", "pulled", "broke", "built", "checked",
        "covered", "filled", "lifted", "packed", "wrapped", "showed",
    ),
    "thing_adjective": (
        "red", "blue", "green", "black", "white", "brown", "big", "small",
        "heavy", "light", "new", "large", "little", "round", "wooden", "clean",
    ),
    "thing": (
        "box", "car", "chair", "table", "book", "bag", "cup", "letter",
        "phone", "ball", "door", "window", "lamp", "coat", "hat", "key",
        "map", "picture", "bottle", "basket",
    ),
    "tail": (
        "in the park", "near the river", "before the game", "after dinner", "at the station",
        "on monday morning", "by the window", "last night", "under the table", "behind the school",
        "in the kitchen", "at the market", "on the bus", "near the house", "after school",
        "in the garden", "at the office", "on the street", "before lunch", "in the morning",
        "at the party", "on the train", "by the door", "this evening",
    ),
}


def template_slots() -> dict[str, list[str]]:
    """Slot name -> alternatives (words or short phrases), in a stable order."""
    return {name: list(words) for name, words in _SLOTS.items()}


def vocabulary() -> list[str]:
    """Every distinct word any sentence can contain, sorted."""
    return sorted({word for words in _SLOTS.values() for phrase in words for word in phrase.split()})


def jsgf_grammar(name: str = "gensr_corpus") -> str:
    """A JSGF grammar accepting exactly the sentences `sample_sentence` can produce."""
    lines = ["#JSGF V1.0;", f"grammar {name};", "public <sentence> = " + " ".join(f"<{s}>" for s in TEMPLATE) + ";"]
    for slot, words in _SLOTS.items():
        lines.append(f"<{slot}> = " + " | ".join(words) + ";")
    return "\n".join(lines) + "\n"


def sample_sentence(rng: np.random.Generator) -> str:
    """One lowercase sentence (the transcript), drawing every slot uniformly from `rng`."""
    return " ".join(_SLOTS[slot][int(rng.integers(len(_SLOTS[slot])))] for slot in TEMPLATE)


def sentence_for(seed: int, index: int, attempt: int) -> str:
    """The sentence of utterance `index` at retry `attempt`: a pure function of its arguments."""
    return sample_sentence(np.random.default_rng([seed % 2**32, index, attempt]))
