#include <ATen/Parallel.h>

#include "BorderAlign.h"
#include "border_align_common.h"

std::tuple<at::Tensor, at::Tensor> border_align_forward_cpu(
    const at::Tensor& input, const at::Tensor& boxes, int64_t pool_size) {
  const int64_t N = input.size(0), C4 = input.size(1), H = input.size(2), W = input.size(3);
  const int64_t C = C4 / 4, HW = H * W;
  auto output = at::empty_like(input);
  auto argmax = at::empty(input.sizes(), input.options().dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "border_align_forward_cpu", [&] {
    const scalar_t* in = input.data_ptr<scalar_t>();
    const scalar_t* bx = boxes.data_ptr<scalar_t>();
    scalar_t* out = output.data_ptr<scalar_t>();
    int* arg = argmax.data_ptr<int>();
    // One (image, channel) plane per task: a plane is read and written by one thread only.
    at::parallel_for(0, N * C4, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / C4;
        const int k = (int)((plane % C4) / C);
        const scalar_t* src = in + plane * HW;
        for (int64_t p = 0; p < HW; ++p) {
          const scalar_t* box = bx + (n * HW + p) * 4;
          scalar_t best = 0, x, y;
          int best_i = 0;
          for (int i = 0; i <= pool_size; ++i) {
            border_align_point(box, k, i, (int)pool_size, &y, &x);
            const scalar_t v = border_align_sample(src, (int)H, (int)W, y, x);
            if (i == 0 || v > best) {
              best = v;
              best_i = i;
            }
          }
          out[plane * HW + p] = best;
          arg[plane * HW + p] = best_i;
        }
      }
    });
  });
  return {output, argmax};
}

at::Tensor border_align_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& boxes, const at::Tensor& argmax,
    int64_t pool_size) {
  const int64_t C4 = grad_output.size(1), H = grad_output.size(2), W = grad_output.size(3);
  const int64_t C = C4 / 4, HW = H * W, planes = grad_output.size(0) * C4;
  auto grad_input = at::zeros_like(grad_output);
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "border_align_backward_cpu", [&] {
    const scalar_t* go = grad_output.data_ptr<scalar_t>();
    const scalar_t* bx = boxes.data_ptr<scalar_t>();
    const int* arg = argmax.data_ptr<int>();
    scalar_t* gi = grad_input.data_ptr<scalar_t>();
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        const int64_t n = plane / C4;
        const int k = (int)((plane % C4) / C);
        scalar_t* dst = gi + plane * HW;
        for (int64_t p = 0; p < HW; ++p) {
          scalar_t x, y, w[4];
          int idx[4];
          border_align_point(bx + (n * HW + p) * 4, k, arg[plane * HW + p], (int)pool_size, &y, &x);
          if (!border_align_corners((int)H, (int)W, y, x, idx, w)) continue;
          const scalar_t g = go[plane * HW + p];
          for (int j = 0; j < 4; ++j) dst[idx[j]] += w[j] * g;
        }
      }
    });
  });
  return grad_input;
}
