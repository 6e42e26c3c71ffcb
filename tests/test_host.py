"""The CPU facts every training record and benchmark carries."""

from pathlib import Path

from mtbioner.host import cpuinfo, instruction_set, native_bf16


def test_cpuinfo_reads_the_first_processor_and_skips_lines_without_a_colon(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
        "\nno colon here\nprocessor\t: 1\nmodel name\t: Another CPU\nflags\t\t: fpu\n"
    )
    fields = cpuinfo(path)
    assert fields["model name"] == "Intel(R) Xeon(R) Processor"
    assert instruction_set(fields) == "avx512_vnni"


def test_instruction_set_is_the_widest_offered_or_none(tmp_path: Path) -> None:
    assert instruction_set({"flags": "fpu sse4_2 avx2 fma"}) == "avx2"
    assert instruction_set({"flags": "avx2 avx512f"}) == "avx512f"
    assert instruction_set({"flags": "fpu sse2"}) is None
    assert cpuinfo(tmp_path / "missing") == {}


def test_native_bf16_needs_avx512_bf16_or_amx() -> None:
    assert native_bf16({"flags": "avx2 avx512f avx512_bf16"})
    assert native_bf16({"flags": "avx2 amx_tile amx_bf16"})
    assert not native_bf16({"flags": "avx2 fma avx512f avx512_vnni"})
    assert not native_bf16({})
