"""The superbuild compiles Caffe through ccache, and a second build folder of the same layout reuses the first one's
objects. Checked on a tiny stand-in for Caffe (one C++ file, with CUDA one .cu file compiled the way Caffe does, by
FindCUDA's cuda_add_library; the targets the superbuild asks for), built by the real CMakeLists.txt into two
folders of one cache: the second build must be all ccache hits.
"""
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_FIXTURE = os.path.join(REPO, "tests", "fixtures", "proto_patcher", "caffe_subset.proto")

FAKE_CAFFE_CMAKE = """\
cmake_minimum_required(VERSION 3.18)
project(Caffe CXX)
add_library(caffe STATIC src/caffe/one.cpp)
target_include_directories(caffe PRIVATE ${CMAKE_SOURCE_DIR}/include)
add_custom_target(caffe.bin)
add_custom_target(pycaffe)
add_custom_target(test.testbin)
file(WRITE ${CMAKE_BINARY_DIR}/launcher.txt "${CMAKE_CXX_COMPILER_LAUNCHER}")
if(NOT CPU_ONLY)  # as Caffe's cmake/Cuda.cmake: FindCUDA and its nvcc commands
  find_package(CUDA REQUIRED)
  list(APPEND CUDA_NVCC_FLAGS -gencode arch=compute_80,code=sm_80)
  cuda_add_library(caffe_cu STATIC src/caffe/k.cu)
  add_dependencies(caffe caffe_cu)
  file(WRITE ${CMAKE_BINARY_DIR}/nvcc.txt "${CUDA_NVCC_EXECUTABLE}")
endif()
"""

pytestmark = pytest.mark.skipif(not shutil.which("ccache") or not shutil.which("cmake") or not shutil.which("make"),
                                reason="needs ccache, cmake and make")


def stats(ccache_dir):
    """ccache's counters (hits, misses...) of the cache in ccache_dir."""
    out = subprocess.run(["ccache", "--print-stats"], env=dict(os.environ, CCACHE_DIR=str(ccache_dir)),
                         capture_output=True, text=True, check=True).stdout
    return {key: int(value) for key, value in (line.split("\t") for line in out.splitlines() if "\t" in line)
            if value.isdigit()}


def hits(counters):
    return counters.get("direct_cache_hit", 0) + counters.get("preprocessed_cache_hit", 0)


@pytest.fixture
def fake_caffe(tmp_path):
    source = tmp_path / "caffe"
    (source / "src/caffe/proto").mkdir(parents=True)
    shutil.copy(PROTO_FIXTURE, source / "src/caffe/proto/caffe.proto")
    (source / "include").mkdir()
    (source / "include/one.hpp").write_text("inline int one() { return 1; }\n")
    (source / "src/caffe/one.cpp").write_text('#include "one.hpp"\nint caffe_one() { return one(); }\n')
    (source / "src/caffe/k.cu").write_text("__global__ void twice(float* x) { x[threadIdx.x] *= 2; }\n")
    (source / "CMakeLists.txt").write_text(FAKE_CAFFE_CMAKE)
    return source


def superbuild(build_dir, cache, source, *options):
    env = dict(os.environ)
    env.pop("CCACHE_DIR", None)  # the launcher must bring its own
    env.pop("MAKEFLAGS", None)
    for step in (["cmake", "-S", REPO, "-B", str(build_dir), f"-DPython3_EXECUTABLE={sys.executable}",
                  f"-DCAFFE_MINING_CACHE_DIR={cache}", f"-DCAFFE_SOURCE_DIR={source}", *options],
                 ["cmake", "--build", str(build_dir)]):
        result = subprocess.run(step, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_second_build_folder_gets_ccache_hits(fake_caffe, tmp_path):
    cache = tmp_path / "cache"
    superbuild(cache / "build-a", cache, fake_caffe)
    launcher = (cache / "build-a/caffe-build/launcher.txt").read_text()
    assert launcher == str(cache / "build-a/launchers/ccache")  # one word: not split, not /usr/bin/env
    first = stats(cache / "ccache")
    assert first.get("cache_miss", 0) >= 1 and hits(first) == 0, first

    superbuild(cache / "build-b", cache, fake_caffe)
    second = stats(cache / "ccache")
    assert hits(second) >= 1 and second["cache_miss"] == first["cache_miss"], second


@pytest.mark.skipif(not (shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc")), reason="needs nvcc")
def test_cuda_build_compiles_cu_files_through_ccache(fake_caffe, tmp_path):
    cache = tmp_path / "cache"
    superbuild(cache / "build-a", cache, fake_caffe, "-DWITH_CUDA=ON")
    assert (cache / "build-a/caffe-build/nvcc.txt").read_text() == str(cache / "build-a/launchers/nvcc")
    first = stats(cache / "ccache")
    superbuild(cache / "build-b", cache, fake_caffe, "-DWITH_CUDA=ON")
    second = stats(cache / "ccache")
    assert hits(second) >= 2 and second["cache_miss"] == first["cache_miss"], second  # the .cpp and the .cu
