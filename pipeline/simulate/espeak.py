"""A small ctypes binding to the eSpeak NG speech synthesizer shipped by ``espeakng-loader``.

eSpeak NG keeps all of its state in C globals. Some of that state (pitch flutter
phase, wave-generator phase, ...) carries over from one utterance to the next and is
not reset by ``espeak_Terminate``/``espeak_Initialize``, so the samples produced for
a text depend on everything synthesized before it in the process. To make synthesis
reproducible regardless of which worker process renders which recording,
:class:`Espeak` loads the shared library afresh when opened and unloads it
(``dlclose``) when closed: every session starts from the library's pristine state.

Only one session may be open per process (the globals are shared); parallel
synthesis runs in separate processes.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from pathlib import Path

import espeakng_loader
import numpy as np
from _ctypes import dlclose

from agencerdas.stores.errors import AgencerdasError

#: Sample rate of eSpeak NG's output, in Hz (fixed by the library).
SAMPLE_RATE_HZ = 22050

# Constants from espeak-ng/speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EE_OK = 0
# Milliseconds of audio per callback: long chunks keep Python callbacks rare.
_BUFFER_MS = 1000

# int callback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_open_lock = threading.Lock()


def data_path() -> Path:
    """Directory of the eSpeak NG voice data shipped with ``espeakng-loader``."""
    return Path(espeakng_loader.get_data_path())


@functools.lru_cache(maxsize=1)
def available_variants() -> frozenset[str]:
    """Names of the voice variants (the part after ``+`` in ``en-us+f3``) in the shipped data."""
    return frozenset(path.name for path in (data_path() / "voices" / "!v").iterdir() if path.is_file())


def espeak_version() -> str:
    """Version of the shipped eSpeak NG, e.g. ``1.52.0`` (audio differs between versions)."""
    with Espeak() as tts:
        return tts.version


def _declare(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
        ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int


def _is_loaded(path: str) -> bool:
    """Whether the shared library at ``path`` is still mapped into this process."""
    try:
        probe = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
    except OSError:
        return False
    # The probe took a reference of its own; give it back.
    dlclose(probe._handle)
    return True


class Espeak:
    """One synthesis session with a freshly loaded eSpeak NG (use as a context manager).

    >>> with Espeak() as tts:
    ...     samples = tts.synthesize("apa kabar", "id+m3", rate_wpm=160)

    Output is mono int16 at :data:`SAMPLE_RATE_HZ`.
    """

    def __init__(self) -> None:
        if not _open_lock.acquire(blocking=False):
            raise RuntimeError("an Espeak session is already open in this process; eSpeak NG state is global")
        self._path = espeakng_loader.get_library_path()
        self._chunks: list[np.ndarray] = []
        # The ctypes callback object must outlive every call that may invoke it.
        self._callback = _SynthCallback(self._collect)
        try:
            self._lib = ctypes.CDLL(self._path)
            _declare(self._lib)
        except (OSError, AttributeError) as exc:
            _open_lock.release()
            raise AgencerdasError(
                f"cannot load eSpeak NG from {self._path} ({exc}); reinstall the espeakng-loader package"
            ) from None
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, str(data_path()).encode(), _INITIALIZE_DONT_EXIT
        )
        if rate != SAMPLE_RATE_HZ:
            self._unload()
            raise AgencerdasError(
                f"eSpeak NG failed to initialise with data at {data_path()} (returned {rate}); "
                "reinstall the espeakng-loader package"
            )
        self._lib.espeak_SetSynthCallback(self._callback)
        self.version: str = self._lib.espeak_Info(None).decode()

    def __enter__(self) -> Espeak:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Terminate eSpeak NG and unload the library so the next session starts clean."""
        if self._lib is None:
            return
        self._lib.espeak_Terminate()
        self._unload()

    def _unload(self) -> None:
        handle, self._lib = self._lib._handle, None
        dlclose(handle)
        _open_lock.release()
        if _is_loaded(self._path):
            # Something else in the process holds the library, so its globals survive
            # and later sessions would not be reproducible.
            raise AgencerdasError(
                f"{self._path} stays loaded after closing eSpeak NG (another module in this process "
                "uses it); run the simulator in a process of its own"
            )

    def _collect(self, wav: ctypes._Pointer, n_samples: int, _events: int) -> int:
        if n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(
        self,
        text: str,
        voice: str,
        *,
        rate_wpm: int = 175,
        pitch: int = 50,
        pitch_range: int = 50,
        seed: int = 0,
    ) -> np.ndarray:
        """Speak ``text`` with ``voice`` (``language`` or ``language+variant``, e.g. ``en-us+f3``).

        ``rate_wpm`` is the speaking rate in words per minute (80-450), ``pitch`` the base
        pitch and ``pitch_range`` the intonation range, both on eSpeak's 0-100 scale
        relative to the voice. ``seed`` seeds eSpeak's noise generator (Klatt voices,
        breathiness). Returns int16 samples at :data:`SAMPLE_RATE_HZ`, silence included.
        Raises AgencerdasError for a voice eSpeak NG does not know.
        """
        if self._lib is None:
            raise RuntimeError("synthesize() on a closed Espeak session")
        language, _, variant = voice.partition("+")
        # eSpeak silently ignores an unknown variant, so check it against the data.
        if variant and variant not in available_variants():
            raise AgencerdasError(
                f"eSpeak NG has no voice variant {variant!r} (voice {voice!r}); "
                f"variants are listed in {data_path() / 'voices' / '!v'}"
            )
        if not language or self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise AgencerdasError(f"eSpeak NG rejects voice {voice!r}; use a language eSpeak NG knows, e.g. 'en-us+m3'")
        for parameter, value in ((_PARAM_RATE, rate_wpm), (_PARAM_PITCH, pitch), (_PARAM_RANGE, pitch_range)):
            self._lib.espeak_SetParameter(parameter, int(value), 0)
        self._lib.espeak_ng_SetRandSeed(seed)
        encoded = text.encode()
        self._chunks = []
        status = self._lib.espeak_Synth(
            encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if status != _EE_OK:
            raise RuntimeError(f"espeak_Synth failed with status {status} for voice {voice!r}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
