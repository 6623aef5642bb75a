#!/usr/bin/python3
"""How exactly this machine's LibTorch sums bfloat16 matrix products.

Multiplies random bfloat16 matrices [64, K] x [K, 256] three ways and prints each result's
largest error against the exact product (float64) of the same bfloat16 operands, relative to
the largest exact value:
  LibTorch  torch.mm on bfloat16 tensors (oneDNN on CPUs with avx512_bf16 or AMX, else
            LibTorch's own kernels);
  emulated  float32 product of the same operands rounded to bfloat16 once, which is what
            bfloat16 hardware computes and what `--precision bf16` emulates on CPUs without it.
A sum in float32 errs by about 2^-9 (the final rounding); one kept in bfloat16 by far more.

Usage: /usr/bin/python3 bench/bf16_sums.py
"""
import torch


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for k in (256, 4096, 9216):
        a = torch.randn(64, k).bfloat16()
        b = torch.randn(k, 256).bfloat16()
        exact = a.double() @ b.double()
        scale = exact.abs().max()
        ours = (a @ b).double()
        emulated = (a.float() @ b.float()).bfloat16().double()
        print(f"K = {k:5d}: LibTorch bfloat16 mm {((ours - exact).abs().max() / scale):.2e}, "
              f"emulated {((emulated - exact).abs().max() / scale):.2e} of the largest value")


if __name__ == "__main__":
    main()
