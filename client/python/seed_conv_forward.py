#!/usr/bin/python3
"""The seed notebook's conv forward cell (In [14]), computed by layerserve.

Builds the cell's inputs with numpy exactly as the notebook does, sends them
to the server, and checks the output against the notebook's correct_out:
a correct float64 conv gives the 2.2121e-08 the notebook printed (its
vector has 8 decimals). Exit status 0 when rel_error <= 5e-8.

    PYTHONPATH=build/client/python /usr/bin/python3 \\
        build/client/python/seed_conv_forward.py --server 127.0.0.1:50051
"""

import argparse
import sys

import numpy as np

import layerserve_client as lc

THRESHOLD = 5e-8


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051",
                        help="layerserve address, HOST:PORT")
    parser.add_argument("--impl", default="naive", choices=["naive", "fast"])
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="RPC deadline, seconds")
    args = parser.parse_args()

    x_shape = (2, 3, 4, 4)
    w_shape = (3, 3, 4, 4)
    x = np.linspace(-0.1, 0.5, num=np.prod(x_shape)).reshape(x_shape)
    w = np.linspace(-0.2, 0.3, num=np.prod(w_shape)).reshape(w_shape)
    b = np.linspace(-0.1, 0.2, num=3)
    conv_param = {"stride": 2, "pad": 1}

    try:
        with lc.Client(args.server, timeout=args.timeout) as client:
            out = client.forward("conv", {"x": x, "w": w, "b": b},
                                 impl=args.impl, conv_param=conv_param)["out"]
    except lc.LayerServeError as e:
        print(f"seed_conv_forward: {e}", file=sys.stderr)
        return 3

    correct_out = np.array([[[[-0.08759809, -0.10987781],
                              [-0.18387192, -0.2109216]],
                             [[0.21027089, 0.21661097],
                              [0.22847626, 0.23004637]],
                             [[0.50813986, 0.54309974],
                              [0.64082444, 0.67101435]]],
                            [[[-0.98053589, -1.03143541],
                              [-1.19128892, -1.24695841]],
                             [[0.69108355, 0.66880383],
                              [0.59480972, 0.56776003]],
                             [[2.36270298, 2.36904306],
                              [2.38090835, 2.38247847]]]])

    # Compare your output to ours; difference should be around 1e-8
    print("Testing conv_forward_naive")
    diff = lc.rel_error(out, correct_out)
    print("difference: ", diff)
    ok = out.shape == correct_out.shape and diff <= THRESHOLD
    print(f"{'PASS' if ok else 'FAIL'}  (difference {diff:.3g} "
          f"{'<=' if ok else '>'} {THRESHOLD:g})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
