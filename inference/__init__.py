"""Applying a trained model: load a checkpoint (:mod:`.model`), score it (:mod:`.evaluate`), write RTTM
for new audio (:mod:`.diarize`), label a store with it (:mod:`.pseudo_model`), and draw it (:mod:`.plots`)."""
