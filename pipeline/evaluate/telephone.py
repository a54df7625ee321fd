"""What a G.711 telephone line does to wideband speech, using the product's own codec and resampler."""
from __future__ import annotations

import numpy as np

from ..audio import decode_mulaw, encode_mulaw, float_to_int16, int16_to_float, resample

TELEPHONE_SR_HZ = 8000
# The classic PSTN voice band; only applied when a caller asks for it (see telephone_version).
VOICE_BAND_HZ = (300.0, 3400.0)


def telephone_version(y: np.ndarray, *, sr: int, band_pass: bool = False) -> np.ndarray:
    """Resample to 8 kHz (soxr), optionally band-limit to 300-3400 Hz, G.711 mu-law encode and decode.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)], float32 in [-1, 1]
    sr : int, the rate of ``y``
    band_pass : also apply the PSTN voice band (4th-order Butterworth, zero phase)

    Returns
    -------
    np.ndarray [shape=(m,)], float32 at 8000 Hz, carrying mu-law quantisation
    """
    y8 = resample(np.asarray(y, dtype=np.float32), orig_sr=sr, target_sr=TELEPHONE_SR_HZ)
    if band_pass and y8.size > 30:
        from scipy.signal import butter, sosfiltfilt  # imported here: scipy.signal costs seconds at start-up

        sos = butter(4, VOICE_BAND_HZ, btype="bandpass", fs=TELEPHONE_SR_HZ, output="sos")
        y8 = sosfiltfilt(sos, y8).astype(np.float32)
    return int16_to_float(decode_mulaw(encode_mulaw(float_to_int16(y8))))
