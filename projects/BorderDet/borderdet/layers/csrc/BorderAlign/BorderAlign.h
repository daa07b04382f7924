// BorderAlign (BorderDet, Qiu et al. ECCV 2020): for every location, the max over pool_size + 1
// bilinear samples along each border of its box.
//   input  (N, 4C, H, W): channel group k in [kC, (k+1)C) is pooled along border k;
//   boxes  (N, H*W, 4):   (x1, y1, x2, y2) in feature-map coordinates, one per location;
//   output (N, 4C, H, W) and argmax (N, 4C, H, W) (int32: index of the winning sample).
// Border k: 0 top, from (x1, y1) in +x; 1 left, from (x1, y1) in +y; 2 bottom, from (x2, y2)
// in -x; 3 right, from (x2, y2) in -y (the official group order). Sample i of a border lies at
// start + i * (length / pool_size) * direction.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

std::tuple<at::Tensor, at::Tensor> border_align_forward_cpu(
    const at::Tensor& input, const at::Tensor& boxes, int64_t pool_size);
at::Tensor border_align_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& boxes, const at::Tensor& argmax,
    int64_t pool_size);

#ifdef WITH_CUDA
std::tuple<at::Tensor, at::Tensor> border_align_forward_cuda(
    const at::Tensor& input, const at::Tensor& boxes, int64_t pool_size);
at::Tensor border_align_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& boxes, const at::Tensor& argmax,
    int64_t pool_size);
#endif

inline void border_align_check(const at::Tensor& input, const at::Tensor& boxes, int64_t pool_size) {
  TORCH_CHECK(input.dim() == 4 && input.size(1) % 4 == 0,
              "BorderAlign: input must be (N, 4C, H, W), got ", input.sizes());
  TORCH_CHECK(boxes.dim() == 3 && boxes.size(0) == input.size(0) &&
                  boxes.size(1) == input.size(2) * input.size(3) && boxes.size(2) == 4,
              "BorderAlign: boxes must be (N, H*W, 4), got ", boxes.sizes());
  TORCH_CHECK(boxes.scalar_type() == input.scalar_type(), "BorderAlign: boxes and input dtypes differ");
  TORCH_CHECK(boxes.device() == input.device(), "BorderAlign: boxes and input devices differ");
  TORCH_CHECK(pool_size > 0, "BorderAlign: pool_size must be positive");
}

inline std::tuple<at::Tensor, at::Tensor> border_align_forward(
    const at::Tensor& input, const at::Tensor& boxes, int64_t pool_size) {
  border_align_check(input, boxes, pool_size);
  if (input.is_cuda()) {
#ifdef WITH_CUDA
    return border_align_forward_cuda(input.contiguous(), boxes.contiguous(), pool_size);
#else
    TORCH_CHECK(false, "BorderAlign: this build has no CUDA kernel (rebuild with nvcc present)");
#endif
  }
  return border_align_forward_cpu(input.contiguous(), boxes.contiguous(), pool_size);
}

inline at::Tensor border_align_backward(
    const at::Tensor& grad_output, const at::Tensor& boxes, const at::Tensor& argmax,
    int64_t pool_size) {
  if (grad_output.is_cuda()) {
#ifdef WITH_CUDA
    return border_align_backward_cuda(grad_output.contiguous(), boxes.contiguous(), argmax, pool_size);
#else
    TORCH_CHECK(false, "BorderAlign: this build has no CUDA kernel (rebuild with nvcc present)");
#endif
  }
  return border_align_backward_cpu(grad_output.contiguous(), boxes.contiguous(), argmax, pool_size);
}
