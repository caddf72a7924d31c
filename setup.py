"""Builds the Python package caffe_mining and its extension caffe_mining._core (no Caffe needed).

The extension compiles the Caffe-free core's CPU sources (caffe_layers/src/caffe/mining/*.cpp, the same files
libcaffe compiles for the MiningContrastiveLoss and HardNetLoss layers) with the module file
python/caffe_mining/_core.cpp, and links OpenBLAS for cblas (Debian: libopenblas-dev).

    pip install .        # or, for development: pip install -e .
"""
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

core_sources = sorted(glob("caffe_layers/src/caffe/mining/*.cpp"))
if not core_sources:
    raise SystemExit("setup.py: no core sources in caffe_layers/src/caffe/mining/; run it from the repository root")

extension = Pybind11Extension(
    "caffe_mining._core",
    sorted(["python/caffe_mining/_core.cpp", *core_sources]),
    include_dirs=["caffe_layers/include"],
    libraries=["openblas"],
    cxx_std=17,
)

setup(
    name="caffe-mining",
    version="0.1.0",
    description="Mining contrastive and HardNet losses for Caffe: bindings, NumPy reference, pycaffe layers, "
                "gradient check",
    package_dir={"": "python"},
    packages=find_packages("python"),
    package_data={"caffe_mining": ["_core.pyi", "py.typed"]},
    ext_modules=[extension],
    cmdclass={"build_ext": build_ext},
    python_requires=">=3.8",
    install_requires=["numpy"],
    extras_require={"test": ["pytest", "hypothesis"]},
    entry_points={"console_scripts": ["caffe-mining-gradcheck = caffe_mining.gradcheck:main"]},
    zip_safe=False,
)
