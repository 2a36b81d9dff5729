"""The report layer: the HTML demo page (`demo`), its HTML helpers (`html`) and spectrogram images.

It reads the artifacts of the stages below it (evaluation, ablation, singing) by path only; the stage
`gensr.stages.report.demo_page` says where they are.
"""
