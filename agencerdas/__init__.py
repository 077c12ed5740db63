"""The `agencerdas` console script (:mod:`.cli`); ``python -m agencerdas`` runs it too."""
