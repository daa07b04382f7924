#include <ATen/cuda/Atomic.cuh>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "BorderAlign.h"
#include "border_align_common.h"

namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void forward_kernel(const int64_t total, const T* input, const T* boxes, T* output,
                               int* argmax, const int C, const int H, const int W,
                               const int pool_size) {
  const int64_t HW = (int64_t)H * W;
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)blockDim.x * gridDim.x) {
    const int64_t plane = index / HW, p = index % HW;
    const int64_t n = plane / (4 * C);
    const int k = (int)((plane % (4 * C)) / C);
    const T* box = boxes + (n * HW + p) * 4;
    const T* src = input + plane * HW;
    T best = 0, x, y;
    int best_i = 0;
    for (int i = 0; i <= pool_size; ++i) {
      border_align_point(box, k, i, pool_size, &y, &x);
      const T v = border_align_sample(src, H, W, y, x);
      if (i == 0 || v > best) {
        best = v;
        best_i = i;
      }
    }
    output[index] = best;
    argmax[index] = best_i;
  }
}

template <typename T>
__global__ void backward_kernel(const int64_t total, const T* grad_output, const T* boxes,
                                const int* argmax, T* grad_input, const int C, const int H,
                                const int W, const int pool_size) {
  const int64_t HW = (int64_t)H * W;
  for (int64_t index = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; index < total;
       index += (int64_t)blockDim.x * gridDim.x) {
    const int64_t plane = index / HW, p = index % HW;
    const int64_t n = plane / (4 * C);
    const int k = (int)((plane % (4 * C)) / C);
    T x, y, w[4];
    int idx[4];
    border_align_point(boxes + (n * HW + p) * 4, k, argmax[index], pool_size, &y, &x);
    if (!border_align_corners(H, W, y, x, idx, w)) continue;
    const T g = grad_output[index];
    for (int j = 0; j < 4; ++j) gpuAtomicAdd(grad_input + plane * HW + idx[j], w[j] * g);
  }
}

int blocks_for(int64_t total) {
  return (int)std::min<int64_t>((total + kThreads - 1) / kThreads, 65535);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> border_align_forward_cuda(
    const at::Tensor& input, const at::Tensor& boxes, int64_t pool_size) {
  c10::cuda::CUDAGuard guard(input.device());
  auto output = at::empty_like(input);
  auto argmax = at::empty(input.sizes(), input.options().dtype(at::kInt));
  const int64_t total = input.numel();
  if (total == 0) return {output, argmax};
  const int C = (int)(input.size(1) / 4), H = (int)input.size(2), W = (int)input.size(3);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "border_align_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, input.data_ptr<scalar_t>(), boxes.data_ptr<scalar_t>(),
        output.data_ptr<scalar_t>(), argmax.data_ptr<int>(), C, H, W, (int)pool_size);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {output, argmax};
}

at::Tensor border_align_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& boxes, const at::Tensor& argmax,
    int64_t pool_size) {
  c10::cuda::CUDAGuard guard(grad_output.device());
  auto grad_input = at::zeros_like(grad_output);
  const int64_t total = grad_output.numel();
  if (total == 0) return grad_input;
  const int C = (int)(grad_output.size(1) / 4), H = (int)grad_output.size(2),
            W = (int)grad_output.size(3);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(grad_output.scalar_type(), "border_align_backward_cuda", [&] {
    backward_kernel<scalar_t><<<blocks_for(total), kThreads, 0, stream>>>(
        total, grad_output.data_ptr<scalar_t>(), boxes.data_ptr<scalar_t>(),
        argmax.data_ptr<int>(), grad_input.data_ptr<scalar_t>(), C, H, W, (int)pool_size);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad_input;
}
