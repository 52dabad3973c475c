"""The machine description that figures and training runs record."""

from __future__ import annotations

from pipeline.hardware import cpu_flags, cpuinfo_field, describe, l3_cache

CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 fma avx2 avx512f\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"


def test_cpuinfo_fields_and_speed_flags_are_read_from_the_first_processor(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert cpuinfo_field("model name", info) == "AMD EPYC"
    assert cpuinfo_field("bogomips", info) is None and cpuinfo_field("flags", tmp_path / "missing") is None
    assert cpu_flags(info) == ["avx2", "fma", "avx512f"]  # in SPEED_FLAGS order, the rest left out


def test_l3_size_is_reported_as_linux_gives_it(tmp_path) -> None:
    size = tmp_path / "size"
    size.write_text("8192K\n")
    assert l3_cache(size) == "8192K" and l3_cache(tmp_path / "missing") is None


def test_the_description_names_what_timings_depend_on() -> None:
    machine = describe()
    assert {"cpu", "cpu_flags", "l3_cache", "cores", "cuda", "torch_threads", "torch"} <= set(machine)
    assert machine["cores"] >= 1 and machine["torch_threads"] >= 1 and str(machine["torch"]).startswith("2.")
