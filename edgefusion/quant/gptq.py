"""GPTQ rounding of one int8 weight matrix (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for
Generative Pre-trained Transformers", its Algorithm 1 with lazy batch updates).

Rows (input channels) are rounded in order; each row's rounding error, scaled by the inverse Hessian's Cholesky
factor, is subtracted from the rows not yet rounded, so the layer's output error ``||X (W - W_q)||`` on the inputs
``X`` that built the Hessian ``H = X^T X`` is what the rounding minimises, not each weight's own error."""

from __future__ import annotations

import numpy as np

DAMPING = 0.01  # of the mean diagonal, added to H (GPTQ's default)
BLOCK = 128  # rows per lazy batch


def gptq_round(w: np.ndarray, scale: np.ndarray, hessian: np.ndarray, transposed: bool = False) -> np.ndarray:
    """int8 values of the 2-D weight ``w`` (``[in, out]``, or ``[out, in]`` when ``transposed``) at the per-output-
    channel ``scale``, rounded by GPTQ against the input second moment ``hessian`` (``[in, in]``)."""
    W = (w.T if transposed else w).astype(np.float64).copy()
    s = scale.astype(np.float64).reshape(1, -1)
    H = hessian.astype(np.float64).copy()
    n = W.shape[0]
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0  # an input never seen non-zero: its row rounds to nearest, nothing to spread
    H[np.diag_indices(n)] += DAMPING * float(np.mean(np.diag(H)))
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper Cholesky factor of H^-1
    Q = np.zeros(W.shape, np.int8)
    for a in range(0, n, BLOCK):
        b = min(a + BLOCK, n)
        Wb, Ub = W[a:b], U[a:b, a:b]
        err = np.zeros_like(Wb)
        for i in range(b - a):
            q = np.clip(np.rint(Wb[i] / s[0]), -127, 127)
            Q[a + i] = q
            err[i] = (Wb[i] - q * s[0]) / Ub[i, i]
            Wb[i + 1:] -= np.outer(Ub[i, i + 1:], err[i])
        W[b:] -= U[a:b, b:].T @ err
    return Q.T.copy() if transposed else Q
