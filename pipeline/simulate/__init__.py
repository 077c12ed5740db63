"""Built-in demo corpus: simulated multi-speaker conversations spoken by eSpeak NG.

Usage::

    from agencerdas.pipeline.simulate import SimulationConfig, simulate_corpus
    simulate_corpus(Path("data/demo/train"), SimulationConfig(n_recordings=100, pool="train", jobs=-1))

Train and test corpora drawn with the same ``pool_seed`` and pool sizes have
disjoint speakers (see :func:`speaker_pools`).
"""

from agencerdas.pipeline.simulate.config import FORMATS, SimulationConfig
from agencerdas.pipeline.simulate.corpus import simulate_corpus
from agencerdas.pipeline.simulate.espeak import SAMPLE_RATE_HZ, Espeak
from agencerdas.pipeline.simulate.speakers import Speaker, speaker_pool, speaker_pools

__all__ = [
    "FORMATS",
    "SAMPLE_RATE_HZ",
    "Espeak",
    "SimulationConfig",
    "Speaker",
    "simulate_corpus",
    "speaker_pool",
    "speaker_pools",
]
