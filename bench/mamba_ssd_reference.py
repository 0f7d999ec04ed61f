"""hear_gram's Mamba-2 scan against the pure-PyTorch SSD reference shipped with mamba-ssm.

    python bench/mamba_ssd_reference.py                  # downloads the sdist (121 kB) once
    python bench/mamba_ssd_reference.py --sdist mamba_ssm-2.3.0.tar.gz

The source distribution of PyPI ``mamba-ssm`` 2.3.0 (checked against its sha256) holds
``mamba_ssm/modules/ssd_minimal.py``: the paper's Listing 1, ``ssd_minimal_discrete``.
Only that file is read out of the archive and imported at run time (its import of the
Triton kernels, which it does not use, is satisfied by an empty stand-in); nothing of it is
installed or kept beyond the cached archive. Both scans run on the same random inputs
(float32, CPU) and are compared with each other and with a float64 token-by-token
recurrence. Exit code 0 compared, 3 the archive could not be had (offline), 1 mismatch
beyond 1e-4 of the output's scale.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import tempfile
import types
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hear_gram.mamba2 import ssd_scan  # noqa: E402

VERSION = "2.3.0"
SHA256 = "8294e12125f76021e4e190f4137e84a84935920eeda5d0037a6917524456b303"
MEMBER = f"mamba_ssm-{VERSION}/mamba_ssm/modules/ssd_minimal.py"
INDEX = "https://pypi.org/simple/mamba-ssm/"
TOLERANCE = 1e-4


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hear_gram" / f"mamba_ssm-{VERSION}.tar.gz"


def download(target: Path) -> None:
    """Fetch the sdist named by PyPI's simple index (JSON form) and check its sha256."""
    request = urllib.request.Request(
        INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    files = json.load(urllib.request.urlopen(request, timeout=60))["files"]
    (entry,) = [f for f in files if f["filename"] == f"mamba_ssm-{VERSION}.tar.gz"]
    data = urllib.request.urlopen(entry["url"], timeout=120).read()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise ValueError(f"{entry['url']} does not have the expected sha256 {SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, target)


def load_reference(sdist: Path) -> types.ModuleType:
    """Import ``ssd_minimal.py`` out of the archive, with the Triton import stubbed."""
    data = sdist.read_bytes()
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise ValueError(f"{sdist} is not mamba_ssm-{VERSION}.tar.gz (sha256 differs)")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        source = archive.extractfile(MEMBER).read()
    stub = types.ModuleType("mamba_ssm.ops.triton.ssd_combined")
    stub.mamba_chunk_scan_combined = None
    for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["mamba_ssm.ops.triton.ssd_combined"] = stub
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ssd_minimal.py"
        path.write_bytes(source)
        spec = importlib.util.spec_from_file_location("mamba_ssd_minimal", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def recurrence(x, dt, A, B, C):
    """Float64, one step at a time (B and C per head)."""
    state = torch.zeros(x.shape[0], x.shape[2], x.shape[3], B.shape[-1], dtype=torch.float64)
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t].double() * A.double())[..., None, None]
        inp = (dt[:, t, :, None] * x[:, t]).double()[..., None] * B[:, t, :, None, :].double()
        state = decay * state + inp
        ys.append(torch.einsum("bhpn,bhn->bhp", state, C[:, t].double()))
    return torch.stack(ys, dim=1)


def compare(reference: types.ModuleType, length: int, chunk: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    b, h, p, g, n = 2, 8, 16, 1, 32
    x = torch.randn(b, length, h, p, generator=gen)
    dt = F.softplus(torch.randn(b, length, h, generator=gen) - 2.0)
    A = -torch.exp(torch.rand(h, generator=gen))
    B = torch.randn(b, length, g, n, generator=gen)
    C = torch.randn(b, length, g, n, generator=gen)
    ours, _ = ssd_scan(x, dt, A, B, C, chunk_size=chunk)
    Bh, Ch = B.expand(b, length, h, n), C.expand(b, length, h, n)
    theirs, _ = reference.ssd_minimal_discrete(x * dt[..., None], A * dt, Bh, Ch, chunk)
    exact = recurrence(x, dt, A, Bh, Ch)
    scale = exact.abs().max().item()
    return {
        "length": length,
        "chunk": chunk,
        "ours_vs_theirs": (ours - theirs).abs().max().item() / scale,
        "ours_vs_exact": (ours.double() - exact).abs().max().item() / scale,
        "theirs_vs_exact": (theirs.double() - exact).abs().max().item() / scale,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sdist", type=Path, help=f"a local mamba_ssm-{VERSION}.tar.gz")
    args = parser.parse_args(argv)
    sdist = args.sdist or cache_path()
    if not sdist.is_file():
        try:
            download(sdist)
        except OSError as error:
            print(
                f"could not download mamba_ssm-{VERSION}.tar.gz from PyPI ({error}); pass "
                "--sdist with a copy",
                file=sys.stderr,
            )
            return 3
    reference = load_reference(sdist)
    print(f"mamba-ssm {VERSION} ssd_minimal_discrete vs hear_gram.mamba2.ssd_scan, float32, CPU")
    print("max |difference| / max |output|; 'exact' is a float64 token-by-token recurrence")
    print(f"{'length':>7} {'chunk':>6} {'ours-theirs':>12} {'ours-exact':>11} {'theirs-exact':>13}")
    worst = 0.0
    for seed, (length, chunk) in enumerate([(64, 16), (256, 64), (512, 128), (200, 50)]):
        row = compare(reference, length, chunk, seed)
        worst = max(worst, row["ours_vs_theirs"])
        print(
            f"{row['length']:>7} {row['chunk']:>6} {row['ours_vs_theirs']:>12.2e} "
            f"{row['ours_vs_exact']:>11.2e} {row['theirs_vs_exact']:>13.2e}"
        )
    print(f"worst ours-theirs {worst:.2e} (tolerance {TOLERANCE:.0e})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
