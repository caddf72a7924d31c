// How a loss's binding file joins its module with no list to edit: setup.py compiles every bindings/<loss>.cpp
// into caffe_mining._core and every bindings/<loss>_cuda.cpp into caffe_mining._core_cuda; each file defines its
// binder with
//
//   CAFFE_MINING_BINDINGS(hardnet) { m.def("hardnet_loss", ...); }
//
// which adds it to its extension's registry while the shared object loads, and the module's init (_core.cpp,
// _core_cuda.cpp) runs every registered binder in name order, so the module does not depend on the link order.
#ifndef CAFFE_MINING_PYTHON_BINDINGS_REGISTRY_HPP_
#define CAFFE_MINING_PYTHON_BINDINGS_REGISTRY_HPP_

#include <pybind11/pybind11.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

namespace caffe_mining_bindings {

using Binder = void (*)(pybind11::module_& m);

struct NamedBinder {
  std::string name;
  Binder bind;
};

/// The binders of this extension. One list per shared object: the symbol is hidden (-fvisibility=hidden), and each
/// extension links only its own binding files. Built on first use, so static initialisation order does not matter.
inline std::vector<NamedBinder>& registered_binders() {
  static std::vector<NamedBinder> binders;
  return binders;
}

/// Registers a binder when its file's statics are initialised, before the module's init function runs.
struct BinderRegistration {
  BinderRegistration(const char* name, Binder bind) { registered_binders().push_back({name, bind}); }
};

/// Runs every registered binder on the module, in name order; two binders of one name fail the import.
inline void bind_registered(pybind11::module_& m) {
  std::vector<NamedBinder> binders = registered_binders();
  std::sort(binders.begin(), binders.end(),
            [](const NamedBinder& a, const NamedBinder& b) { return a.name < b.name; });
  for (std::size_t k = 0; k < binders.size(); ++k) {
    if (k > 0 && binders[k].name == binders[k - 1].name) {
      throw std::logic_error("two binding files register the name " + binders[k].name);
    }
    binders[k].bind(m);
  }
}

}  // namespace caffe_mining_bindings

/// Defines this file's binder `name` (its body: `m.def(...)` calls on the module `m`) and registers it.
#define CAFFE_MINING_BINDINGS(name)                                                                               \
  static void bind_##name(pybind11::module_& m);                                                                 \
  static const ::caffe_mining_bindings::BinderRegistration name##_binder_registration(#name, &bind_##name);     \
  static void bind_##name(pybind11::module_& m)

#endif  // CAFFE_MINING_PYTHON_BINDINGS_REGISTRY_HPP_
