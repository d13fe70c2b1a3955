"""Independent reference for the RDP accountant of DP-SGD (src/train/rdp.ts).

Where attn sums the binomial / erfc series of Mironov, Talwar and Zhang (2019), this script
integrates the definition numerically at 30 significant digits with mpmath:

    A_alpha = integral of N(z; 0, s^2) * ((1 - q) + q * exp((2z - 1) / (2 s^2)))^alpha dz

(the Renyi moment of the Poisson-subsampled Gaussian against N(0, s^2)), RDP = log(A) / (alpha - 1).
The (epsilon, delta) conversions are written out again here from the papers (Mironov 2017,
Prop. 3; Balle et al. 2020, Thm. 21). Writes test/fixtures/rdp_reference.json.

    python3 tools/rdp_reference.py
"""
import json
import os

import mpmath as mp

mp.mp.dps = 30


def log_a(q, sigma, alpha):
    q, s, a = mp.mpf(q), mp.mpf(sigma), mp.mpf(alpha)

    def integrand(z):
        base = (1 - q) + q * mp.exp((2 * z - 1) / (2 * s * s))
        return mp.npdf(z, 0, s) * base ** a

    # The mass sits near 0 (the N(0, s^2) density) and, for large alpha, towards the tail where the
    # ratio grows: split the line at a few multiples of s so quad sees smooth pieces.
    pts = [-mp.inf] + [k * s for k in range(-12, 13, 2)] + [a - 10 * s, a, a + 10 * s, mp.inf]
    pts = sorted(set(pts), key=lambda v: float(v))
    return mp.log(mp.quad(integrand, pts))


_cache = {}


def rdp(q, sigma, alpha):
    key = (q, sigma, alpha)
    if key not in _cache:
        _cache[key] = _rdp(q, sigma, alpha)
    return _cache[key]


def _rdp(q, sigma, alpha):
    if q == 0:
        return 0.0
    if q == 1:
        return alpha / (2 * sigma * sigma)
    return float(log_a(q, sigma, alpha) / (alpha - 1))


def eps_classic(r, a, delta):
    return r + mp.log(1 / mp.mpf(delta)) / (a - 1)


def eps_improved(r, a, delta):
    a = mp.mpf(a)
    return r + mp.log((a - 1) / a) - (mp.log(delta) + mp.log(a)) / (a - 1)


OPACUS_ORDERS = [1 + x / 10 for x in range(1, 100)] + list(range(12, 64))
TF_ORDERS = [1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5] + list(range(5, 64)) + [128, 256, 512]


def epsilon(q, sigma, steps, delta, orders, conv):
    f = eps_classic if conv == 'classic' else eps_improved
    best = (mp.inf, None)
    for a in orders:
        e = f(steps * rdp(q, sigma, a), a, delta)
        if e < best[0]:
            best = (e, a)
    return float(max(best[0], 0)), best[1]


def main():
    rdp_cases = []
    for q in [0.001, 256 / 60000, 0.01, 0.1]:
        for sigma in [0.6, 1.12, 4.0]:
            for a in [1.5, 2, 2.5, 4.7, 8, 32.5, 63, 256]:
                rdp_cases.append({'q': q, 'sigma': sigma, 'alpha': a, 'rdp': rdp(q, sigma, a)})
                print('rdp', q, sigma, a, rdp_cases[-1]['rdp'], flush=True)
    eps_cases = []
    # The three settings of TensorFlow Privacy's tutorials/README.md table (N = 60000, batch 256,
    # steps = floor(epochs * N / batch)) on its 2019 order grid, and Abadi et al.'s q = 0.01, sigma = 4
    # on Opacus's grid.
    settings = [(256 / 60000, 1.12, 14062, 1e-5, 'tf2019'), (256 / 60000, 0.6, 7031, 1e-5, 'tf2019'), (256 / 60000, 1.2, 2343, 1e-5, 'tf2019'),
                (0.01, 4.0, 10000, 1e-5, 'opacus')]
    for (q, sigma, steps, delta, grid_name) in settings:
        grid = OPACUS_ORDERS if grid_name == 'opacus' else TF_ORDERS
        if True:
            for conv in ['classic', 'improved']:
                e, a = epsilon(q, sigma, steps, delta, grid, conv)
                eps_cases.append({'q': q, 'sigma': sigma, 'steps': steps, 'delta': delta, 'orders': grid_name, 'conversion': conv, 'epsilon': e, 'order': a})
                print('eps', eps_cases[-1], flush=True)
    out = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'rdp_reference.json')
    with open(out, 'w') as f:
        json.dump({'source': 'tools/rdp_reference.py (mpmath quadrature of the Renyi moment, 30 digits)', 'rdp': rdp_cases, 'epsilon': eps_cases}, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
