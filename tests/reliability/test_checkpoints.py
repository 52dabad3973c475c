"""Hostile bundles: truncated, corrupted or foreign bundles are refused with a message naming what is wrong,
a pickle in a bundle is refused without being unpickled, and no product code can load pickled weights."""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import BundleError, Cube, EncoderIdentity, IncompatibleBundle, load_bundle, save_bundle
from pipeline.checkpoint import BANK, BANK_VECTORS, CUBE_WEIGHTS, MANIFEST, REQUIRED_FIELDS, weights_id
from tests.conftest import ROOT
from tests.unit.test_checkpoint import CONFIG, ENCODER, trained_cube

PRODUCT_PACKAGES = ("pipeline", "storage", "tasks", "workers", "cubeqa")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A small bundle whose manifest records its weights' id, as `cubeqa train` writes it."""
    cube = trained_cube()
    vectors = np.random.default_rng(0).normal(size=(3, 18)).astype(np.float32)
    return save_bundle(tmp_path / "b", cube, ["one", "two", "three"], ENCODER, bank_vectors=vectors, extra={"bundle_id": weights_id(cube)})


def edit_manifest(bundle: Path, change) -> None:  # a function of the manifest dict
    manifest = json.loads((bundle / MANIFEST).read_text())
    change(manifest)
    (bundle / MANIFEST).write_text(json.dumps(manifest))


def refusal(bundle: Path, encoder: EncoderIdentity | None = ENCODER) -> str:
    with pytest.raises(BundleError) as error:
        load_bundle(bundle, encoder)
    return str(error.value)


def test_the_intact_bundle_loads(bundle: Path) -> None:
    """The baseline every refusal below departs from."""
    loaded = load_bundle(bundle, ENCODER)
    assert loaded.bank_texts == ["one", "two", "three"] and weights_id(loaded.cube) == loaded.manifest.extra["bundle_id"]


@pytest.mark.parametrize("name", [CUBE_WEIGHTS, BANK_VECTORS, BANK, MANIFEST])
@pytest.mark.parametrize("keep", [0, 0.5])
def test_a_truncated_file_is_refused_naming_it(bundle: Path, name: str, keep: float) -> None:
    path = bundle / name
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    assert name in refusal(bundle)


def test_flipped_bytes_in_the_weights_are_caught_by_the_bundle_id(bundle: Path) -> None:
    path = bundle / CUBE_WEIGHTS
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # inside the last tensor's data: the file still parses
    path.write_bytes(bytes(data))
    message = refusal(bundle)
    assert CUBE_WEIGHTS in message and "bundle_id" in message and "corrupted" in message


def test_a_corrupted_safetensors_header_is_refused(bundle: Path) -> None:
    path = bundle / CUBE_WEIGHTS
    data = bytearray(path.read_bytes())
    data[10:20] = b"#" * 10  # inside the JSON header
    path.write_bytes(bytes(data))
    assert f"cannot read {path}" in refusal(bundle)


def test_weights_of_another_bundle_are_refused(bundle: Path, tmp_path: Path) -> None:
    other = Cube(CONFIG)  # same shapes, other values
    shutil.copy(save_bundle(tmp_path / "other", other, ["x", "y", "z"], ENCODER) / CUBE_WEIGHTS, bundle / CUBE_WEIGHTS)
    assert "comes from another bundle" in refusal(bundle)


