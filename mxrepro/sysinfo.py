"""What the benchmarks print about the machine: CPU model, vector extensions, cores, load."""
import os

__all__ = ["cpu_summary", "load_average"]

_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "amx_tile")


def cpu_summary(path="/proc/cpuinfo"):
    """One line: model name, the vector-extension flags present (avx2 / avx512*), logical CPUs, and
    which kernel set the fused operators use."""
    model, flags = "unknown CPU", set()
    try:
        with open(path) as fh:
            for line in fh:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown CPU":
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    have = [f for f in _VECTOR_FLAGS if f in flags]
    avx512 = any(f.startswith("avx512") for f in flags)
    isa = "?"
    try:
        import ctypes
        from mxrepro import ops
        fn = ctypes.CDLL(ops._loaded_path).fuse_cpu_isa
        fn.restype = ctypes.c_char_p
        isa = fn().decode()
    except Exception:  # library not loaded or built without the fused operators
        pass
    return "%s; %d logical CPUs; flags: %s (AVX2 %s, AVX-512 %s); fused-operator kernels: %s" % (
        model, os.cpu_count() or 1, " ".join(have) or "none of " + "/".join(_VECTOR_FLAGS),
        "yes" if "avx2" in flags else "no", "yes" if avx512 else "no", isa)


def load_average():
    try:
        return os.getloadavg()
    except (OSError, AttributeError):
        return (float("nan"),) * 3
