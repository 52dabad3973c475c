"""Stage 1, the encode stage, on either serving runtime: torch (fp32 on CPU, fp16/bf16 on CUDA) or int8 (ONNX Runtime).

Torch-free at import: the int8 runtime never loads torch or transformers, so an int8 encode worker
stays small; the torch runtime's modules are imported only when it is chosen.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pipeline.encoding import Encoded, EncoderConfig, EncoderIdentity, TowerEncoded
from pipeline.errors import BundleError, IncompatibleBundle
from pipeline.int8 import RUNTIMES, TEXTS_PER_CALL, Int8Encoder, Int8Tower, has_runtime

log = logging.getLogger(__name__)

TOWER_CONFIG = "tower.json"  # pipeline.tower_io.CONFIG, named here without importing torch


def model_version(bundle_dir: Path, extra: dict[str, Any]) -> str:
    """Names the bundle and its weights ids (the cube's, and the tower's if any), for every result to record."""
    version = f"{Path(bundle_dir).name}@{extra.get('bundle_id', 'unversioned')}"
    tower = extra.get("tower")
    return f"{version}+tower-{tower.get('weights_id', 'unversioned')}" if isinstance(tower, dict) else version


def cuda_wanted(device: str, driver: Path = Path("/proc/driver/nvidia/gpus")) -> bool:
    """Whether the encoder would run on CUDA, decided without torch (which must not touch CUDA before a fork)."""
    if device.startswith("cuda"):
        return True
    return device == "auto" and driver.is_dir() and any(driver.iterdir())


def serving_runtime(runtime: str, device: str, bundle_dir: Path | None = None) -> str:
    """The runtime that serves: int8 on the CPU only; a CUDA device keeps torch (fp16/bf16 on a GPU beats int8).
    `auto` is int8 when the bundle at `bundle_dir` holds exported runtime files (`cubeqa export`), else torch."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}: use {', '.join(RUNTIMES)}")
    if cuda_wanted(device):
        return "torch"
    if runtime == "auto":
        return "int8" if bundle_dir is not None and has_runtime(bundle_dir) else "torch"
    return runtime


def manifest_header(bundle_dir: Path) -> dict[str, Any]:
    """manifest.json as a dict (no cube is built), for the int8 runtime's encoder check."""
    path = Path(bundle_dir) / "manifest.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        EncoderIdentity.from_dict(data["encoder"])
    except FileNotFoundError as exc:
        raise BundleError(f"{bundle_dir} is not a bundle: manifest.json is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{path} is not a bundle manifest ({exc!r})") from exc
    return data


class EncodeStage:
    """Stage 1: the teacher encoder, checked against the bundle it serves, and the bundle's question tower if any."""

    def __init__(
        self, bundle_dir: Path, encoder_config: EncoderConfig | None = None, runtime: str = "auto", threads: int = 0
    ) -> None:
        """`threads`: the int8 runtime's intra-op threads per call (0: one per core); torch's are set process-wide.
        Under `auto`, int8 files that do not match the bundle's torch weights are passed over for torch, with a
        warning; asked for by name, they are refused."""
        config = encoder_config or EncoderConfig()
        self.config = config
        self._bank_encoder: Any = None
        self._bank_lock = threading.Lock()
        self.runtime = serving_runtime(runtime, config.device, Path(bundle_dir))
        self.encoder: Any
        self.tower: Any
        if self.runtime == "int8":
            try:
                self._load_int8(Path(bundle_dir), config, threads)
                return
            except BundleError as exc:
                if runtime != "auto":
                    raise
                log.warning("the int8 runtime cannot serve %s (%s); the torch runtime serves it until "
                            "`cubeqa export --bundle %s` re-exports", bundle_dir, exc, bundle_dir)
                self.runtime = "torch"
        self._load_torch(Path(bundle_dir), config)

    def _load_torch(self, bundle_dir: Path, config: EncoderConfig) -> None:
        from pipeline.checkpoint import check_encoder, read_manifest
        from pipeline.encoder import TeacherEncoder
        from pipeline.tower_io import load_tower_if_any

        manifest = read_manifest(bundle_dir)
        self.encoder = TeacherEncoder(config)
        check_encoder(manifest, self.encoder.identity, bundle_dir)
        self.tower = load_tower_if_any(bundle_dir, self.encoder)
        self.model_version = model_version(bundle_dir, manifest.extra)

    def _load_int8(self, bundle_dir: Path, config: EncoderConfig, threads: int) -> None:
        config = replace(config, batch_size=TEXTS_PER_CALL)  # each vector independent of its neighbours
        header = manifest_header(bundle_dir)
        self.encoder = Int8Encoder(bundle_dir, config, threads)
        trained = EncoderIdentity.from_dict(header["encoder"])
        if not trained.same_model(self.encoder.identity):
            raise IncompatibleBundle(
                f"bundle {bundle_dir} was trained with encoder {trained.to_dict()} "
                f"but the running encoder is {self.encoder.identity.to_dict()}"
            )
        self.tower = Int8Tower(bundle_dir, self.encoder, threads) if (bundle_dir / TOWER_CONFIG).is_file() else None
        self.model_version = model_version(bundle_dir, header)

    def bank_encoder(self) -> Any:
        """The teacher that embeds bank sentences: torch on either runtime, so a bank's vectors do not depend on the
        worker that embedded them (int8 serves questions; docs/performance.md measures questions on int8 against a
        torch bank). On the int8 runtime it is loaded on first use: only workers that embed banks import torch."""
        if self.runtime == "torch":
            return self.encoder
        with self._bank_lock:
            if self._bank_encoder is None:
                from pipeline.encoder import TeacherEncoder

                self._bank_encoder = TeacherEncoder(self.config)
            return self._bank_encoder

    def encode(self, texts: list[str]) -> Encoded:
        """The teacher's unit vectors (N, D) in input order (references, bank sentences); InputError on empty text."""
        return self.encoder.encode(texts)

    def encode_questions(self, texts: list[str], teacher_rows: Sequence[bool] | None = None) -> TowerEncoded:
        """Questions' teacher vectors (for the identity metrics) and the cube's input: the tower's vectors, from one
        pass of the shared layers, or the teacher's again when the bundle has no tower. With a tower, `teacher_rows`
        names the questions whose teacher vector is needed (with a reference); the others get zeros (None: all)."""
        if self.tower is None:
            encoded = self.encoder.encode(texts)
            return TowerEncoded(encoded.vectors, encoded.vectors, encoded.truncated)
        return self.tower.encode_both(texts, batch_size=self.encoder.config.batch_size, teacher_rows=teacher_rows)
