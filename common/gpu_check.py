"""``make gpu-check``: what only a CUDA machine can check. One line and exit 0 where no GPU is
visible; otherwise the tests marked ``gpu``:

- every custom CUDA kernel against its pure-PyTorch reference (forward, backward, gradcheck in
  float64); today BorderDet's BorderAlign, built on first use (needs nvcc / CUDA_HOME);
- every shipped config's small run on CUDA (``harness/config_check.py``: train, evaluate,
  ``--eval-only`` from its checkpoint), with mixed precision wherever a config enables it;
- each project's multi-GPU README command on 2 processes with NCCL (skipped with 1 GPU).
"""

import os
import sys

import torch

from common.projects import REPO


def main():
    if not torch.cuda.is_available():
        print("gpu-check: skipped, no CUDA GPU visible (torch.cuda.is_available() is False)")
        return 0
    import pytest

    print(f"gpu-check: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, "
          f"torch {torch.__version__} (CUDA {torch.version.cuda})", flush=True)
    os.chdir(REPO)
    return int(pytest.main(["-m", "gpu", "-ra", "-q"]))


if __name__ == "__main__":
    sys.exit(main())
