"""The machine description that figures and training runs record."""

from __future__ import annotations

from pipeline.hardware import cpu_flags, cpuinfo_field, describe, l3_cache

CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 fma avx2 avx512f\n\nprocessor\t: 1\nmodel name\t: Other\nflags\t\t: amx_bf16\n"


def test_cpuinfo_fields_and_speed_flags_are_read_from_the_first_processor(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpuinfo_field("model name", info) == "AMD EPYC"
    assert cpuinfo_field("bogomips", info) is None and cpuinfo_field("flags", tmp_path / "missing") is None
    assert cpu_flags(info) == ["avx2", "fma", "avx512f"]  # in SPEED_FLAGS order, the rest left out


def test_l3_size_is_read_from_the_level_3_cache(tmp_path) -> None:
    for index, level, size in [("index0", "1", "32K"), ("index2", "2", "512K"), ("index3", "3", "8192K")]:
        (tmp_path / index).mkdir()
        (tmp_path / index / "level").write_text(level + "\n")
        (tmp_path / index / "size").write_text(size + "\n")
    assert l3_cache(tmp_path) == "8192K" and l3_cache(tmp_path / "missing") is None
    (tmp_path / "index3" / "level").write_text("2\n")
    assert l3_cache(tmp_path) is None


def test_the_description_reports_this_process_as_it_runs() -> None:
    import json
    import os
    import platform

    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        machine = describe()
    finally:
        torch.set_num_threads(before)
    assert machine["torch_threads"] == 1  # read when asked, not cached at import
    assert machine["torch"] == torch.__version__ and machine["python"] == platform.python_version()
    assert machine["cores"] == os.cpu_count() and machine["cuda"] == torch.cuda.is_available()
    assert json.loads(json.dumps(machine)) == machine  # stored as is in every figure's JSON
