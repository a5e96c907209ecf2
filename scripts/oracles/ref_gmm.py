#!/usr/bin/env python3
"""numpy/scipy reference for the GMM pseudo-mask threshold (ALGORITHM.md §9).

Usage: ref_gmm.py IN.npz OUT.npz

Input keys per case k: values_k [n] float32, params_k [2] float64 = (q_tr, alpha_tail).
Output keys per case: tau_k [1], components_k [1], means_k / stds_k / weights_k [K] (sorted by mean),
bic_k [2] (K = 1, K = 2), truncation_k [1].

Definition (the contract of src/eval/gmm.rs): float64 throughout; truncation = np.quantile(values, q_tr)
(numpy's default linear method); F = values <= truncation; EM for K = 1 (initial mean = median of F) and K = 2
(initial means = 25th and 75th percentiles of F), equal weights, initial variances = np.var(F) floored at 1e-6;
per iteration an E-step (scipy.stats.norm.logpdf + scipy.special.logsumexp, mean log-likelihood) then an
M-step (variance floored at 1e-6; a component with zero responsibility keeps its mean and variance, weight 0);
stop after iteration i >= 2 when |L_i - L_{i-1}| < 1e-3, at most 100 iterations; logL = total log-likelihood
under the final parameters; BIC = -2 logL + (3K - 1) ln|F|, a tie goes to K = 1;
tau = mu + norm.ppf(1 - alpha) * sigma of the component with the largest mean.
"""
import sys

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

FLOOR = 1e-6


def loglik(x, w, mu, var):
    with np.errstate(divide="ignore"):
        lp = np.log(w)[None, :] + norm.logpdf(x[:, None], mu[None, :], np.sqrt(var)[None, :])
    ll = logsumexp(lp, axis=1)
    return ll, lp


def em(x, mu0):
    k = len(mu0)
    w = np.full(k, 1.0 / k)
    mu = np.array(mu0, dtype=np.float64)
    var = np.full(k, max(np.var(x), FLOOR))
    prev = None
    for _ in range(100):
        ll, lp = loglik(x, w, mu, var)
        mean_ll = ll.mean()
        resp = np.exp(lp - ll[:, None])
        nk = resp.sum(axis=0)
        w = nk / x.size
        live = nk > 0
        safe = np.where(live, nk, 1.0)
        new_mu = (resp * x[:, None]).sum(axis=0) / safe
        new_var = (resp * (x[:, None] - new_mu[None, :]) ** 2).sum(axis=0) / safe
        mu = np.where(live, new_mu, mu)
        var = np.where(live, np.maximum(new_var, FLOOR), var)
        if prev is not None and abs(mean_ll - prev) < 1e-3:
            break
        prev = mean_ll
    return w, mu, var, loglik(x, w, mu, var)[0].sum()


def threshold(values, q_tr, alpha):
    v = values.astype(np.float64)
    trunc = np.quantile(v, q_tr)
    f = v[v <= trunc]
    fits = [em(f, [np.quantile(f, 0.5)]), em(f, np.quantile(f, [0.25, 0.75]))]
    bic = [-2 * fit[3] + (3 * k - 1) * np.log(f.size) for k, fit in zip((1, 2), fits)]
    w, mu, var, _ = fits[1] if bic[1] < bic[0] else fits[0]
    order = np.argsort(mu, kind="stable")
    w, mu, sd = w[order], mu[order], np.sqrt(var[order])
    return {
        "tau": np.array([mu[-1] + norm.ppf(1 - alpha) * sd[-1]]),
        "components": np.array([float(mu.size)]),
        "means": mu,
        "stds": sd,
        "weights": w,
        "bic": np.array(bic),
        "truncation": np.array([trunc]),
    }


def main():
    d = np.load(sys.argv[1])
    out = {}
    for key in d.files:
        if key.startswith("values_"):
            k = key[len("values_"):]
            q_tr, alpha = d["params_" + k]
            for name, arr in threshold(d[key], float(q_tr), float(alpha)).items():
                out[f"{name}_{k}"] = arr
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
