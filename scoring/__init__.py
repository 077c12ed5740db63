"""From what a model (or a pretrained encoder and VAD) says of a recording to scored speaker turns, with
no torch.

* :mod:`.settings`: :class:`~.settings.PipelineSettings`, every setting of the pipeline in one dataclass.
* :mod:`.pipeline`: the one path from chunks or stitched posteriors to turns (clustering, assignment of
  briefly active slots, overlap-add, decisions, the VAD's speech gate), used by validation during
  training, ``evaluate``, ``diarize``, the ``Diarizer`` and pseudo labels alike.
* :mod:`.cluster` (agglomerative clustering with cannot-link, assignment), :mod:`.count` (the eigengap
  speaker count, NME-SC), :mod:`.stitch` (sliding windows), :mod:`.binarize` (threshold, powerset and
  median decisions, segments).
* :mod:`.tuning`: thresholds chosen jointly by running the pipeline itself; :mod:`.der` (pyannote.metrics)
  and :mod:`.reference` (the reference turns a store keeps).

Imports only ``stores``.
"""
