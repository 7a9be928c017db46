"""What the machine trains on: the precision `auto` chooses."""

from sweeper import devices


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively():
    # this test machine has no GPU visible (CUDA is not installed for the suite)
    assert devices.precision("auto", cpu_flags={"avx2", "fma"}) == "float32"
    assert devices.precision("auto", cpu_flags={"avx512f", "avx512_bf16"}) == "mixed_bfloat16"
    assert devices.precision("auto", cpu_flags={"amx_bf16"}) == "mixed_bfloat16"
    assert devices.precision("float32", cpu_flags={"avx512_bf16"}) == "float32"  # as written
    assert devices.precision("mixed_bfloat16", cpu_flags=set()) == "mixed_bfloat16"


def test_auto_precision_reads_this_cpus_flags():
    flags = devices._cpu_flags()
    expected = "mixed_bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"
    assert devices.precision("auto") == expected


def test_available_memory_counts_the_page_cache_linux_gives_back(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(
        "MemTotal:       24000000 kB\nMemFree:         1000000 kB\n"
        "MemAvailable:   20000000 kB\nCached:         18000000 kB\n"
    )
    assert devices.available_memory(str(meminfo)) == 20000000 * 1024


def test_devices_command_says_what_trains_and_what_auto_starts():
    from click.testing import CliRunner

    from sweeper.cli import main

    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0, result.output
    assert "CPU" in result.output and "--workers auto" in result.output
