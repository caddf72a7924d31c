"""Builds the Python package caffe_mining and its extensions (no Caffe needed).

- caffe_mining._core: the Caffe-free core's CPU sources (caffe_layers/src/caffe/mining/*.cpp, the same files
  libcaffe compiles for the loss layers) with python/caffe_mining/_core.cpp and every loss's CPU bindings
  (python/caffe_mining/bindings/<loss>.cpp); links OpenBLAS for cblas (Debian: libopenblas-dev).
- caffe_mining._core_cuda: the core's CUDA sources (caffe_layers/src/caffe/mining/*.cu) with
  python/caffe_mining/_core_cuda.cpp and every loss's CUDA bindings (bindings/<loss>_cuda.cpp), compiled with nvcc
  and linked with the CUDA runtime (static) and cuBLAS.
  Built where nvcc is found (PATH, CUDA_HOME or /usr/local/cuda). Environment:
    CAFFE_MINING_CUDA=auto|1|0   auto (default): build it where nvcc exists; 1: required; 0: skip it
    CAFFE_MINING_CUDA_ARCHS      SM versions, space-separated (default "80 90"; PTX of the last one is embedded)
- the stubs caffe_mining/_core.pyi and _core_cuda.pyi, written by build_ext beside the extensions (in place with
  --inplace and pip install -e): the module's head (python/caffe_mining/<module>.head.pyi) and its losses'
  fragments (bindings/<loss>.pyi, bindings/<loss>_cuda.pyi) in name order. A loss's bindings are its own files
  only: nothing here or in a shared file lists the losses.

    pip install .        # or, for development: pip install -e .
"""
import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

PACKAGE = "python/caffe_mining"
BINDINGS = f"{PACKAGE}/bindings"  # per loss: <loss>.cpp (into _core), <loss>_cuda.cpp (into _core_cuda), stubs
core_sources = sorted(glob("caffe_layers/src/caffe/mining/*.cpp"))
core_cuda_sources = sorted(glob("caffe_layers/src/caffe/mining/*.cu"))
if not core_sources or not core_cuda_sources:
    raise SystemExit("setup.py: no core sources in caffe_layers/src/caffe/mining/; run it from the repository root")


def is_cuda_binding(path):
    return path.endswith(("_cuda.cpp", "_cuda.pyi"))


binding_sources = sorted(glob(f"{BINDINGS}/*.cpp"))
core_headers = sorted(glob("caffe_layers/include/caffe_mining/**/*.hpp", recursive=True) +
                      glob("caffe_layers/include/caffe_mining/**/*.cuh", recursive=True))
core_cpu_includes = sorted(glob("caffe_layers/src/caffe/mining/*.inc"))  # lanes that a core .cpp includes
binding_headers = sorted(glob(f"{PACKAGE}/*.hpp") + glob(f"{BINDINGS}/*.hpp"))
cpu_binding_headers = [h for h in binding_headers if "_cuda" not in os.path.basename(h)]

extension = Pybind11Extension(
    "caffe_mining._core",
    sorted([f"{PACKAGE}/_core.cpp", *[s for s in binding_sources if not is_cuda_binding(s)], *core_sources]),
    include_dirs=["caffe_layers/include", PACKAGE],
    depends=[*core_headers, *core_cpu_includes, *cpu_binding_headers],  # a changed header rebuilds the extension
    libraries=["openblas"],
    cxx_std=17,
)


def find_nvcc():
    """Path of nvcc, or None."""
    candidates = [shutil.which("nvcc")]
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates.append(os.path.join(root, "bin", "nvcc"))
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def cuda_roots(nvcc):
    """Folders that may hold CUDA's headers and libraries: nvcc's toolkit, /usr/local/cuda, and the nvidia-* wheels
    (pip-installed toolkits put cuBLAS beside, not inside, nvcc's folder)."""
    roots = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc))), "/usr/local/cuda"]
    try:
        import nvidia  # the namespace package of the nvidia-* wheels

        for base in nvidia.__path__:
            roots += sorted(glob(os.path.join(base, "*"))) + sorted(glob(os.path.join(base, "*", "*")))
    except ImportError:
        pass
    return [r for r in dict.fromkeys(roots) if os.path.isdir(r)]


