"""Prosody: F0, energy, speaking rate and voice-quality functionals of one speaker's audio.

Everything is measured on a telephone-band version of the signal: the input (any rate) is resampled
explicitly to ``analysis_sr_hz`` (8 kHz by default) and band-limited to ``band_low_hz``-``band_high_hz``
(300-3400 Hz), so the same speech gives the same numbers whether it arrived as 16 kHz wideband or as
8 kHz G.711. The emotion model (``pipeline.emotion``) is trained on the vector this module produces,
which is why the 16 kHz and 8 kHz scores of one clip agree.

Voice-quality measures are frame-level approximations, not Praat's cycle-by-cycle ones:
jitter and shimmer are the relative perturbation of the period and the peak amplitude between
consecutive 10 ms voiced frames; HNR comes from the normalised autocorrelation at the YIN period.

Each speaker's running baseline of these features (what "loud for this caller" means) is
:class:`pipeline.speaker_baseline.SpeakerBaseline`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

from .audio import resample

logger = logging.getLogger(__name__)

# Semitones are measured relative to 100 Hz, a common reference between male and female voices.
_ST_REF_HZ = 100.0
_EPS = 1e-10
# Neighbourhood (voiced frames) whose median F0 decides the octave of each frame.
_OCTAVE_CONTEXT_FRAMES = 51
_FOLD_BEYOND_ST = 7.0
_MAX_PERTURBATION_ST = 2.0


@dataclass(frozen=True)
class ProsodyOptions:
    """Options of the prosody stage; the defaults equal the ``[prosody]`` section of callpulse.toml."""

    fmin_hz: float = 65.0
    fmax_hz: float = 600.0
    analysis_sr_hz: int = 8000
    band_low_hz: float = 300.0
    band_high_hz: float = 3400.0
    frame_ms: float = 40.0
    hop_ms: float = 10.0
    active_range_db: float = 30.0
    silence_floor_db: float = -55.0
    voicing_threshold: float = 0.45
    min_pause_s: float = 0.15
    syllable_prominence_db: float = 2.0
    min_syllable_gap_s: float = 0.1
    n_mels: int = 24
    n_mfcc: int = 12
    baseline_min_speech_s: float = 4.0
    baseline_memory_s: float = 120.0
    zscore_clip: float = 5.0

    def __post_init__(self) -> None:
        if not 0.0 < self.fmin_hz < self.fmax_hz:
            raise ValueError(f"need 0 < fmin_hz < fmax_hz, got {self.fmin_hz} and {self.fmax_hz}")
        if not 0.0 < self.band_low_hz < self.band_high_hz < self.analysis_sr_hz / 2:
            raise ValueError(
                f"need 0 < band_low_hz < band_high_hz < analysis_sr_hz/2, got {self.band_low_hz}, "
                f"{self.band_high_hz}, {self.analysis_sr_hz}"
            )
        if self.fmax_hz >= self.analysis_sr_hz / 4:
            raise ValueError(f"fmax_hz={self.fmax_hz} is too high for analysis_sr_hz={self.analysis_sr_hz}")
        if self.hop_ms <= 0 or self.frame_ms < self.hop_ms:
            raise ValueError(f"need 0 < hop_ms <= frame_ms, got {self.hop_ms} and {self.frame_ms}")
        # YIN needs a frame longer than the longest period searched.
        if self.frame_ms / 1000.0 <= 1.0 / self.fmin_hz:
            raise ValueError(
                f"frame_ms={self.frame_ms} must exceed one period of fmin_hz={self.fmin_hz} "
                f"({1000.0 / self.fmin_hz:.1f} ms)"
            )
        if not 0.0 < self.voicing_threshold < 1.0:
            raise ValueError(f"voicing_threshold must be in (0, 1), got {self.voicing_threshold}")
        if self.n_mfcc < 1 or self.n_mels <= self.n_mfcc:
            raise ValueError(f"need 1 <= n_mfcc < n_mels, got {self.n_mfcc} and {self.n_mels}")
        if self.baseline_min_speech_s < 0 or self.baseline_memory_s <= 0:
            raise ValueError("baseline_min_speech_s must be >= 0 and baseline_memory_s > 0")
        if self.zscore_clip <= 0:
            raise ValueError(f"zscore_clip must be > 0, got {self.zscore_clip}")


@dataclass(frozen=True)
class ProsodyFeatures:
    """Functionals of one window or one turn of ONE speaker's audio (telephone band).

    F0 statistics are over voiced frames and are nan when nothing is voiced; energy statistics are over
    active (non-silent) frames and are nan when everything is silent.
    """

    duration_s: float
    speech_s: float                  # active (non-silent) time
    voiced_ratio: float              # voiced frames / active frames
    f0_median_hz: float
    f0_median_st: float              # semitones re 100 Hz
    f0_range_st: float               # 90th - 10th percentile
    f0_std_st: float
    f0_slope_st_s: float             # linear trend of F0 over the window
    energy_db: float                 # mean RMS level of active frames, dB re full-scale RMS
    loudness_range_db: float         # 90th - 10th percentile of active-frame levels
    speaking_rate_syl_s: float       # syllable nuclei per second of active speech
    pause_ratio: float               # share of the speech span spent in pauses >= min_pause_s
    jitter: float                    # relative period perturbation between consecutive voiced frames
    shimmer: float                   # relative peak-amplitude perturbation, same frames
    hnr_db: float                    # harmonics-to-noise ratio from autocorrelation at the period
    spectral_slope_db_khz: float     # regression slope of the log spectrum, band-limited
    alpha_ratio_db: float            # energy 1-3.4 kHz over 0.3-1 kHz
    hammarberg_db: float             # max level 0.3-2 kHz minus max level 2-3.4 kHz

    def as_dict(self) -> dict[str, float | None]:
        """JSON-safe (nan -> None), rounded to what the measurement can resolve."""
        out: dict[str, float | None] = {}
        for f in fields(self):
            value = float(getattr(self, f.name))
            out[f.name] = None if not math.isfinite(value) else round(value, 4 if abs(value) < 1 else 2)
        return out


# Names of the emotion feature vector returned by ProsodyExtractor.vector, in order. Absolute level
# (energy_db) is included so a speaker baseline can use it; the emotion model decides what it uses.
_SCALAR_VECTOR_NAMES: tuple[str, ...] = (
    "voiced_ratio",
    "f0_median_st",
    "f0_range_st",
    "f0_std_st",
    "f0_slope_st_s",
    "f0_delta_st_s",
    "energy_db",
    "loudness_range_db",
    "energy_std_db",
    "energy_delta_db_s",
    "speaking_rate_syl_s",
    "pause_ratio",
    "voiced_run_s",
    "jitter",
    "shimmer",
    "hnr_db",
    "periodicity",
    "spectral_slope_db_khz",
    "alpha_ratio_db",
    "hammarberg_db",
    "spectral_centroid_hz",
    "spectral_flux",
    "spectral_slope_std_db_khz",
    "alpha_ratio_std_db",
    "band1_share_db",               # 300-800 Hz share of the band energy, voiced frames
    "band2_share_db",               # 800-1500 Hz
    "band3_share_db",               # 1500-2500 Hz
    "band4_share_db",               # 2500-3400 Hz
    "f0_rise_st_s",                 # mean rising F0 velocity within voiced runs
    "f0_fall_st_s",                 # mean falling F0 velocity (positive number)
    "voiced_minus_unvoiced_db",     # level of voiced over unvoiced active frames
)
# Edges of the four sub-bands whose energy shares describe the spectral envelope coarsely.
_SUB_BANDS_HZ = (300.0, 800.0, 1500.0, 2500.0, 3400.0)


class ProsodyExtractor:
    """Measures :class:`ProsodyFeatures` and the emotion feature vector. Stateless; thread-safe."""

    def __init__(self, options: ProsodyOptions):
        self.options = options
        sr = options.analysis_sr_hz
        self._hop = max(1, int(round(options.hop_ms * sr / 1000.0)))
        self._frame = int(round(options.frame_ms * sr / 1000.0))
        self._n_fft = int(2 ** math.ceil(math.log2(self._frame)))
        self._sos = scipy.signal.butter(
            4, [options.band_low_hz, options.band_high_hz], btype="bandpass", fs=sr, output="sos"
        )
        self._window = scipy.signal.get_window("hann", self._frame).astype(np.float32)
        freqs = np.fft.rfftfreq(self._n_fft, d=1.0 / sr)
        self._band = (freqs >= options.band_low_hz) & (freqs <= options.band_high_hz)
        self._freqs_khz = freqs[self._band] / 1000.0
        band_f = freqs[self._band]
        self._low = (band_f < 1000.0)
        self._high = (band_f >= 1000.0)
        self._h_low = (band_f < 2000.0)
        self._h_high = (band_f >= 2000.0)
        edges = np.clip(_SUB_BANDS_HZ, options.band_low_hz, options.band_high_hz)
        self._sub_bands = [(band_f >= lo) & (band_f < hi) for lo, hi in zip(edges[:-1], edges[1:])]
        mel = librosa.filters.mel(
            sr=sr, n_fft=self._n_fft, n_mels=options.n_mels,
            fmin=options.band_low_hz, fmax=options.band_high_hz,
        )
        self._mel = mel[:, self._band].astype(np.float32)
        self._max_lag = int(math.ceil(sr / options.fmin_hz))
        mfcc_names = [f"mfcc{i}_mean" for i in range(1, options.n_mfcc + 1)]
        mfcc_names += [f"mfcc{i}_std" for i in range(1, options.n_mfcc + 1)]
        self.vector_names: tuple[str, ...] = _SCALAR_VECTOR_NAMES + tuple(mfcc_names)

    # ------------------------------------------------------------------ public API
    def warm_up(self) -> None:
        """Run once on synthetic audio so numba compiles at start-up, not on the first live call."""
        for sr in (8000, 16000):
            t = np.arange(sr, dtype=np.float32) / sr
            y = (0.3 * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32)
            self.vector(y, sr=sr)
        logger.debug("prosody extractor warmed up")

    def extract(self, y: np.ndarray, *, sr: int) -> ProsodyFeatures:
        """Prosody of one speaker's audio.

        Parameters
        ----------
        y : np.ndarray [shape=(n,)], float, mono, full scale +-1
        sr : int > 0, sampling rate of ``y`` in Hz (resampled explicitly to ``analysis_sr_hz``)

        Returns
        -------
        ProsodyFeatures
        """
        return self.vector(y, sr=sr)[0]

    def vector(self, y: np.ndarray, *, sr: int) -> tuple[ProsodyFeatures, np.ndarray]:
        """Prosody and the emotion feature vector from one analysis pass.

        Parameters
        ----------
        y : np.ndarray [shape=(n,)], float, mono
        sr : int > 0, sampling rate of ``y`` in Hz

        Returns
        -------
        features : ProsodyFeatures
        vector : np.ndarray [shape=(len(self.vector_names),)], float64; nan where undefined
        """
        x = self._prepare(y, sr=sr)
        duration_s = len(y) / float(sr)
        return self._analyse(x, duration_s=duration_s)

    # ------------------------------------------------------------------ internals
    def _prepare(self, y: np.ndarray, *, sr: int) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"prosody needs mono audio of shape (n,), got shape {y.shape}")
        if not isinstance(sr, (int, np.integer)) or sr <= 0:
            raise ValueError(f"sr must be a positive integer sample rate in Hz, got {sr!r}")
        y = y.astype(np.float32, copy=False)
        target = self.options.analysis_sr_hz
        if sr != target and len(y) > 0:
            y = resample(y, orig_sr=int(sr), target_sr=target)
        # Band-limit every input the same way, so wideband and telephone audio measure alike.
        if len(y) > 0:
            y = scipy.signal.sosfilt(self._sos, y).astype(np.float32)
        if len(y) < self._frame:
            y = np.pad(y, (0, self._frame - len(y)))
        return y

    def _analyse(self, x: np.ndarray, *, duration_s: float) -> tuple[ProsodyFeatures, np.ndarray]:
        o = self.options
        sr = o.analysis_sr_hz
        hop_s = self._hop / sr
        frames = librosa.util.frame(x, frame_length=self._frame, hop_length=self._hop)  # [frame, n]
        frames_t = np.ascontiguousarray(frames.T)                                        # [n, frame]
        n = frames_t.shape[0]

        rms = np.sqrt(np.mean(frames_t.astype(np.float64) ** 2, axis=1))
        level_db = 20.0 * np.log10(rms + _EPS)
        floor = max(o.silence_floor_db, float(level_db.max()) - o.active_range_db)
        active = level_db > floor

        f0 = librosa.yin(
            x, fmin=o.fmin_hz, fmax=o.fmax_hz, sr=sr, frame_length=self._frame,
            hop_length=self._hop, center=False,
        )[:n]
        periodicity = self._periodicity(frames_t, f0, sr=sr)
        # YIN hits its search bounds when it finds no period: those frames are not voiced.
        in_range = (f0 > o.fmin_hz * 1.02) & (f0 < o.fmax_hz * 0.98)
        voiced = active & in_range & (periodicity >= o.voicing_threshold)

        spec = np.abs(np.fft.rfft(frames_t * self._window, n=self._n_fft, axis=1)) ** 2
        band = spec[:, self._band].astype(np.float64) + _EPS                             # [n, k]

        v = {}
        n_active = int(active.sum())
        n_voiced = int(voiced.sum())
        v["voiced_ratio"] = n_voiced / n_active if n_active else 0.0

        # F0 in semitones over voiced frames, with YIN's octave jumps on band-limited speech repaired.
        st = 12.0 * np.log2(f0 / _ST_REF_HZ)
        st[voiced] = _repair_octaves(st[voiced])
        f0 = _ST_REF_HZ * 2.0 ** (st / 12.0)
        st_v = st[voiced]
        if n_voiced >= 2:
            p10, p50, p90 = np.percentile(st_v, [10, 50, 90])
            v["f0_median_st"] = float(p50)
            v["f0_range_st"] = float(p90 - p10)
            v["f0_std_st"] = float(np.std(st_v))
            t_v = np.flatnonzero(voiced) * hop_s
            v["f0_slope_st_s"] = float(np.polyfit(t_v, st_v, 1)[0]) if t_v[-1] > t_v[0] else 0.0
            f0_median_hz = float(np.median(f0[voiced]))
        else:
            for k in ("f0_median_st", "f0_range_st", "f0_std_st", "f0_slope_st_s"):
                v[k] = math.nan
            f0_median_hz = math.nan
        pairs = voiced[1:] & voiced[:-1]
        # A jump of more than _MAX_PERTURBATION_ST between 10 ms frames is a tracking error or a voicing
        # onset, not a perturbation: leave it out of jitter, shimmer and F0 velocity.
        pairs &= np.abs(np.diff(st)) < _MAX_PERTURBATION_ST
        if pairs.any():
            step = np.diff(st)[pairs] / hop_s
            v["f0_rise_st_s"] = float(np.mean(step[step > 0])) if (step > 0).any() else 0.0
            v["f0_fall_st_s"] = float(-np.mean(step[step < 0])) if (step < 0).any() else 0.0
            d_st = np.abs(np.diff(st))[pairs]
            v["f0_delta_st_s"] = float(np.mean(d_st)) / hop_s
            periods = 1.0 / f0
            d_per = np.abs(np.diff(periods))[pairs]
            v["jitter"] = float(np.mean(d_per) / np.mean(periods[voiced]))
            peak = np.max(np.abs(frames_t), axis=1).astype(np.float64) + _EPS
            v["shimmer"] = float(np.mean(np.abs(np.diff(peak))[pairs]) / np.mean(peak[voiced]))
        else:
            v["f0_delta_st_s"] = v["jitter"] = v["shimmer"] = math.nan
            v["f0_rise_st_s"] = v["f0_fall_st_s"] = math.nan
        if n_voiced:
            r = np.clip(periodicity[voiced], 1e-3, 0.999)
            v["hnr_db"] = float(np.mean(10.0 * np.log10(r / (1.0 - r))))
            v["periodicity"] = float(np.mean(periodicity[voiced]))
            v["voiced_run_s"] = float(np.mean(_run_lengths(voiced))) * hop_s
        else:
            v["hnr_db"] = v["periodicity"] = math.nan
            v["voiced_run_s"] = 0.0

        # Level dynamics over active frames.
        if n_active:
            lev = level_db[active]
            p10, p90 = np.percentile(lev, [10, 90])
            v["energy_db"] = float(np.mean(lev))
            v["loudness_range_db"] = float(p90 - p10)
            v["energy_std_db"] = float(np.std(lev))
            act_pairs = active[1:] & active[:-1]
            v["energy_delta_db_s"] = (
                float(np.mean(np.abs(np.diff(level_db))[act_pairs])) / hop_s if act_pairs.any() else 0.0
            )
            unvoiced = active & ~voiced
            v["voiced_minus_unvoiced_db"] = (
                float(np.mean(level_db[voiced]) - np.mean(level_db[unvoiced]))
                if n_voiced and unvoiced.any() else math.nan
            )
        else:
            v["energy_db"] = v["loudness_range_db"] = v["energy_std_db"] = math.nan
            v["energy_delta_db_s"] = v["voiced_minus_unvoiced_db"] = math.nan

        speech_s = n_active * hop_s
        v["speaking_rate_syl_s"] = self._syllable_rate(level_db, voiced, speech_s=speech_s)
        v["pause_ratio"] = self._pause_ratio(active)

        # Spectral balance (voiced frames carry vocal effort; fall back to active frames).
        sel = voiced if n_voiced else active
        if sel.any():
            b = band[sel]
            b_db = 10.0 * np.log10(b)
            fk = self._freqs_khz
            fc = fk - fk.mean()
            slope = (b_db - b_db.mean(axis=1, keepdims=True)) @ fc / float(fc @ fc)
            v["spectral_slope_db_khz"] = float(np.mean(slope))
            v["spectral_slope_std_db_khz"] = float(np.std(slope))
            alpha = 10.0 * np.log10(b[:, self._high].sum(axis=1) / b[:, self._low].sum(axis=1))
            v["alpha_ratio_db"] = float(np.mean(alpha))
            v["alpha_ratio_std_db"] = float(np.std(alpha))
            total = b.sum(axis=1)
            for i, m in enumerate(self._sub_bands, start=1):
                v[f"band{i}_share_db"] = (
                    float(np.mean(10.0 * np.log10(b[:, m].sum(axis=1) / total))) if m.any() else math.nan
                )
            v["hammarberg_db"] = float(np.mean(
                b_db[:, self._h_low].max(axis=1) - b_db[:, self._h_high].max(axis=1)
            ))
            v["spectral_centroid_hz"] = float(np.mean((b @ (fk * 1000.0)) / b.sum(axis=1)))
        else:
            for k in ("spectral_slope_db_khz", "alpha_ratio_db", "hammarberg_db", "spectral_centroid_hz",
                      "spectral_slope_std_db_khz", "alpha_ratio_std_db", "band1_share_db", "band2_share_db",
                      "band3_share_db", "band4_share_db"):
                v[k] = math.nan
        if n_active >= 2:
            # Flux of the level-normalised spectrum: how fast articulation changes, independent of gain.
            norm = band / band.sum(axis=1, keepdims=True)
            flux = np.sqrt(np.sum(np.diff(norm, axis=0) ** 2, axis=1))
            v["spectral_flux"] = float(np.mean(flux[act_pairs])) if act_pairs.any() else math.nan
        else:
            v["spectral_flux"] = math.nan

        # MFCCs of the band-limited mel spectrum; c0 (overall level) is left out as gain-dependent.
        if n_active:
            mel_db = 10.0 * np.log10(band[active] @ self._mel.T.astype(np.float64) + _EPS)   # [m, mels]
            cep = scipy.fft.dct(mel_db, type=2, norm="ortho", axis=1)[:, 1:o.n_mfcc + 1]
            mfcc_mean = cep.mean(axis=0)
            mfcc_std = cep.std(axis=0)
        else:
            mfcc_mean = np.full(o.n_mfcc, np.nan)
            mfcc_std = np.full(o.n_mfcc, np.nan)

        vec = np.concatenate([
            np.array([v[k] for k in _SCALAR_VECTOR_NAMES], dtype=np.float64), mfcc_mean, mfcc_std,
        ])
        features = ProsodyFeatures(
            duration_s=float(duration_s),
            speech_s=float(speech_s),
            voiced_ratio=float(v["voiced_ratio"]),
            f0_median_hz=f0_median_hz,
            f0_median_st=v["f0_median_st"],
            f0_range_st=v["f0_range_st"],
            f0_std_st=v["f0_std_st"],
            f0_slope_st_s=v["f0_slope_st_s"],
            energy_db=v["energy_db"],
            loudness_range_db=v["loudness_range_db"],
            speaking_rate_syl_s=v["speaking_rate_syl_s"],
            pause_ratio=v["pause_ratio"],
            jitter=v["jitter"],
            shimmer=v["shimmer"],
            hnr_db=v["hnr_db"],
            spectral_slope_db_khz=v["spectral_slope_db_khz"],
            alpha_ratio_db=v["alpha_ratio_db"],
            hammarberg_db=v["hammarberg_db"],
        )
        return features, vec

    def _periodicity(self, frames_t: np.ndarray, f0: np.ndarray, *, sr: int) -> np.ndarray:
        """Normalised autocorrelation of each frame at its YIN period, in [-1, 1]. Shape [n]."""
        n, length = frames_t.shape
        lag = np.clip(np.rint(sr / f0).astype(np.int64), 1, self._max_lag)
        width = length - self._max_lag
        idx = np.arange(width)
        a = frames_t[:, :width].astype(np.float64)
        b = np.take_along_axis(frames_t, lag[:, None] + idx[None, :], axis=1).astype(np.float64)
        num = np.sum(a * b, axis=1)
        den = np.sqrt(np.sum(a * a, axis=1) * np.sum(b * b, axis=1)) + _EPS
        return num / den

    def _syllable_rate(self, level_db: np.ndarray, voiced: np.ndarray, *, speech_s: float) -> float:
        """Syllable nuclei (prominent voiced level peaks, de Jong & Wempe style) per second of speech."""
        o = self.options
        if speech_s <= 0.0:
            return 0.0
        smooth = scipy.signal.savgol_filter(level_db, 5, 2) if len(level_db) >= 5 else level_db
        gap = max(1, int(round(o.min_syllable_gap_s * 1000.0 / o.hop_ms)))
        # Pad with the floor so a syllable cut by the window edge still counts as a peak.
        floor = float(smooth.min())
        padded = np.concatenate([[floor], smooth, [floor]])
        peaks, _ = scipy.signal.find_peaks(padded, prominence=o.syllable_prominence_db, distance=gap)
        return float(np.count_nonzero(voiced[peaks - 1])) / speech_s

    def _pause_ratio(self, active: np.ndarray) -> float:
        """Share of the span from first to last active frame spent in silences >= min_pause_s."""
        idx = np.flatnonzero(active)
        if len(idx) < 2:
            return 0.0
        span = active[idx[0]: idx[-1] + 1]
        min_frames = max(1, int(round(self.options.min_pause_s * 1000.0 / self.options.hop_ms)))
        gaps = _run_lengths(~span)
        return float(gaps[gaps >= min_frames].sum()) / len(span)


def _repair_octaves(st: np.ndarray) -> np.ndarray:
    """Fold each voiced F0 value (semitones) into the octave of its local median, then despike.

    YIN on 300-3400 Hz speech (the fundamental removed) often locks onto a harmonic for a few frames;
    real intonation moves smoothly, so a value a whole octave from the median of its ~0.5 s
    neighbourhood is a tracking error (as is a 3rd or 4th harmonic).

    Parameters
    ----------
    st : np.ndarray [shape=(n,)], F0 of consecutive voiced frames in semitones

    Returns
    -------
    np.ndarray [shape=(n,)]
    """
    if len(st) < 3:
        return st
    ref = scipy.ndimage.median_filter(st, size=min(_OCTAVE_CONTEXT_FRAMES, len(st)), mode="nearest")
    # Candidate corrections: the frame locked onto the 2nd-4th harmonic or a subharmonic.
    shifts = 12.0 * np.log2(np.array([1.0, 0.5, 1 / 3, 0.25, 2.0, 3.0, 4.0]))
    cand = st[:, None] + shifts[None, :]
    best = cand[np.arange(len(st)), np.argmin(np.abs(cand - ref[:, None]), axis=1)]
    # Real intonation can move well away from the local median; only fold what is implausibly far.
    folded = np.where(np.abs(st - ref) > _FOLD_BEYOND_ST, best, st)
    return scipy.ndimage.median_filter(folded, size=min(5, len(st)), mode="nearest")


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a boolean array (empty when there are none)."""
    m = np.concatenate([[False], mask.astype(bool), [False]])
    d = np.diff(m.astype(np.int8))
    return np.flatnonzero(d == -1) - np.flatnonzero(d == 1)
