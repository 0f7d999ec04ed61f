"""Scene geometry: a random shoebox room, a listener (or microphone) in it, a source and
noise sources, and their directions in the listener's frame.

Frames: the room frame has its origin in a corner, z up. The listener frame has x forward
(the head's facing direction, yaw counter-clockwise from room +x), y left, z up; azimuth is
counter-clockwise from the front, elevation up from the horizontal plane, in degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Sampling ranges (documented in the README).
ROOM_LENGTH = (3.0, 20.0)  # floor sides, metres, log-uniform
ROOM_HEIGHT = (2.5, 8.0)  # metres, grows with the floor area
RT60 = (0.2, 1.5)  # seconds, uniform within what the room allows
MAX_ABSORPTION = 0.9  # highest wall energy absorption (limits short RT60s in big rooms)
LISTENER_HEIGHT = 1.5  # metres
SOURCE_DISTANCE = (1.5, 5.0)  # metres, uniform
WALL_MARGIN = 0.3  # sources keep this far from walls, floor and ceiling, metres
LISTENER_MARGIN = 0.5  # the listener keeps this far from the walls, metres
NOISE_MIN_DISTANCE = 1.0  # noise sources keep this far from the listener, metres
DIFFUSE_NOISE_SOURCES = (3, 4, 5)
LOCALIZED_PROBABILITY = 0.5
SPEED_OF_SOUND = 343.0
SABINE = 24 * math.log(10) / SPEED_OF_SOUND


@dataclass(frozen=True)
class Placement:
    """A sound source seen from the listener."""

    position: tuple[float, float, float]  # room frame, metres
    azimuth: float  # degrees, listener frame
    elevation: float  # degrees
    distance: float  # metres

    @property
    def direction(self) -> np.ndarray:
        """Unit vector ``[x, y, z]`` in the listener frame."""
        az, el = math.radians(self.azimuth), math.radians(self.elevation)
        return np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])

    def record(self) -> dict:
        return {
            "position": list(self.position),
            "azimuth": self.azimuth,
            "elevation": self.elevation,
            "distance": self.distance,
            "direction": [round(float(v), 6) for v in self.direction],
        }


@dataclass(frozen=True)
class Scene:
    """A room with a listener, a source and noise sources."""

    room_size: tuple[float, float, float]
    rt60: float  # target mid-frequency (500 Hz-1 kHz) reverberation time, seconds
    listener_position: tuple[float, float, float]
    listener_yaw: float  # degrees
    source: Placement
    noise_kind: str  # "localized" | "diffuse"
    noises: tuple[Placement, ...]

    def record(self) -> dict:
        """The JSON-ready description stored with RIR banks and converted tasks."""
        return {
            "room": {"size": list(self.room_size), "rt60": self.rt60},
            "listener": {"position": list(self.listener_position), "yaw": self.listener_yaw},
            "source": self.source.record(),
            "noise": {"kind": self.noise_kind, "sources": [n.record() for n in self.noises]},
        }


def sampling_ranges() -> dict:
    """The ranges :func:`sample_scene` draws from (recorded with RIR banks)."""
    return {
        "room_length_m": list(ROOM_LENGTH),
        "room_height_m": list(ROOM_HEIGHT),
        "rt60_s": list(RT60),
        "max_absorption": MAX_ABSORPTION,
        "listener_height_m": LISTENER_HEIGHT,
        "source_distance_m": list(SOURCE_DISTANCE),
        "wall_margin_m": WALL_MARGIN,
        "listener_margin_m": LISTENER_MARGIN,
        "noise_min_distance_m": NOISE_MIN_DISTANCE,
        "diffuse_noise_sources": list(DIFFUSE_NOISE_SOURCES),
        "localized_noise_probability": LOCALIZED_PROBABILITY,
    }


def sabine_absorption(room_size: tuple[float, float, float], rt60: float) -> float:
    """Wall energy absorption giving ``rt60`` by Sabine's formula ``RT60 = 0.161 V / (S a)``."""
    x, y, z = room_size
    volume = x * y * z
    surface = 2 * (x * y + y * z + x * z)
    return SABINE * volume / (surface * rt60)


