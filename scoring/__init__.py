"""From model posteriors to scored speaker turns, with no torch: sliding-window stitching
(:mod:`.stitch`), binarisation and segments (:mod:`.binarize`), DER by pyannote.metrics
(:mod:`.der`), and the reference turns a store keeps (:mod:`.reference`).

Training (validation DER) and inference (evaluate, diarize) both use it; it imports only ``stores``.
"""
