"""The singing application above the corpus: pseudo-labels, Voicefixer fine-tuning, the singing evaluation.

    restore   a generative restorer over rows WITHOUT clean references (seeded, sharded, resumable)
    gate      the label quality gate: silence / non-finite / length / level checks, then DNSMOS thresholds
    finetune  Voicefixer fine-tuning on (degraded singing, kept label): it takes the finetune table and the
              label table only, and refuses any table with a reference column
    report    paired-bootstrap comparisons between systems, the markdown table, spectrogram triptychs

The stages (gensr.stages.singing) wire these to params and paths; nothing here reads params.yaml.
"""
