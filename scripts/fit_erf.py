"""Fits the erf/erfc polynomials used by shaders/activation.wgsl and prints them as WGSL.

Three pieces, each a polynomial fitted by iteratively reweighted least squares on Chebyshev
nodes (close to minimax), against mpmath at 40 digits:

    |x| < 1:      erf(x)  = x + x * A(x^2),                  A(t) = erf(sqrt t)/sqrt t - 1
    1 <= z < 2.5: erfc(z) = exp(-z^2) * B(1/z - 0.7),        B ~ erfcx(z) = erfc(z) exp(z^2)
    z >= 2.5:     erfc(z) = exp(-z^2) * (1/(z sqrt pi)) * C(1/z^2),  C ~ sqrt(pi) z erfcx(z)

Writing erf(x) = x + x*A keeps the rounding of the polynomial (|A| < 0.16) away from the
leading term, so the result is within about one f32 ulp. Run: python scripts/fit_erf.py
"""

import mpmath as mp
import numpy as np

mp.mp.dps = 40
B_SPLIT = 2.5
B_CENTRE = 0.5 * (1.0 / B_SPLIT + 1.0)


def fit(fun, lo, hi, degree, weight=lambda v: 1, nodes=2000):
    k = np.arange(nodes)
    v = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos(np.pi * (k + 0.5) / nodes)
    y = np.array([float(fun(mp.mpf(float(t)))) for t in v])
    w = np.array([float(weight(mp.mpf(float(t)))) for t in v])
    a = np.vander(v, degree + 1, increasing=True)
    c, *_ = np.linalg.lstsq(a / w[:, None], y / w, rcond=None)
    for _ in range(30):  # Lawson-style reweighting towards the minimax fit
        r = np.abs((a @ c - y) / w)
        w2 = w / np.sqrt(r / r.max() + 1e-3)
        c, *_ = np.linalg.lstsq(a / w2[:, None], y / w2, rcond=None)
    return c, np.abs((a @ c - y) / w).max()


def erfcx(z):
    return mp.erfc(z) * mp.exp(z * z)


def a_target(t):
    if t == 0:
        return 2 / mp.sqrt(mp.pi) - 1
    x = mp.sqrt(t)
    return mp.erf(x) / x - 1


def c_target(u):
    if u == 0:
        return mp.mpf(1)
    z = 1 / mp.sqrt(u)
    return mp.sqrt(mp.pi) * z * erfcx(z)


def main():
    pieces = [
        ("ERF_A", fit(a_target, 0.0, 1.0, 7)),
        (
            "ERFC_B",
            fit(
                lambda s: erfcx(1 / (s + B_CENTRE)),
                1 / B_SPLIT - B_CENTRE,
                1 - B_CENTRE,
                8,
                lambda s: erfcx(1 / (s + B_CENTRE)),
            ),
        ),
        ("ERFC_C", fit(c_target, 0.0, 1 / B_SPLIT**2, 7)),
    ]
    for name, (coefs, err) in pieces:
        print(f"// {name}: max fit error {err:.2e}")
        for i, c in enumerate(coefs):
            print(f"const {name}{i}: f32 = {np.float32(c)!r};".replace("np.float32(", "").replace(")", ""))


if __name__ == "__main__":
    main()
