"""Record the Python API names of real TensorRT releases, for the offline API-surface test.

    python scripts/trt_api_surface.py            # refresh tests/data/tensorrt/*.txt
    python scripts/trt_api_surface.py --out DIR  # write elsewhere

What it stores: one sorted list per release, one name per line: ``Name`` for a module
attribute (``Builder``, ``nptype``, ``__version__``), ``Class.member`` for a class member or enum
value (``BuilderFlag.FP16``, ``IBuilderConfig.set_memory_pool_limit``), ``Class.Nested.member``
one level further (``Logger.Severity.WARNING``); private and dunder names are left out. ``tests/install/test_tensorrt_api_surface.py``
checks every TensorRT name the toolkit uses against each list, and ``tests/tensorrt_api.py``
builds fake ``tensorrt`` modules with exactly these attributes.

Which releases (the roles are the file names, so a refresh replaces them):

    10.3.txt  tensorrt-cu12-bindings==10.3.0     JetPack 6's TensorRT: the oldest we support
    10.x.txt  tensorrt-cu12-bindings>=10,<11     the newest TensorRT 10
    11.x.txt  tensorrt-cu13-bindings>=11,<12     the newest TensorRT 11

How the names are read. The bindings wheels are on PyPI; the libraries they load
(``libnvinfer.so.N``, ``libnvonnxparser.so.N``, ``libnvinfer_plugin.so.N``) are only on NVIDIA's
index, so ``import tensorrt`` fails here. Two ways were tried on 10.3.0, 10.16.1.11 and
11.4.0.106:

1. Reading the identifier-like strings of the compiled module's ``.rodata`` (what ``strings``
   shows), without running anything. Measured against (2): it misses 112-134 names per release,
   because the linker stores a string that ends another one only once (``INT8`` lives inside
   ``UINT8``, ``Logger`` inside ``ILogger``), and it cannot say which class a name belongs to, so
   ``BuilderFlag.INT8`` (removed in 11) cannot be told from ``DataType.INT8`` (kept).
2. Loading the package against stub libraries (what this script does). The compiled module
   imports only a handful of C entry points from NVIDIA's libraries (``createInferBuilder_INTERNAL``,
   ``createNvOnnxParser_INTERNAL``, ``getPluginRegistry``, ...), and creates no TensorRT object
   while Python imports it: pybind11 only registers classes. So each missing ``NEEDED`` library
   is replaced by a stub shared object, compiled here, that defines those entry points as
   functions returning 0; no stub is ever called. The package's ``__init__.py`` then runs as on a
   real install (it adds ``nptype``, ``__version__``, ``Logger.WARNING``), in a child process
   with ``LD_LIBRARY_PATH`` pointing at the stubs, and the names come from ``dir()``: exact, and
   qualified by class. No libnvinfer and no GPU are involved.

Needs: pip with access to PyPI, a C compiler (``cc``) and binutils (``nm``, ``readelf``), Linux
x86-64 or aarch64, a Python for which the wheels exist. Runs in about a minute (three ~1.3 MB
wheels). NVIDIA's native code from the wheel runs in the child process (module registration only).
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "tensorrt"


@dataclass(frozen=True)
class Release:
    role: str          # the file name without .txt
    requirement: str   # what pip downloads
    why: str


RELEASES = (
    Release("10.3", "tensorrt-cu12-bindings==10.3.0", "JetPack 6's TensorRT, the oldest supported"),
    Release("10.x", "tensorrt-cu12-bindings>=10,<11", "the newest TensorRT 10"),
    Release("11.x", "tensorrt-cu13-bindings>=11,<12", "the newest TensorRT 11"),
)

# Run in the child process: import the package and list its names (see the module docstring).
INTROSPECT = r"""
import inspect, json, sys
import tensorrt as trt
names = set()
def walk(obj, prefix, depth):
    for name in dir(obj):
        if name.startswith("_") and not (depth == 0 and name == "__version__"):
            continue  # pybind11 internals and dunders: never part of the API the toolkit uses
        names.add(prefix + name)
        value = getattr(obj, name, None)
        if inspect.isclass(value) and depth < 2 and value.__module__.startswith("tensorrt"):
            walk(value, prefix + name + ".", depth + 1)
walk(trt, "", 0)
json.dump({"version": trt.__version__, "names": sorted(names)}, sys.stdout)
"""


def download(requirement: str, folder: Path) -> Path:
    """The bindings wheel for this Python, from PyPI (``pip download --no-deps``)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--quiet", "-d", str(folder), requirement], check=True)
    wheels = sorted(folder.glob("*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"{requirement}: expected one wheel in {folder}, got {wheels}")
    return wheels[0]


def needed_libraries(extension: Path) -> list[str]:
    """The ``NEEDED`` entries of a shared object (``readelf -d``)."""
    out = subprocess.run(["readelf", "-d", str(extension)], check=True, capture_output=True,
                         text=True).stdout
    return [line.split("[", 1)[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]


def missing_symbols(extension: Path) -> list[str]:
    """Undefined, unversioned symbols of ``extension`` that this process cannot resolve: the ones
    it takes from NVIDIA's libraries (glibc and libstdc++ symbols carry a version, Python's own
    are resolvable)."""
    out = subprocess.run(["nm", "-D", "--undefined-only", str(extension)], check=True,
                         capture_output=True, text=True).stdout
    process = ctypes.CDLL(None)
    symbols = []
    for line in out.splitlines():
        kind, name = line.split()[-2:]
        if kind == "U" and "@" not in name and not hasattr(process, name):
            symbols.append(name)
    return sorted(symbols)


def build_stubs(extension: Path, folder: Path) -> list[str]:
    """A stub shared object for each library ``extension`` needs that is not on this machine;
    returns their names."""
    source = folder / "stub.c"
    source.write_text("".join(f"void *{name}(void) {{ return 0; }}\n"
                              for name in missing_symbols(extension)))
    stubbed = []
    for library in needed_libraries(extension):
        try:
            ctypes.CDLL(library)
            continue  # present (libc, libstdc++, or a real TensorRT): use it
        except OSError:
            pass
        subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{library}", "-o",
                        str(folder / library), str(source)], check=True)
        stubbed.append(library)
    return stubbed


def read_names(wheel: Path, work: Path) -> tuple[str, list[str]]:
    """(version, names) of the ``tensorrt`` package in ``wheel``."""
    unpacked = work / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    package = unpacked / "tensorrt_bindings"
    extension = next(package.glob("tensorrt*.so"))
    stubs = work / "stubs"
    stubs.mkdir()
    build_stubs(extension, stubs)
    path = work / "path"
    path.mkdir()
    (path / "tensorrt").symlink_to(package, target_is_directory=True)
    env = {"LD_LIBRARY_PATH": str(stubs), "PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"}
    code = f"import sys; sys.path.insert(0, {str(path)!r}); exec({INTROSPECT!r})"
    out = subprocess.run([sys.executable, "-I", "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    found = json.loads(out)
    return found["version"], found["names"]


def write_list(out: Path, release: Release, wheel: Path, version: str, names: list[str]) -> Path:
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    target = out / f"{release.role}.txt"
    header = (f"# TensorRT {version} Python API ({release.why}): {wheel.name}\n"
              f"# sha256 {digest}; written by scripts/trt_api_surface.py, which says how to "
              "refresh it\n")
    target.write_text(header + "".join(f"{n}\n" for n in names))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for release in RELEASES:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            wheel = download(release.requirement, work / "wheel")
            version, names = read_names(wheel, work)
            target = write_list(args.out, release, wheel, version, names)
            print(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}: "
                  f"TensorRT {version}, {len(names)} names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