@pytest.mark.parametrize(
    ("running", "named"),
    [
        (EncoderIdentity(model_id="other/encoder", dim=18, weights_hash="fff999"), ("abc123", "fff999", "test/encoder", "other/encoder")),
        (EncoderIdentity(model_id="test/encoder", dim=32, weights_hash="abc123"), ("'dim': 18", "'dim': 32")),
    ],
)
def test_a_foreign_encoder_is_refused_naming_both_sides(bundle: Path, running: EncoderIdentity, named: tuple[str, ...]) -> None:
    with pytest.raises(IncompatibleBundle) as error:
        load_bundle(bundle, running)
    assert all(part in str(error.value) for part in named), str(error.value)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m["cube_config"].update(channels=5), "do not fit its cube_config"),
        (lambda m: m["cube_config"].update(size=[4, 4, 2]), "do not fit its cube_config"),
        (lambda m: m["bank"].update(size=4), "has 3 sentences; the manifest says 4"),
        (lambda m: m["encoder"].update(dim=17), "(3, 18) vectors; the bank needs (3, 17)"),
    ],
    ids=["channels", "lattice size", "bank size", "vector size"],
)
def test_wrong_shapes_are_refused_saying_which(bundle: Path, change, expected: str) -> None:
    edit_manifest(bundle, change)
    assert expected in refusal(bundle, encoder=None)


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_a_missing_manifest_field_is_named(bundle: Path, field: str) -> None:
    edit_manifest(bundle, lambda m: m.pop(field))
    assert f"lacks the field(s): {field}" in refusal(bundle)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("format_version", "1", "has bundle format '1'; this code reads format 1"),
        ("format_version", 2, "has bundle format 2"),
        ("cube_config", "8x8x2", "malformed field 'cube_config'"),
        ("cube_config", {**CONFIG.to_dict(), "dim": "384"}, "dim must be a positive int, got '384'"),
        ("cube_config", {**CONFIG.to_dict(), "steps": 0}, "steps must be a positive int, got 0"),
        ("cube_config", {**CONFIG.to_dict(), "depth": 3}, "malformed field 'cube_config'"),
        ("encoder", "all-MiniLM-L6-v2", "malformed field 'encoder'"),
        ("encoder", {"model_id": "m", "dim": "wide", "weights_hash": "h"}, "malformed field 'encoder'"),
        ("bank", ["bank.jsonl"], "malformed field 'bank'"),
        ("bank", {"size": "many"}, "malformed field 'bank'"),
    ],
)
def test_a_malformed_manifest_field_is_named(bundle: Path, field: str, value: object, expected: str) -> None:
    edit_manifest(bundle, lambda m: m.update({field: value}))
    assert expected in refusal(bundle, encoder=None)


def test_a_manifest_that_is_not_a_json_object_is_refused(bundle: Path) -> None:
    (bundle / MANIFEST).write_text("[1, 2]")
    assert "must hold a JSON object" in refusal(bundle)
    (bundle / MANIFEST).write_bytes(b"\xff\xfe{")
    assert "is not valid JSON" in refusal(bundle)


class Planted:
    """Unpickling this runs `touch MARKER`: proof of execution if the marker ever appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def torch_save_bytes(obj: object, tmp_path: Path) -> bytes:
    path = tmp_path / "saved.pt"
    torch.save(obj, path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("extra.pt", "torch"),
        ("weights.pkl", "pickle"),
        ("pytorch_model.bin", "torch"),
        ("model.ckpt", "pickle"),
        ("notes.dat", "pickle"),  # a pickle under an innocent name
        (CUBE_WEIGHTS, "torch"),  # a torch.save file posing as the weights
        (BANK_VECTORS, "pickle"),
    ],
)
def test_a_pickle_in_the_bundle_is_refused_and_never_unpickled(bundle: Path, tmp_path: Path, name: str, kind: str) -> None:
    marker = tmp_path / "executed"
    payload = {"weights": Planted(marker)}
    data = pickle.dumps(payload, protocol=4) if kind == "pickle" else torch_save_bytes(payload, tmp_path)
    assert not marker.exists()
    (bundle / name).write_bytes(data)
    message = refusal(bundle)
    assert "pickle-format" in message and name in message
    assert not marker.exists(), "a pickle in the bundle was executed"


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_still_loads(bundle: Path, tmp_path: Path) -> None:
    """The pickle sniffing must not refuse real safetensors weights: 0x80 0x02 as a header length (640 bytes)."""
    from safetensors.numpy import save_file

    for padding in range(1000):
        name = f"t{'x' * padding}"
        save_file({name: np.zeros(1, np.float32)}, str(tmp_path / "probe.safetensors"))
        if (tmp_path / "probe.safetensors").read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.fail("no padding gave a header length of 0x0280")
    shutil.copy(tmp_path / "probe.safetensors", bundle / "extra.safetensors")
    assert load_bundle(bundle, ENCODER).bank_texts == ["one", "two", "three"]


# --- nothing in the product can load pickled weights ---------------------------------------------

PICKLE_LOADERS = {
    "torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "dill.load", "dill.loads",
    "cloudpickle.load", "cloudpickle.loads", "marshal.load", "marshal.loads", "shelve.open", "yaml.load",
    "yaml.unsafe_load", "yaml.full_load", "pandas.read_pickle", "torch.jit.load",
}
PICKLE_MODULES = {"pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "_pickle"}


def dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """`a.b.c` for a Name/Attribute chain, with import aliases resolved (np -> numpy)."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(aliases.get(node.id, node.id))
        return ".".join(reversed(parts))
    return ""


