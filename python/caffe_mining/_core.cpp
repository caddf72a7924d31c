// caffe_mining._core: Python bindings of the Caffe-free core (caffe_layers/src/caffe/mining/*.cpp, CPU path).
//
// The module is the sum of its losses' binding files, bindings/<loss>.cpp, each registered by itself
// (bindings/registry.hpp); they share _core.hpp (array conversion, host checks) and _binding_checks.hpp.
// They only bind: they check arguments, convert arrays, allocate the core's buffers and call the core.
// The math lives in the core, the same code the Caffe layers run.
//
// Array rules (the same for every function):
//   - features: arrays (or array-likes such as nested lists, converted by NumPy) of float32 or float64,
//     shape (N, D) or Caffe's (N, D, 1, 1); the dtype selects the core's Dtype
//     (float32 stays float32, never upcast); the second feature array must have the same dtype and shape.
//     Other dtypes raise TypeError.
//   - any memory layout: non-C-contiguous arrays are copied to a C-contiguous buffer first.
//   - labels / uniforms: any real array with N elements, converted to the features' dtype.
//   - non-finite features raise ValueError unless check_finite=False (then NaN propagates as the core defines:
//     a NaN contrastive pair is the hardest of its kind and makes the loss NaN).
//   - gradients come back in the features' shape and dtype.
#include <pybind11/pybind11.h>

#include "bindings/registry.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "Bindings of the Caffe-free caffe-mining core (CPU path): the math the Caffe layers run.";
  caffe_mining_bindings::bind_registered(m);
}
