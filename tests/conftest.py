"""Shared test setup: subprocesses (hear-validator, heareval, torchrun) import this checkout."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    """Folder of the running interpreter's console scripts (hear-validator, torchrun)."""
    return Path(sys.executable).parent


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory) -> Path:
    """A synthetic pretraining set (training.synthetic): shards, noise and an RIR bank."""
    from training.synthetic import write_dataset

    return write_dataset(
        tmp_path_factory.mktemp("toy") / "data", clips=12, shards=4, seconds=2.5, noise=4, scenes=4
    )