def keyword_is(call: ast.Call, name: str, value: object) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value == value for k in call.keywords)


def pickle_load_paths(source: str, filename: str) -> list[str]:
    """Every place in `source` that could unpickle (or otherwise execute) data read from a file."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                aliases[alias.asname or alias.name] = alias.name
                if alias.name.split(".")[0] in PICKLE_MODULES:
                    found.append(f"{filename}:{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"{filename}:{node.lineno}: from {node.module} import ...")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func, aliases)
        if name in PICKLE_LOADERS and not (name == "torch.load" and keyword_is(node, "weights_only", True)):
            found.append(f"{filename}:{node.lineno}: {name}(...)")
        elif name in ("numpy.load", "numpy.lib.npyio.load") and not keyword_is(node, "allow_pickle", False):
            found.append(f"{filename}:{node.lineno}: {name}(...) without allow_pickle=False")
        elif name.endswith(".from_pretrained") and "Tokenizer" not in name and not keyword_is(node, "use_safetensors", True):
            found.append(f"{filename}:{node.lineno}: {name}(...) without use_safetensors=True")
    return found


def test_the_scanner_finds_every_kind_of_pickle_load() -> None:
    """The check below can fail: each of these snippets is flagged."""
    snippets = [
        "import torch\ntorch.load('w.pt')",
        "import pickle\npickle.loads(b'')",
        "from pickle import loads\nloads(b'')",
        "import numpy as np\nnp.load('a.npy')",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
        "import yaml\nyaml.load(open('x'))",
        "from transformers import AutoModel\nAutoModel.from_pretrained('dir')",
        "import joblib\njoblib.load('m.joblib')",
    ]
    for snippet in snippets:
        assert pickle_load_paths(snippet, "snippet.py"), snippet
    clean = "import numpy as np\nnp.load('a.npy', allow_pickle=False)\nfrom transformers import AutoModel\nAutoModel.from_pretrained('d', use_safetensors=True)"
    assert pickle_load_paths(clean, "clean.py") == []


def test_no_product_code_can_load_a_pickle() -> None:
    files = sorted(p for package in PRODUCT_PACKAGES for p in (ROOT / package).rglob("*.py"))
    assert len(files) > 30
    found = [hit for path in files for hit in pickle_load_paths(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == []


def test_the_shipped_bundle_holds_no_pickle() -> None:
    from cubeqa.settings import default_bundle_dir
    from pipeline.checkpoint import PICKLE_SUFFIXES, looks_pickled

    files = [p for p in default_bundle_dir().iterdir() if p.is_file()]
    assert {p.name for p in files} >= {MANIFEST, CUBE_WEIGHTS, BANK, BANK_VECTORS}
    assert [p.name for p in files if p.suffix in PICKLE_SUFFIXES or looks_pickled(p)] == []


@pytest.mark.slow
def test_ask_with_a_foreign_bundle_says_what_is_wrong(tmp_path: Path) -> None:
    """The user-facing edge: `cubeqa ask` on a copy of the shipped bundle whose manifest names another encoder."""
    from typer.testing import CliRunner

    from cubeqa.cli import app
    from cubeqa.settings import default_bundle_dir

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for path in default_bundle_dir().iterdir():
        (foreign / path.name).symlink_to(path)
    (foreign / MANIFEST).unlink()
    manifest = json.loads((default_bundle_dir() / MANIFEST).read_text())
    manifest["encoder"]["weights_hash"] = "0123456789abcdef"
    (foreign / MANIFEST).write_text(json.dumps(manifest))
    env: dict[str, str | None] = {k: None for k in os.environ if k.upper().startswith("CUBEQA_")}
    run = CliRunner().invoke(app, ["ask", "Where is Kenya?"], env={**env, "CUBEQA_BUNDLE_DIR": str(foreign), "CUBEQA_DEVICE": "cpu"})
    assert run.exit_code == 1 and isinstance(run.exception, SystemExit), run.output
    message = " ".join(run.stderr.split())
    assert message.startswith("error: bundle ") and "Traceback" not in run.stderr
    running = json.loads((default_bundle_dir() / MANIFEST).read_text())["encoder"]["weights_hash"]
    assert "0123456789abcdef" in message and running in message  # both sides named