def find_cuda_library(roots, name):
    """(folder, linker flag) of lib<name>: the development link if present, else the versioned file."""
    for root in roots:
        for folder in ("lib64", "lib", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib"):
            path = os.path.join(root, folder)
            if os.path.exists(os.path.join(path, f"lib{name}.so")):
                return path, f"-l{name}"
            versioned = sorted(glob(os.path.join(path, f"lib{name}.so.*")))
            if versioned:
                return path, "-l:" + os.path.basename(versioned[0])
    raise RuntimeError(f"setup.py: lib{name} not found under {roots}")


def find_cuda_include(roots, header):
    for root in roots:
        for folder in ("include", "targets/x86_64-linux/include", "targets/sbsa-linux/include"):
            if os.path.exists(os.path.join(root, folder, header)):
                return os.path.join(root, folder)
    raise RuntimeError(f"setup.py: {header} not found under {roots}")


def cuda_extension(nvcc):
    roots = cuda_roots(nvcc)
    cudart_dir, cudart_flag = find_cuda_library(roots, "cudart")
    if os.path.exists(f"{cudart_dir}/libcudart_static.a"):  # no runtime dependency on libcudart
        cudart_flag = "-l:libcudart_static.a"
    cublas_dir, cublas_flag = find_cuda_library(roots, "cublas")
    include_dirs = ["caffe_layers/include", PACKAGE,
                    *dict.fromkeys([find_cuda_include(roots, "cuda_runtime.h"), find_cuda_include(roots, "cublas_v2.h")])]
    ext = Pybind11Extension(
        "caffe_mining._core_cuda",
        [f"{PACKAGE}/_core_cuda.cpp", *[s for s in binding_sources if is_cuda_binding(s)]],
        include_dirs=include_dirs,
        depends=[*core_headers, *binding_headers],
        library_dirs=[cudart_dir, cublas_dir],
        runtime_library_dirs=sorted({cudart_dir, cublas_dir}),
        extra_link_args=[cudart_flag, cublas_flag, "-ldl", "-lrt", "-lpthread"],
        cxx_std=17,
    )
    ext.cuda_sources = [*core_cuda_sources, f"{PACKAGE}/_core_cuda_kernels.cu"]
    ext.nvcc = nvcc
    ext.cuda_include_dirs = ["caffe_layers/include", PACKAGE]
    return ext


def stub_text(module):
    """The stub of caffe_mining.<module>: its head, then its losses' fragments in name order."""
    fragments = [f for f in sorted(glob(f"{BINDINGS}/*.pyi")) if is_cuda_binding(f) == (module == "_core_cuda")]
    parts = [f"{PACKAGE}/{module}.head.pyi", *fragments]
    return "".join(open(part).read() for part in parts)


class BuildExt(build_ext):
    """build_ext that first compiles an extension's cuda_sources with nvcc into objects it links, and writes the
    stubs beside the extensions (both stubs always: they come from sources, not from the compiled modules)."""

    def run(self):
        super().run()
        package = PACKAGE if self.inplace else os.path.join(self.build_lib, "caffe_mining")
        os.makedirs(package, exist_ok=True)
        for module in ("_core", "_core_cuda"):
            path, text = os.path.join(package, f"{module}.pyi"), stub_text(module)
            if not os.path.exists(path) or open(path).read() != text:
                with open(path, "w") as stub:
                    stub.write(text)

    def build_extension(self, ext):
        sources = getattr(ext, "cuda_sources", None)
        if sources:
            archs = os.environ.get("CAFFE_MINING_CUDA_ARCHS", "80 90").split()
            flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", *[f"-I{d}" for d in ext.cuda_include_dirs]]
            for arch in archs:
                flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
            flags += ["-gencode", f"arch=compute_{archs[-1]},code=compute_{archs[-1]}"]
            objects = [os.path.join(self.build_temp, "cuda", source.replace("/", "_") + ".o") for source in sources]
            stale = [(source, obj) for source, obj in zip(sources, objects)
                     if self.force or not os.path.exists(obj) or newer_than_object(source, obj)]

            def compile_one(job):
                source, obj = job
                os.makedirs(os.path.dirname(obj), exist_ok=True)
                print(f"nvcc {source}", flush=True)
                subprocess.check_call([ext.nvcc, *flags, "-c", source, "-o", obj])

            with ThreadPoolExecutor(max_workers=max(1, min(len(stale), os.cpu_count() or 1))) as pool:
                list(pool.map(compile_one, stale))  # list(): re-raises a failed compile
            ext.extra_objects = objects
        super().build_extension(ext)


def newer_than_object(source, obj):
    """Whether the source, a header of the core or a shared header of the bindings changed after obj was built (the
    .cu files include no loss's binding header)."""
    inputs = [source, *core_headers, *glob(f"{PACKAGE}/*.hpp")]
    return max(os.path.getmtime(p) for p in inputs) > os.path.getmtime(obj)


extensions = [extension]
cuda_mode = os.environ.get("CAFFE_MINING_CUDA", "auto")
if cuda_mode not in ("auto", "0", "1"):
    raise SystemExit(f"setup.py: CAFFE_MINING_CUDA must be auto, 0 or 1. Got: {cuda_mode!r}")
nvcc = find_nvcc() if cuda_mode != "0" else None
if nvcc:
    extensions.append(cuda_extension(nvcc))
elif cuda_mode == "1":
    raise SystemExit("setup.py: CAFFE_MINING_CUDA=1 but no nvcc found (PATH, CUDA_HOME, /usr/local/cuda)")

setup(
    name="caffe-mining",
    version="0.1.0",
    description="Mining contrastive and HardNet losses for Caffe: bindings, NumPy reference, pycaffe layers, "
                "gradient check",
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"caffe_mining": ["py.typed"]},  # the .pyi stubs: written by BuildExt
    ext_modules=extensions,
    cmdclass={"build_ext": BuildExt},
    python_requires=">=3.8",
    install_requires=["numpy"],
    extras_require={"test": ["pytest", "hypothesis"]},
    entry_points={"console_scripts": ["caffe-mining-gradcheck = caffe_mining.gradcheck:main"]},
    zip_safe=False,
)
