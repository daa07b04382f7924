#include <torch/extension.h>

#include "BorderAlign/BorderAlign.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("border_align_forward", &border_align_forward, "BorderAlign forward (CPU/CUDA)");
  m.def("border_align_backward", &border_align_backward, "BorderAlign backward (CPU/CUDA)");
}
