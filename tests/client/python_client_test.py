#!/usr/bin/python3
"""Tests of the Python client (client/python) against a live layerserve.

Run by ctest through with_server.sh, with PYTHONPATH set to the build tree's
client/python (the generated stubs and the module):
    python_client_test.py --server HOST:PORT --example PATH
"""

import argparse
import subprocess
import sys
import unittest

import grpc
import numpy as np

import layerserve_client as lc

ARGS = None


class TensorConversionTest(unittest.TestCase):

    def test_round_trip_float32_and_float64(self):
        for dtype in (np.float32, np.float64):
            a = np.arange(24, dtype=dtype).reshape(2, 3, 4) * 0.5 - 3
            t = lc.to_tensor(a)
            self.assertEqual(t.dtype, lc.pb.FLOAT32 if dtype == np.float32
                             else lc.pb.FLOAT64)
            self.assertEqual(list(t.shape), [2, 3, 4])
            self.assertEqual(len(t.data), a.size * a.itemsize)
            b = lc.from_tensor(t)
            self.assertEqual(b.dtype, np.dtype(dtype))
            np.testing.assert_array_equal(a, b)
            b[0, 0, 0] = 7  # writable copy
            self.assertNotEqual(a[0, 0, 0], 7)

    def test_wire_bytes_are_little_endian_c_order(self):
        a = np.array([[1.0, 2.0], [3.0, 4.0]])
        want = a.astype("<f8").tobytes(order="C")
        self.assertEqual(lc.to_tensor(np.asfortranarray(a)).data, want)
        self.assertEqual(lc.to_tensor(a.astype(">f8")).data, want)
        strided = np.array([[1.0, 2.0, 9.0], [3.0, 4.0, 9.0]])[:, :2]
        self.assertFalse(strided.flags["C_CONTIGUOUS"])
        self.assertEqual(lc.to_tensor(strided).data, want)

    def test_other_dtypes_are_refused(self):
        with self.assertRaises(TypeError):
            lc.to_tensor(np.arange(3, dtype=np.int32))
        with self.assertRaises(TypeError):
            lc.to_tensor(np.ones(3, dtype=np.float16))

    def test_bad_wire_tensor(self):
        t = lc.pb.Tensor(dtype=lc.pb.FLOAT64, shape=[3], data=b"\0" * 16)
        with self.assertRaisesRegex(ValueError, "needs 24 bytes, has 16"):
            lc.from_tensor(t)
        with self.assertRaises(ValueError):
            lc.from_tensor(lc.pb.Tensor(shape=[1], data=b"\0" * 8))


class LiveServerTest(unittest.TestCase):

    def setUp(self):
        self.client = lc.Client(ARGS.server, timeout=60)

    def tearDown(self):
        self.client.close()

    def test_seed_conv_forward_example(self):
        r = subprocess.run([sys.executable, ARGS.example, "--server",
                            ARGS.server], capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        lines = r.stdout.splitlines()
        self.assertEqual(lines[0], "Testing conv_forward_naive")
        self.assertTrue(lines[1].startswith("difference:  2.21214"), lines[1])
        self.assertTrue(lines[2].startswith("PASS"), lines[2])

    def test_list_layers(self):
        names = [l.name for l in self.client.list_layers()]
        self.assertEqual(names, ["conv", "max_pool", "relu", "conv_relu",
                                 "conv_relu_pool", "affine", "affine_relu",
                                 "batchnorm", "spatial_batchnorm", "dropout",
                                 "softmax_loss", "svm_loss",
                                 "conv_batchnorm_relu",
                                 "affine_batchnorm_relu"])

    def test_forward_matches_numpy(self):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
        out = self.client.forward("relu", {"x": x}, impl="naive")["out"]
        self.assertEqual(out.dtype, np.float32)
        np.testing.assert_array_equal(out, np.maximum(x, 0))

        out = self.client.forward("max_pool", {"x": x.astype(np.float64)},
                                  pool_param={"pool_height": 2,
                                              "pool_width": 2, "stride": 2})
        want = x.astype(np.float64).reshape(2, 3, 2, 2, 2, 2).max(axis=(3, 5))
        np.testing.assert_array_equal(out["out"], want)

    def test_backward_and_gradcheck(self):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((2, 3, 6, 6))
        w = rng.standard_normal((4, 3, 3, 3))
        b = rng.standard_normal(4)
        dout = rng.standard_normal((2, 4, 6, 6))
        conv = {"stride": 1, "pad": 1}
        grads = self.client.backward("conv", {"x": x, "w": w, "b": b}, dout,
                                     conv_param=conv)
        np.testing.assert_allclose(grads["db"], dout.sum(axis=(0, 2, 3)),
                                   rtol=1e-12)
        errors = self.client.gradcheck("conv", {"x": x, "w": w, "b": b},
                                       dout=dout, impl="naive",
                                       conv_param=conv)
        self.assertEqual(sorted(errors), ["b", "w", "x"])
        for e in errors.values():
            self.assertLessEqual(e, 1e-7)

    def test_compare(self):
        x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
        r = self.client.compare("max_pool", {"x": x}, repeats=1,
                                pool_param={"pool_height": 2,
                                            "pool_width": 2, "stride": 2})
        self.assertEqual(r.output_rel_error, 0.0)
        self.assertEqual(r.grad_rel_errors["dx"], 0.0)

    def test_errors_carry_the_status(self):
        with self.assertRaises(lc.LayerServeError) as cm:
            self.client.forward("softmax", {"x": np.ones(3)})
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("conv", str(cm.exception))

    def test_server_down(self):
        with lc.Client("127.0.0.1:1", timeout=5) as c:
            with self.assertRaises(lc.LayerServeError) as cm:
                c.list_layers()
        self.assertEqual(cm.exception.code, grpc.StatusCode.UNAVAILABLE)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--example", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
