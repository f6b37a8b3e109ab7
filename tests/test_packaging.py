"""The wheel carries what an installed package needs (presets, bundled data, native
sources) and runs the main job outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO, cheap


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(out)], check=True,
                   capture_output=True, text=True)
    (whl,) = out.glob("disenkg-*.whl")
    return whl


def test_wheel_holds_presets_data_and_kernel_sources(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("disenkg/presets/umls.toml", "disenkg/presets/kinship.toml",
                   "disenkg/presets/FB15k-237.toml", "disenkg/data/umls.tar.gz",
                   "disenkg/data/kinship.tar.gz", "disenkg/data/planetoid/Cora/raw/ind.cora.x",
                   "disenkg/ops/native/edge_kernels.c", "disenkg/ops/native/mixture_kernels.c"):
        assert needed in names, needed


@pytest.mark.slow
def test_installed_wheel_runs_the_main_job_elsewhere(wheel, tmp_path):
    """Cheap form (CI): the wheel unpacked with ``pip --target`` next to this environment's
    dependencies; full form: a fresh venv with torch from the pinned spec."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    if cheap():
        site = tmp_path / "site"
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                        str(site), str(wheel)], check=True)
        python, env = sys.executable, {**os.environ, "PYTHONPATH": str(site)}
    else:
        venv = tmp_path / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python, env = str(venv / "bin" / "python"), dict(os.environ)
        subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0", str(wheel)],
                       check=True)
    where = subprocess.run([python, "-c", "import disenkg; print(disenkg.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO) not in where
    p = subprocess.run([python, "-m", "disenkg.run", "--dataset", "umls", "--epochs", "1",
                        "--batch-size", "512", "--output-dir", "out", "--no-progress"],
                       cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "preset: umls" in p.stdout and (work / "out" / "metrics.json").exists()


def test_conve_training_and_the_link_cli_do_not_import_pyg():
    """PyTorch Geometric loads torch._dynamo (~170 MB per process, ~1.7 s): models without
    a graph encoder, and the link CLI until it builds one, must not pay for it; the
    lazily imported names still resolve."""
    code = ("import sys, disenkg.training, disenkg.cli.link; from disenkg.models import ConvE;"
            "from disenkg.nn import ConvEInteraction, MI_ESTIMATORS;"
            "assert 'torch_geometric' not in sys.modules, 'PyG imported';"
            "from disenkg.models import DisenKGAT; from disenkg.nn import DisenConv, GATEncoder;"
            "assert 'torch_geometric' in sys.modules and DisenKGAT and DisenConv and GATEncoder")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
