"""Physics of the simulated scenes: directions, interaural cues, reverberation time,
diffuse-field coherence, determinism."""

import numpy as np
import pytest
from scipy.signal import butter, csd, sosfiltfilt, stft, welch

from natheear_tasks.simulation import hrtf, rirs
from natheear_tasks.simulation.rooms import Scene, place, sample_scene

RATE = 16000
FAST = rirs.SimulationSettings(n_rays=4000)


def _scene(size, rt60, listener, yaw, source, noises=()) -> Scene:
    listener = np.array(listener, dtype=float)
    return Scene(
        room_size=tuple(size),
        rt60=rt60,
        listener_position=tuple(listener),
        listener_yaw=yaw,
        source=place(listener, yaw, np.array(source, dtype=float)),
        noise_kind="localized",
        noises=tuple(place(listener, yaw, np.array(n, dtype=float)) for n in noises),
    )


def _intensity_direction(foa: np.ndarray) -> np.ndarray:
    """Unit vector of the summed active intensity of AmbiX (W, Y, Z, X) audio."""
    _, _, spec = stft(foa, RATE, nperseg=512)
    intensity = np.real(np.conj(spec[0])[None] * spec[[3, 1, 2]]).sum(axis=(1, 2))
    return intensity / np.linalg.norm(intensity)


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(
        np.degrees(np.arccos(np.clip(a @ b / np.linalg.norm(a) / np.linalg.norm(b), -1, 1)))
    )


