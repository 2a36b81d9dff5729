"""The embedded singing corpus: eSpeak NG speech resynthesised with the WORLD vocoder to sing a melody.

    espeak_events  eSpeak NG speech plus its phoneme events (a ctypes wrapper of its own)
    melody         seeded melodies: a key per clip, notes of a scale in the singer's range
    synth          syllables from the phoneme events, one held note each, WORLD resynthesis
    corpus         the clips of a build: lyrics, singers, splits (one spawned eSpeak process)

The stage that writes it is gensr.stages.singing_corpus.
"""
