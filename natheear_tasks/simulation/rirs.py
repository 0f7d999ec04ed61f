"""Room impulse responses of a scene for a binaural head or a first-order Ambisonics
microphone.

pyroomacoustics computes the room's acoustics for an omnidirectional point at the listener:
the image sources up to a low order (exact arrival times, directions and wall damping) and
a ray-traced energy histogram for everything later. We then render both for the receiver:

* early part: every image source is a plane wave from its own direction, delayed with a
  windowed-sinc fractional delay, damped by its walls, by air absorption and by 1/r (the
  scale pyroomacoustics' ray tracer matches), and filtered by the receiver's response for
  that direction (the HRIR of the nearest measured direction; the SN3D gains ``W = 1,
  Y = sin az cos el, Z = sin el, X = cos az cos el``);
* late tail: one Poisson sequence of reflections (density ``4 pi c^3 t^2 / V``) with random
  signs and directions uniform on the sphere, rendered through the same receiver responses,
  then shaped in the short-time Fourier domain by the square root of the ray-traced energy
  envelope and air absorption. The same reflections reach every channel, each from one
  direction, so the channels are as coherent as in a real diffuse field (binaural: about
  0.9 at 125 Hz falling to 0 above 1 kHz; Ambisonics: W and the dipoles uncorrelated), not
  independent draws per channel.

The wall absorption is fitted per room so that the ray tracer's mid-frequency (500 Hz-1 kHz)
RT60 equals the scene's target (:func:`fit_absorption`).

Every scene is scaled by one factor so that its source RIR has unit energy per channel on
average: a dry clip keeps its level through the source RIR.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyroomacoustics as pra
import scipy.fft
from scipy.signal import ShortTimeFFT

from natheear_tasks.pool import run_jobs
from natheear_tasks.seeding import derive_seed, generator
from natheear_tasks.simulation import rooms
from natheear_tasks.simulation.hrtf import HrtfSet, fibonacci_sphere
from natheear_tasks.simulation.rirbank import RirBank, RirBankWriter
from natheear_tasks.simulation.rooms import SPEED_OF_SOUND, Scene, sabine_absorption

FRACTIONAL_DELAY_HALF_WIDTH = 32  # taps each side of a windowed-sinc fractional delay
TAIL_MAX_DENSITY = 10000.0  # reflections per second, as pyroomacoustics
TAIL_DIRECTIONS = 64  # direction groups for receivers with impulse responses (HRIRs)
MID_AIR_ABSORPTION = 0.0008  # energy absorption per metre of air at 500 Hz-1 kHz
RT60_TOLERANCE = 0.03  # the fitted absorption gives the target RT60 within 3 % (ray traced)
ABSORPTION_RANGE = (0.005, 0.99)


@dataclass(frozen=True)
class SimulationSettings:
    """How scenes are simulated (recorded with each RIR bank).

    Attributes:
        max_order: image sources up to this reflection order; ray tracing after it.
        n_rays: rays per source.
        receiver_radius: radius of the ray tracer's receiving sphere, metres.
        hist_bin: ray-tracing energy histogram bin, seconds.
        air_absorption: model air absorption (pyroomacoustics' coefficients at 20 C, 50 %).
        max_seconds: longest RIR kept (RIRs end at the last direct arrival + RT60).
    """

    max_order: int = 3
    n_rays: int = 10000
    receiver_radius: float = 0.5
    hist_bin: float = 0.004
    air_absorption: bool = True
    max_seconds: float = 2.0

    def record(self) -> dict:
        return asdict(self)


class AmbisonicsReceiver:
    """First-order Ambisonics microphone, AmbiX: ACN channel order W, Y, Z, X with SN3D."""

    channels = ("W", "Y", "Z", "X")

    def responses(self, directions: np.ndarray) -> np.ndarray:
        """``(N, 4, 1)`` encoding gains for unit vectors ``(N, 3)`` (listener frame)."""
        x, y, z = directions.T
        return np.stack([np.ones_like(x), y, z, x], axis=1)[:, :, None]


class BinauralReceiver:
    """A head with an HRTF set (nearest measured direction); channels left, right."""

    channels = ("left", "right")

    def __init__(self, hrtf: HrtfSet, sample_rate: int) -> None:
        self.hrtf = hrtf.resampled(sample_rate)

    def responses(self, directions: np.ndarray) -> np.ndarray:
        """``(N, 2, taps)`` HRIRs for unit vectors ``(N, 3)`` (listener frame)."""
        return self.hrtf.hrirs[self.hrtf.nearest(directions)]


Receiver = AmbisonicsReceiver | BinauralReceiver


def _listener_frame(vectors: np.ndarray, yaw_deg: float) -> np.ndarray:
    """Rotate room-frame vectors ``(N, 3)`` into the frame of a listener facing ``yaw``."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    x, y, z = vectors.T
    return np.stack([c * x + s * y, -s * x + c * y, z], axis=1)


def _band_gains(freqs: np.ndarray, centers: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Interpolate per-octave-band ``values (..., bands)`` over ``freqs`` (log frequency)."""
    if values.shape[-1] == 1:
        return np.repeat(values, len(freqs), axis=-1)
    logf = np.log2(np.maximum(freqs, centers[0]))
    flat = values.reshape(-1, values.shape[-1])
    out = np.stack([np.interp(logf, np.log2(centers[: len(v)]), v) for v in flat])
    return out.reshape(*values.shape[:-1], len(freqs))


def render_images(
    offsets: np.ndarray,
    damping: np.ndarray,
    yaw: float,
    receiver: Receiver,
    sample_rate: int,
    length: int,
    air: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Early reflections: image sources as plane waves through the receiver's responses.

    Args:
        offsets: ``(I, 3)`` image positions minus the listener position, room frame.
        damping: ``(bands, I)`` wall amplitude damping per octave band (or ``(1, I)``).
        yaw: listener yaw, degrees.
        receiver: directional responses.
        sample_rate: Hz.
        length: samples to return.
        air: ``(centers (bands,), coefficients (bands,))`` energy absorption per metre, or
            None.
    Returns:
        ``(C, length)``.
    """
    w = FRACTIONAL_DELAY_HALF_WIDTH
    distance = np.linalg.norm(offsets, axis=1)
    directions = _listener_frame(offsets / distance[:, None], yaw)
    delay = distance / SPEED_OF_SOUND * sample_rate
    start = np.floor(delay).astype(np.int64)
    k = np.arange(-w, w + 1)[None, :] - (delay - start)[:, None]
    fractional = np.sinc(k) * 0.5 * (1 + np.cos(np.pi * k / (w + 1)))  # (I, 2w + 1)
    responses = receiver.responses(directions)  # (I, C, taps)
    size = scipy.fft.next_fast_len(2 * w + responses.shape[-1] + 64, real=True)
    freqs = np.fft.rfftfreq(size, 1 / sample_rate)
    centers = air[0] if air is not None else np.array([1000.0])
    gain = _band_gains(freqs, centers, damping.T)  # (I, F)
    if air is not None:
        coefficients = _band_gains(freqs, air[0], air[1][None])[0]
        gain = gain * np.exp(-0.5 * coefficients[None, :] * distance[:, None])
    gain = gain / distance[:, None]  # pyroomacoustics' scale: the ray tracer matches 1/r
    spectrum = scipy.fft.rfft(fractional, size)[:, None, :] * scipy.fft.rfft(responses, size)
    segments = scipy.fft.irfft(spectrum * gain[:, None, :], size)  # (I, C, size)
    index = (start[:, None] + np.arange(size)[None, :]).ravel()  # shifted by w: see below
    total = length + w + size + int(start.max(initial=0))
    out = np.stack(
        [
            np.bincount(index, segments[:, c].ravel(), minlength=total)
            for c in range(len(receiver.channels))
        ]
    )
    return out[:, w : w + length]


def render_tail(
    envelope: np.ndarray,
    hist_bin: float,
    onset: float,
    volume: float,
    receiver: Receiver,
    sample_rate: int,
    length: int,
    air: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """Late reverberation, coherent across channels as a diffuse field.

    Args:
        envelope: ``(bands, bins)`` ray-traced energy per histogram bin (omni receiver),
            one row (broadband) or one per octave band of ``air[0]``.
        hist_bin: histogram bin length, seconds.
        onset: first reflection time (the direct sound's arrival), seconds.
        volume: room volume, cubic metres.
        receiver: directional responses.
        sample_rate: Hz.
        length: samples to return.
        air: ``(centers, coefficients)`` as in :func:`render_images`, or None.
        rng: the reflections' random generator.
    Returns:
        ``(C, length)``.
    """
    bin_samples = int(round(hist_bin * sample_rate))
    duration = length / sample_rate
    # Poisson reflection times with density min(4 pi c^3 t^2 / V, max): thin a dense process.
    count = rng.poisson(TAIL_MAX_DENSITY * max(duration - onset, 0.0))
    times = np.sort(rng.uniform(onset, duration, count))
    density = np.minimum(4 * np.pi * SPEED_OF_SOUND**3 * times**2 / volume, TAIL_MAX_DENSITY)
    times = times[rng.uniform(size=count) * TAIL_MAX_DENSITY < density]
    index = np.minimum((times * sample_rate).astype(np.int64), length - 1)
    signs = rng.choice(np.array([-1.0, 1.0]), size=len(index))
    directions = rng.standard_normal((len(index), 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    # unit energy per histogram bin: weight each reflection by its local density
    local = np.searchsorted(index, index + bin_samples) - np.searchsorted(
        index, index - bin_samples
    )
    weights = signs * np.sqrt(2.0 / np.maximum(local, 1))
    channels = len(receiver.channels)
    if receiver.responses(np.array([[1.0, 0.0, 0.0]])).shape[-1] == 1:  # gains: exact directions
        responses = receiver.responses(directions)[:, :, 0]  # (N, C)
        sequence = np.stack(
            [
                np.bincount(index, weights * responses[:, c], minlength=length)
                for c in range(channels)
            ]
        )
    else:
        grid = fibonacci_sphere(TAIL_DIRECTIONS)
        group = np.argmax(directions @ grid.T, axis=1)
        responses = receiver.responses(grid)  # (G, C, taps)
        groups = np.zeros((TAIL_DIRECTIONS, length))
        np.add.at(groups, (group, index), weights)
        size = scipy.fft.next_fast_len(length + responses.shape[-1] - 1, real=True)
        spectrum = np.einsum("gf,gcf->cf", np.fft.rfft(groups, size), np.fft.rfft(responses, size))
        sequence = np.fft.irfft(spectrum, size)[:, :length]
    return _shape_tail(sequence, envelope, bin_samples, sample_rate, air)


def _shape_tail(
    sequence: np.ndarray,
    envelope: np.ndarray,
    bin_samples: int,
    sample_rate: int,
    air: tuple[np.ndarray, np.ndarray] | None,
) -> np.ndarray:
    """Multiply ``sequence (C, T)`` by ``sqrt(envelope)`` and air absorption, per STFT bin."""
    stft = ShortTimeFFT(np.hanning(2 * bin_samples), bin_samples // 2, sample_rate)
    spec = stft.stft(sequence)  # (C, F, frames)
    t = stft.t(sequence.shape[-1])
    centers_bins = (np.arange(envelope.shape[1]) + 0.5) * bin_samples / sample_rate
    energy = np.stack(
        [np.interp(t, centers_bins, band, left=band[0], right=0.0) for band in envelope]
    )  # (bands, frames)
    centers = air[0] if air is not None else np.array([1000.0])
    gain = np.sqrt(np.maximum(_band_gains(stft.f, centers, energy.T).T, 0.0))  # (F, frames)
    if air is not None:
        coefficients = _band_gains(stft.f, air[0], air[1][None])[0]
        gain = gain * np.exp(-0.5 * coefficients[:, None] * SPEED_OF_SOUND * np.maximum(t, 0))
    return stft.istft(spec * gain, k1=sequence.shape[-1])


def decay_rt60(energy: np.ndarray, step: float) -> float:
    """RT60 from an energy decay (Schroeder integration, line fitted from -5 to -25 dB).

    Args:
        energy: ``(T,)`` energy per time step (squared samples or histogram bins).
        step: seconds per step.
    """
    edc = np.cumsum(energy[::-1])[::-1]
    edc_db = 10 * np.log10(np.maximum(edc / edc[0], 1e-30))
    fit = (edc_db <= -5) & (edc_db >= -25)
    if fit.sum() < 3:
        return float("nan")
    slope = np.polyfit(np.nonzero(fit)[0] * step, edc_db[fit], 1)[0]
    return float(-60.0 / slope)


def _room(
    scene: Scene,
    absorption: float,
    sample_rate: int,
    settings: SimulationSettings,
    max_order: int,
    seconds: float,
    positions: list,
) -> pra.ShoeBox:
    room = pra.ShoeBox(
        np.array(scene.room_size),
        fs=sample_rate,
        materials=pra.Material(float(absorption)),
        max_order=max_order,
        ray_tracing=True,
        air_absorption=settings.air_absorption,
        use_rand_ism=False,
    )
    room.set_ray_tracing(
        n_rays=settings.n_rays,
        receiver_radius=settings.receiver_radius,
        energy_thres=1e-7,
        time_thres=seconds,
        hist_bin_size=settings.hist_bin,
    )
    for p in positions:
        room.add_source(list(p))
    room.add_microphone(np.array(scene.listener_position))
    return room


def fit_absorption(scene: Scene, settings: SimulationSettings) -> tuple[float, float]:
    """Wall absorption whose ray-traced mid-frequency RT60 is the scene's target.

    Sabine's formula is a first guess (it is off by up to 50 % in flat or long rooms); the
    ray tracer's energy decay (with mid-frequency air absorption) then corrects it through
    Eyring's law, ``-ln(1 - a)`` proportional to ``1 / RT60``, until within 3 %.
    Call with pyroomacoustics' generators seeded for a reproducible result.

    Returns:
        ``(absorption, ray-traced RT60 in seconds)``.
    """
    target = scene.rt60
    absorption = float(np.clip(sabine_absorption(scene.room_size, target), *ABSORPTION_RANGE))
    measured = float("nan")
    for _ in range(6):
        room = _room(scene, absorption, 8000, settings, 0, 2.5 * target, [scene.source.position])
        room.ray_tracing()
        energy = np.asarray(room.rt_histograms[0][0][0], dtype=np.float64).sum(axis=0)
        t = np.arange(len(energy)) * room.rt_args["hist_bin_size"]
        energy = energy * np.exp(-MID_AIR_ABSORPTION * SPEED_OF_SOUND * t)
        measured = decay_rt60(energy, room.rt_args["hist_bin_size"])
        if not np.isfinite(measured) or abs(measured / target - 1) <= RT60_TOLERANCE:
            break
        attenuation = -math.log(1 - absorption) * measured / target
        absorption = float(np.clip(1 - math.exp(-attenuation), *ABSORPTION_RANGE))
    return absorption, measured


def simulate(
    scene: Scene,
    receiver: Receiver,
    sample_rate: int,
    settings: SimulationSettings,
    seed: int,
) -> tuple[np.ndarray, dict]:
    """RIRs of a scene.

    ``seed`` fixes the ray tracer and the tail's reflections: the same arguments give the
    same array.

    Returns:
        ``rirs (1 + K, C, L)`` float32 (row 0 the source, rows 1..K the noises) and
        ``{"absorption": ..., "rt60_ray_traced": ...}`` (the fitted wall absorption and the
        ray tracer's mid-frequency RT60 with it).
    """
    listener = np.array(scene.listener_position)
    positions = [scene.source.position] + [n.position for n in scene.noises]
    rng = np.random.default_rng(seed)
    pra.random.seed(numpy=int(rng.integers(2**63)), libroom=int(rng.integers(2**63)))
    absorption, rt60 = fit_absorption(scene, settings)
    last = max(np.linalg.norm(np.array(p) - listener) for p in positions) / SPEED_OF_SOUND
    seconds = min(settings.max_seconds, last + 1.2 * scene.rt60)
    room = _room(scene, absorption, sample_rate, settings, settings.max_order, seconds, positions)
    room.image_source_model()
    room.ray_tracing()
    length = int(math.ceil(seconds * sample_rate))
    air = None
    if settings.air_absorption:
        air = (np.asarray(room.octave_bands.centers), np.asarray(room.air_absorption))
    rows = []
    for s, source in enumerate(room.sources):
        visible = np.asarray(room.visibility[s][0], dtype=bool)
        early = render_images(
            (source.images[:, visible] - listener[:, None]).T,
            np.asarray(source.damping)[:, visible],
            scene.listener_yaw,
            receiver,
            sample_rate,
            length,
            air,
        )
        onset = np.linalg.norm(np.array(positions[s]) - listener) / SPEED_OF_SOUND
        tail = render_tail(
            np.asarray(room.rt_histograms[0][s][0], dtype=np.float64),
            room.rt_args["hist_bin_size"],
            onset,
            float(np.prod(scene.room_size)),
            receiver,
            sample_rate,
            length,
            air,
            rng,
        )
        rows.append(early + tail)
    rirs = np.stack(rows)
    scale = 1.0 / math.sqrt(float(np.mean(np.sum(rirs[0] ** 2, axis=-1))))
    info = {"absorption": round(absorption, 6), "rt60_ray_traced": round(rt60, 4)}
    return (rirs * scale).astype(np.float32), info


def make_receiver(format: str, sample_rate: int, hrtf: HrtfSet | None) -> Receiver:
    """The receiver of a bank ``format`` ("binaural" needs ``hrtf``)."""
    if format == "ambisonics":
        return AmbisonicsReceiver()
    if hrtf is None:
        raise ValueError("a binaural receiver needs an HRTF set")
    return BinauralReceiver(hrtf, sample_rate)


def bank_generator(
    format: str, seed: int, settings: SimulationSettings, hrtf: HrtfSet | None
) -> dict:
    """The description of how a bank's scenes are made (stored in ``bank.json``)."""
    description = {
        "seed": int(seed),
        "simulation": settings.record(),
        "scenes": rooms.sampling_ranges(),
        "receiver": "AmbiX first-order Ambisonics (ACN W, Y, Z, X; SN3D)",
    }
    if format == "binaural":
        description["receiver"] = "binaural"
        description["hrtf"] = {"name": hrtf.name, "digest": hrtf.digest}
    return description


_BANK_WORKER: dict = {}


def _start_bank_worker(
    writer: RirBankWriter, seed: int, settings: SimulationSettings, hrtf: HrtfSet | None
) -> None:
    info = writer.info
    _BANK_WORKER.update(
        writer=writer,
        seed=seed,
        settings=settings,
        receiver=make_receiver(info["format"], info["sample_rate"], hrtf),
    )


def _make_bank_scene(index: int) -> int:
    w = _BANK_WORKER
    scene = rooms.sample_scene(generator(w["seed"], "scene", index))
    rirs, info = simulate(
        scene,
        w["receiver"],
        w["writer"].info["sample_rate"],
        w["settings"],
        derive_seed(w["seed"], "rirs", index),
    )
    record = scene.record()
    record["room"].update(info)
    w["writer"].write_scene(index, rirs, record)
    return index


def build_bank(
    path: str | Path,
    format: str,
    sample_rate: int,
    count: int,
    seed: int = 0,
    hrtf: HrtfSet | None = None,
    settings: SimulationSettings | None = None,
    workers: int = 1,
) -> RirBank:
    """Simulate ``count`` random scenes into a bank at ``path`` (resumes an unfinished one).

    Scene ``i`` depends only on ``seed`` and ``i``: the bank is the same whatever the number
    of workers or interruptions.
    """
    settings = settings or SimulationSettings()
    writer = RirBankWriter(
        path, format, sample_rate, count, bank_generator(format, seed, settings, hrtf)
    )
    if writer.is_complete():
        return RirBank.open(path)
    writer.start()
    todo = [i for i in range(count) if not writer.has_scene(i)]
    for _ in run_jobs(
        _make_bank_scene,
        todo,
        workers,
        initializer=_start_bank_worker,
        initargs=(writer, seed, settings, hrtf),
        desc=f"simulating {format} RIRs",
        unit="scene",
    ):
        pass
    return writer.finalize()
