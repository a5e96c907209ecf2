#!/usr/bin/env python3
"""Vectorised numpy reference of the exact nearest-collection distances, for benches/knn.rs.

For each layer and each unordered pair of cases (a, b), ONE BLAS matmul of the valid float32 tokens gives
the squared distances |u|^2 + |w|^2 - 2 u.w; the row minima (a's tokens against b) and the column minima
(b's tokens against a) are kept, as the Rust kernel does. Prints seconds, GFLOP/s (2·D flops per token pair)
and the peak resident memory of this process.
"""
import glob
import os
import sys
import time

import numpy as np


def main():
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.tokens.npz")))
    data = [np.load(f) for f in files]
    tokens = [d["tokens"] for d in data]
    valid = [d["valid"].astype(bool) for d in data]
    n = len(files)
    n_layers, _, dim = tokens[0].shape
    flops = 0.0
    start = time.perf_counter()
    for layer in range(n_layers):
        x = [np.ascontiguousarray(t[layer][v]) for t, v in zip(tokens, valid)]
        norms = [np.einsum("ij,ij->i", xi, xi) for xi in x]
        mins = [np.full((xi.shape[0], n), np.inf, np.float32) for xi in x]
        for a in range(n):
            for b in range(a + 1, n):
                d2 = norms[a][:, None] + norms[b][None, :] - 2.0 * (x[a] @ x[b].T)
                mins[a][:, b] = d2.min(axis=1)
                mins[b][:, a] = d2.min(axis=0)
                flops += 2.0 * dim * x[a].shape[0] * x[b].shape[0]
        for mi in mins:
            np.sqrt(np.maximum(mi, 0, out=mi), out=mi)
    secs = time.perf_counter() - start
    print(f"seconds: {secs:.4f}")
    print(f"gflops: {flops / secs / 1e9:.2f}")
    # VmHWM of this process's own address space (ru_maxrss would include the parent's peak: Linux keeps
    # it across execve).
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(f"peak_mib: {hwm / 1024:.1f}")


if __name__ == "__main__":
    main()