def place(listener: np.ndarray, yaw: float, position: np.ndarray, digits: int = 4) -> Placement:
    """Describe ``position`` (room frame, rounded to ``digits``) from a listener at
    ``listener`` facing ``yaw``."""
    position = np.round(position, digits)
    v = position - listener
    c, s = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    x, y, z = c * v[0] + s * v[1], -s * v[0] + c * v[1], v[2]
    distance = float(np.linalg.norm(v))
    return Placement(
        position=tuple(round(float(p), digits) for p in position),
        azimuth=round(math.degrees(math.atan2(y, x)), digits),
        elevation=round(math.degrees(math.asin(max(-1.0, min(1.0, z / distance)))), digits),
        distance=round(distance, digits),
    )


def _inside(position: np.ndarray, size: np.ndarray, margin: float) -> bool:
    return bool(np.all(position >= margin) and np.all(position <= size - margin))


def _sample_room(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    lo, hi = np.log(ROOM_LENGTH)
    floor = np.exp(rng.uniform(lo, hi, size=2))
    top = min(ROOM_HEIGHT[1], max(ROOM_HEIGHT[0] + 0.1, 2.0 + 0.25 * math.sqrt(floor.prod())))
    size = np.array([*floor, rng.uniform(ROOM_HEIGHT[0], top)])
    size = np.round(size, 3)
    shortest = sabine_absorption(tuple(size), 1.0) / MAX_ABSORPTION  # RT60 at most absorption
    rt60 = rng.uniform(max(RT60[0], shortest), RT60[1]) if shortest < RT60[1] else RT60[1]
    return size, round(float(rt60), 4)


def _sample_around(
    rng: np.random.Generator, listener: np.ndarray, size: np.ndarray, distance: tuple[float, float]
) -> np.ndarray | None:
    """A point at a random direction (uniform on the sphere) and distance, or None."""
    for _ in range(100):
        d = rng.uniform(*distance)
        z = rng.uniform(-1.0, 1.0)
        phi = rng.uniform(0.0, 2 * math.pi)
        r = math.sqrt(1 - z * z)
        point = listener + d * np.array([r * math.cos(phi), r * math.sin(phi), z])
        if _inside(point, size, WALL_MARGIN):
            return point
    return None


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene (ranges at the top of this module; README: natheear_tasks).

    Room: floor sides log-uniform in 3-20 m, height 2.5-8 m (taller for bigger floors), RT60
    uniform in 0.2-1.5 s (within what an absorption <= 0.9 allows). Listener at 1.5 m height,
    >= 0.5 m from the walls, yaw uniform in [0, 360). Source 1.5-5 m away in a direction
    uniform on the sphere, kept >= 0.3 m inside the room (so elevations are those the room
    allows). Noise: one localized source (probability 0.5) or 3-5 diffuse sources, anywhere
    in the room >= 1 m from the listener.
    """
    while True:
        size, rt60 = _sample_room(rng)
        if size[2] < LISTENER_HEIGHT + WALL_MARGIN:
            continue
        listener = np.array(
            [
                rng.uniform(LISTENER_MARGIN, size[0] - LISTENER_MARGIN),
                rng.uniform(LISTENER_MARGIN, size[1] - LISTENER_MARGIN),
                LISTENER_HEIGHT,
            ]
        ).round(4)
        source = _sample_around(rng, listener, size, SOURCE_DISTANCE)
        if source is not None:
            break
    yaw = round(float(rng.uniform(0.0, 360.0)), 4)
    localized = rng.uniform() < LOCALIZED_PROBABILITY
    count = 1 if localized else int(rng.choice(DIFFUSE_NOISE_SOURCES))
    noises = []
    while len(noises) < count:
        point = rng.uniform(WALL_MARGIN, size - WALL_MARGIN)
        if np.linalg.norm(point - listener) >= NOISE_MIN_DISTANCE:
            noises.append(place(listener, yaw, point))
    return Scene(
        room_size=tuple(float(v) for v in size),
        rt60=rt60,
        listener_position=tuple(float(v) for v in listener),
        listener_yaw=yaw,
        source=place(listener, yaw, source),
        noise_kind="localized" if localized else "diffuse",
        noises=tuple(noises),
    )
