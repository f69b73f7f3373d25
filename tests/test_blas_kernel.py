"""OpenBLAS's kernels chosen from the CPU before numpy loads (evp_anim/blas_kernel.py)."""

import os
import subprocess
import sys

from evp_anim.blas_kernel import choose_openblas_kernel, cpu_info, kernel_for_cpu, kernel_for_flags

AVX512 = "fpu sse2 avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl"


def _cpuinfo(tmp_path, vendor: str, family: int, flags: str):
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: 207\n"
                 f"flags\t\t: {flags}\n\nprocessor\t: 1\nvendor_id\t: Other\nflags\t\t: sse2\n")
    return p


def test_kernel_families_follow_the_feature_flags():
    assert kernel_for_flags(set(AVX512.split())) == "SkylakeX"
    assert kernel_for_flags({"avx2", "fma", "avx512f"}) == "Haswell"      # AVX-512 F alone is not enough
    assert kernel_for_flags({"avx", "sse4_2"}) is None                   # older than Haswell: OpenBLAS decides


def test_the_first_processor_is_read_and_known_amd_families_are_left_to_openblas(tmp_path):
    info = cpu_info(_cpuinfo(tmp_path, "GenuineIntel", 6, AVX512))
    assert info["vendor_id"] == "GenuineIntel" and "avx512vl" in info["flags"].split()
    assert kernel_for_cpu(info) == "SkylakeX"
    assert kernel_for_cpu(cpu_info(_cpuinfo(tmp_path, "AuthenticAMD", 25, AVX512))) is None      # Zen 4
    assert kernel_for_cpu(cpu_info(_cpuinfo(tmp_path, "AuthenticAMD", 26, "avx2 fma"))) == "Haswell"   # newer
    assert cpu_info(tmp_path / "missing") == {}


def test_choose_sets_the_variable_only_when_it_can_still_matter(tmp_path, monkeypatch):
    info = _cpuinfo(tmp_path, "GenuineIntel", 6, AVX512)
    env = {"OPENBLAS_CORETYPE": "Zen"}
    assert choose_openblas_kernel(env, info) is None and env == {"OPENBLAS_CORETYPE": "Zen"}   # the user's
    env = {}
    import numpy  # noqa: F401  (loaded: too late to choose, nothing is set)
    assert choose_openblas_kernel(env, info) is None and env == {}
    monkeypatch.delitem(sys.modules, "numpy")
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        assert choose_openblas_kernel(env, info) == "SkylakeX" and env == {"OPENBLAS_CORETYPE": "SkylakeX"}


def test_a_process_that_imports_evp_anim_first_loads_the_chosen_kernels():
    """In a fresh process the package's import sets the variable before numpy's OpenBLAS reads it:
    the kernels threadpoolctl reports are the chosen family's (where one is chosen)."""
    code = ("import os, evp_anim, numpy, threadpoolctl\n"
            "from evp_anim.blas_kernel import cpu_info, kernel_for_cpu\n"
            "want = kernel_for_cpu(cpu_info())\n"
            "arch = [i.get('architecture') for i in threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas']\n"
            "print(want, os.environ.get('OPENBLAS_CORETYPE'), arch[0] if arch else None)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    want, set_to, arch = out.stdout.split()
    if want != "None":
        assert set_to == want and arch.lower() == want.lower()
    else:
        assert set_to == "None" and arch != "None"
