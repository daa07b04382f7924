// Bilinear sampling shared by the CPU and CUDA kernels (and mirrored by border_align_reference):
// the RoIAlign convention: a point more than one pixel outside the map reads 0; within one
// pixel it is clamped onto the border.
#pragma once

#ifdef __CUDACC__
#define BA_HOST_DEVICE __host__ __device__
#else
#define BA_HOST_DEVICE
#endif

template <typename T>
BA_HOST_DEVICE inline bool border_align_corners(int height, int width, T y, T x, int* idx, T* w) {
  if (y < (T)-1.0 || y > (T)height || x < (T)-1.0 || x > (T)width) return false;
  if (y <= 0) y = 0;
  if (x <= 0) x = 0;
  int y0 = (int)y, x0 = (int)x, y1, x1;
  if (y0 >= height - 1) {
    y1 = y0 = height - 1;
    y = (T)y0;
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= width - 1) {
    x1 = x0 = width - 1;
    x = (T)x0;
  } else {
    x1 = x0 + 1;
  }
  T ly = y - y0, lx = x - x0, hy = 1 - ly, hx = 1 - lx;
  idx[0] = y0 * width + x0;
  idx[1] = y0 * width + x1;
  idx[2] = y1 * width + x0;
  idx[3] = y1 * width + x1;
  w[0] = hy * hx;
  w[1] = hy * lx;
  w[2] = ly * hx;
  w[3] = ly * lx;
  return true;
}

// Position of sample i on border k of box (x1, y1, x2, y2).
template <typename T>
BA_HOST_DEVICE inline void border_align_point(const T* box, int k, int i, int pool_size, T* y, T* x) {
  const T w = box[2] - box[0], h = box[3] - box[1];
  switch (k) {
    case 0: *x = box[0] + (w / pool_size) * i; *y = box[1]; break;   // top, +x
    case 1: *x = box[0]; *y = box[1] + (h / pool_size) * i; break;   // left, +y
    case 2: *x = box[2] - (w / pool_size) * i; *y = box[3]; break;   // bottom, -x
    default: *x = box[2]; *y = box[3] - (h / pool_size) * i; break;  // right, -y
  }
}

template <typename T>
BA_HOST_DEVICE inline T border_align_sample(const T* plane, int height, int width, T y, T x) {
  int idx[4];
  T w[4];
  if (!border_align_corners(height, width, y, x, idx, w)) return 0;
  return w[0] * plane[idx[0]] + w[1] * plane[idx[1]] + w[2] * plane[idx[2]] + w[3] * plane[idx[3]];
}