def _render(rir: np.ndarray, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(int(seconds * RATE))
    return np.stack([np.convolve(noise, h)[: len(noise)] for h in rir])


@pytest.mark.parametrize(
    "yaw,source",
    [(0.0, (5.0, 4.0, 1.5)), (37.0, (2.0, 5.5, 2.6)), (200.0, (4.4, 1.1, 0.6)), (300, (1, 1, 2))],
)
def test_anechoic_ambisonics_intensity_points_at_the_label(yaw, source):
    listener = np.array([3.0, 3.0, 1.5])
    scene = _scene((8, 7, 3), 0.5, listener, yaw, source)
    offset = np.array(scene.source.position) - listener
    rir = rirs.render_images(
        offset[None], np.ones((1, 1)), yaw, rirs.AmbisonicsReceiver(), RATE, 2048, None
    )
    error = _angle(_intensity_direction(_render(rir)), scene.source.direction)
    assert error < 2.0, error
    # the label's azimuth/elevation agree with its unit vector
    az, el = np.radians(scene.source.azimuth), np.radians(scene.source.elevation)
    np.testing.assert_allclose(
        scene.source.direction, [np.cos(az) * np.cos(el), np.sin(az) * np.cos(el), np.sin(el)]
    )


def test_reverberant_ambisonics_intensity_stays_within_the_stated_bound():
    """Stated bound (README): broadband intensity over a whole reverberant clip is biased
    toward reflections; over 60 random scenes the error had median 10.5, 90th percentile 23
    and maximum 38 degrees. Here: every error below 40 degrees, the mean below 20."""
    errors = []
    for seed in range(4):
        scene = sample_scene(np.random.default_rng(seed + 1000))
        rir, _ = rirs.simulate(scene, rirs.AmbisonicsReceiver(), RATE, FAST, seed)
        errors.append(_angle(_intensity_direction(_render(rir[0])), scene.source.direction))
    assert max(errors) < 40 and np.mean(errors) < 20, errors


def _ild_itd(binaural: np.ndarray) -> tuple[float, float]:
    """ILD (dB, left over right) and ITD (ms, positive when the left ear leads)."""
    left, right = binaural
    ild = 10 * np.log10(np.sum(left**2) / np.sum(right**2))
    sos = butter(4, 1500, "lowpass", fs=RATE, output="sos")
    lo_l, lo_r = sosfiltfilt(sos, left), sosfiltfilt(sos, right)
    lags = np.arange(-RATE // 1000, RATE // 1000 + 1)
    xcorr = [
        np.dot(lo_l[max(0, -k) : len(lo_l) - max(0, k)], lo_r[max(0, k) : len(lo_r) - max(0, -k)])
        for k in lags
    ]
    return float(ild), float(lags[int(np.argmax(xcorr))] / RATE * 1000)


@pytest.mark.parametrize("head", ["kemar", "spherical-head"])
def test_binaural_level_and_time_differences_point_to_the_source_side(head):
    hrtf_set = hrtf.load_kemar() if head == "kemar" else hrtf.spherical_head(48000)
    receiver = rirs.BinauralReceiver(hrtf_set, RATE)
    listener = np.array([3.0, 3.0, 1.5])
    for yaw, side in ((0.0, 1), (0.0, -1), (90.0, 1), (90.0, -1)):
        # a source 2.5 m away, 70 degrees to the listener's left (side 1) or right (-1)
        az = np.radians(yaw + side * 70)
        source = listener + 2.5 * np.array([np.cos(az), np.sin(az), 0.0])
        scene = _scene((7, 6, 3), 0.4, listener, yaw, source)
        assert np.sign(scene.source.azimuth) == side
        offset = np.array(scene.source.position) - listener
        anechoic = rirs.render_images(
            offset[None], np.ones((1, 1)), yaw, receiver, RATE, 2048, None
        )
        ild, itd = _ild_itd(_render(anechoic))
        assert side * ild > 3 and side * ild < 25, (head, ild)
        assert 0.3 < side * itd < 0.9, (head, itd)
    # reverberant: the cues keep their sign
    rir, _ = rirs.simulate(scene, receiver, RATE, FAST, seed=1)
    ild, itd = _ild_itd(_render(rir[0]))
    assert -ild > 1 and 0.2 < -itd < 0.9, (ild, itd)


def _band_rt60(rir: np.ndarray, center: float) -> float:
    sos = butter(4, [center / 2**0.5, center * 2**0.5], "bandpass", fs=RATE, output="sos")
    return rirs.decay_rt60(sosfiltfilt(sos, rir) ** 2, 1 / RATE)


@pytest.mark.parametrize(
    "size,rt60", [((4.0, 3.5, 2.7), 0.3), ((7.0, 5.0, 3.0), 0.6), ((12.0, 5.0, 3.2), 0.9)]
)
def test_measured_rt60_is_within_15_percent_of_the_target(size, rt60):
    listener = (size[0] * 0.35, size[1] * 0.4, 1.5)
    source = (size[0] * 0.7, size[1] * 0.75, 1.7)
    scene = _scene(size, rt60, listener, 0.0, source)
    rir, info = rirs.simulate(scene, rirs.AmbisonicsReceiver(), RATE, FAST, seed=2)
    measured = np.mean([_band_rt60(rir[0, 0], 500), _band_rt60(rir[0, 0], 1000)])
    assert abs(measured / rt60 - 1) < 0.15, (measured, rt60, info)


def _coherence(a: np.ndarray, b: np.ndarray, center: float) -> float:
    f, cross = csd(a, b, RATE, nperseg=1024)
    _, paa = welch(a, RATE, nperseg=1024)
    _, pbb = welch(b, RATE, nperseg=1024)
    band = (f >= center / 2**0.5) & (f < center * 2**0.5)
    return float(np.mean(np.real(cross[band]) / np.sqrt(paa[band] * pbb[band])))


def _tail(scene: Scene, receiver) -> np.ndarray:
    rir, _ = rirs.simulate(scene, receiver, RATE, FAST, seed=3)
    start = int((scene.source.distance / 343 + 0.08) * RATE)  # past the early reflections
    return rir[0, :, start:]


TAIL_SCENE = _scene((5.0, 4.5, 2.9), 0.9, (1.5, 1.7, 1.5), 20.0, (3.8, 3.0, 1.6))


def test_binaural_tail_has_diffuse_field_interaural_coherence():
    """A diffuse field at a head: coherent at low frequencies, incoherent above ~1 kHz
    (independent draws per ear would give about 0 everywhere)."""
    left, right = _tail(TAIL_SCENE, rirs.BinauralReceiver(hrtf.load_kemar(), RATE))
    assert _coherence(left, right, 125) > 0.75
    assert abs(_coherence(left, right, 2000)) < 0.2 and abs(_coherence(left, right, 4000)) < 0.2


def test_ambisonics_tail_is_an_isotropic_diffuse_field():
    """In an isotropic diffuse field W is uncorrelated with the SN3D dipoles and each
    dipole carries a third of W's energy."""
    tail = _tail(TAIL_SCENE, rirs.AmbisonicsReceiver())
    energy = np.sum(tail**2, axis=1)
    np.testing.assert_allclose(energy[1:] / energy[0], 1 / 3, atol=0.08)
    for c in (1, 2, 3):
        correlation = np.sum(tail[0] * tail[c]) / np.sqrt(energy[0] * energy[c])
        assert abs(correlation) < 0.1


def test_simulation_is_deterministic_and_scaled():
    scene = sample_scene(np.random.default_rng(7))
    receiver = rirs.AmbisonicsReceiver()
    first, info = rirs.simulate(scene, receiver, RATE, FAST, seed=11)
    second, _ = rirs.simulate(scene, receiver, RATE, FAST, seed=11)
    other, _ = rirs.simulate(scene, receiver, RATE, FAST, seed=12)
    assert first.dtype == np.float32 and first.shape[:2] == (1 + len(scene.noises), 4)
    assert np.array_equal(first, second) and not np.array_equal(first, other)
    np.testing.assert_allclose(
        np.mean(np.sum(first[0].astype(float) ** 2, axis=-1)), 1.0, rtol=1e-4
    )
    assert 0 < info["absorption"] < 1 and abs(info["rt60_ray_traced"] / scene.rt60 - 1) < 0.1


def test_sampled_scenes_respect_the_ranges():
    for seed in range(30):
        scene = sample_scene(np.random.default_rng(seed))
        size = np.array(scene.room_size)
        assert 3 <= size[0] <= 20 and 3 <= size[1] <= 20 and 2.5 <= size[2] <= 8
        assert 0.2 <= scene.rt60 <= 1.5
        assert scene.listener_position[2] == 1.5 and 0 <= scene.listener_yaw < 360
        assert 1.5 <= scene.source.distance <= 5.0
        for p in (scene.source, *scene.noises):
            assert np.all(np.array(p.position) >= 0.3) and np.all(
                np.array(p.position) <= size - 0.3
            )
        assert (scene.noise_kind, len(scene.noises)) in {("localized", 1)} | {
            ("diffuse", k) for k in (3, 4, 5)
        }
