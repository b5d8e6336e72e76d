#!/usr/bin/python3
"""Tests of the Python client (client/python) against a live layerserve.

Run by ctest through with_server.sh, with PYTHONPATH set to the build tree's
client/python (the generated stubs and the module):
    python_client_test.py --server HOST:PORT --example PATH \
        [--layerserve BINARY --make_certs SCRIPT]
With --layerserve and --make_certs, SecureServerTest also starts its own
server with TLS, mutual TLS and a bearer token, on throw-away certificates.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
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

    def test_int64_labels_round_trip(self):
        y = np.array([3, 0, 2**40 + 7, -1], dtype=np.int64)
        t = lc.to_tensor(y)
        self.assertEqual(t.dtype, lc.pb.INT64)
        self.assertEqual(list(t.shape), [4])
        self.assertEqual(t.data, y.astype("<i8").tobytes())
        self.assertEqual(lc.to_tensor(y.astype(">i8")).data, t.data)
        back = lc.from_tensor(t)
        self.assertEqual(back.dtype, np.int64)
        np.testing.assert_array_equal(back, y)

    def test_other_dtypes_are_refused(self):
        with self.assertRaisesRegex(TypeError, r"a\.astype\(np\.int64\)"):
            lc.to_tensor(np.arange(3, dtype=np.int32))
        with self.assertRaises(TypeError):
            lc.to_tensor(np.ones(3, dtype=np.float16))

    def test_param_dicts(self):
        spec = lc.layer_spec("spatial_batchnorm", bn_param={"mode": "train"})
        self.assertEqual(spec.bn_param.mode, lc.pb.TRAIN)
        # Only what was given is sent: the server's defaults apply.
        self.assertFalse(spec.bn_param.HasField("eps"))
        self.assertFalse(spec.bn_param.HasField("momentum"))
        spec = lc.layer_spec("batchnorm", bn_param={"mode": "test",
                                                    "eps": 1e-3,
                                                    "momentum": 0.5})
        self.assertEqual(spec.bn_param.mode, lc.pb.TEST)
        self.assertEqual(spec.bn_param.eps, 1e-3)
        self.assertEqual(spec.bn_param.momentum, 0.5)
        spec = lc.layer_spec("dropout", dropout_param={"p": 0.8,
                                                       "mode": "train",
                                                       "seed": 7})
        self.assertEqual((spec.dropout_param.p, spec.dropout_param.mode,
                          spec.dropout_param.seed), (0.8, lc.pb.TRAIN, 7))
        with self.assertRaisesRegex(ValueError, "needs 'mode'"):
            lc.bn_param({"eps": 1e-5})
        with self.assertRaisesRegex(ValueError, "running_mean and "
                                    "running_var are inputs"):
            lc.bn_param({"mode": "train", "running_mean": np.zeros(3)})
        with self.assertRaisesRegex(ValueError, "expected 'train' or 'test'"):
            lc.bn_param({"mode": "training"})
        with self.assertRaisesRegex(ValueError, "probability of KEEPING"):
            lc.dropout_param({"mode": "train"})

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

    def test_sampled_gradcheck_reports_the_checked_indices(self):
        rng = np.random.default_rng(6)
        inputs = {"x": rng.standard_normal((2, 3, 5, 5)),
                  "w": rng.standard_normal((2, 3, 3, 3)),
                  "b": rng.standard_normal(2)}
        conv = {"stride": 1, "pad": 1}
        results = self.client.gradcheck("conv", inputs, impl="naive", seed=3,
                                        conv_param=conv, num_checks=7,
                                        details=True)
        self.assertEqual(sorted(results), ["b", "w", "x"])
        for name in ("x", "w"):
            checked = results[name]["checked_indices"]
            self.assertEqual(len(checked), 7, name)
            self.assertEqual(len(set(checked.tolist())), 7, name)
            self.assertTrue(np.all(np.diff(checked) > 0), name)  # ascending
            self.assertTrue(np.all((0 <= checked) &
                                   (checked < inputs[name].size)), name)
            worst = np.ravel_multi_index(results[name]["worst_index"],
                                         inputs[name].shape)
            self.assertIn(worst, checked.tolist(), name)
            self.assertLessEqual(results[name]["rel_error"], 1e-7, name)
        # b has 2 elements, fewer than 7: checked whole.
        self.assertEqual(len(results["b"]["checked_indices"]), 0)
        # The same seed draws the same elements.
        again = self.client.gradcheck("conv", inputs, impl="naive", seed=3,
                                      conv_param=conv, num_checks=7,
                                      details=True)
        np.testing.assert_array_equal(again["x"]["checked_indices"],
                                      results["x"]["checked_indices"])
        # Without details: just the errors, as before.
        errors = self.client.gradcheck("conv", inputs, impl="naive",
                                       conv_param=conv, num_checks=7)
        self.assertEqual(sorted(errors), ["b", "w", "x"])

    def test_compare(self):
        x = np.random.default_rng(2).standard_normal((2, 3, 8, 8))
        r = self.client.compare("max_pool", {"x": x}, repeats=1,
                                pool_param={"pool_height": 2,
                                            "pool_width": 2, "stride": 2})
        self.assertEqual(r.output_rel_error, 0.0)
        self.assertEqual(r.grad_rel_errors["dx"], 0.0)

    def test_softmax_loss_with_int64_labels(self):
        rng = np.random.default_rng(3)
        x = rng.standard_normal((8, 5))
        y = rng.integers(0, 5, size=8)  # numpy's default integer: int64
        self.assertEqual(y.dtype, np.int64)
        out = self.client.forward("softmax_loss", {"x": x, "y": y})
        self.assertEqual(sorted(out), ["loss"])
        self.assertEqual(out["loss"].shape, (1,))
        # The course's softmax_loss, in numpy.
        shifted = x - x.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1,
                                                          keepdims=True))
        want = -log_probs[np.arange(8), y].mean()
        self.assertAlmostEqual(out["loss"][0], want, delta=1e-12)

        dx = self.client.backward("softmax_loss", {"x": x, "y": y},
                                  np.ones(1))["dx"]
        want_dx = np.exp(log_probs)
        want_dx[np.arange(8), y] -= 1
        np.testing.assert_allclose(dx, want_dx / 8, rtol=0, atol=1e-14)

        errors = self.client.gradcheck("softmax_loss", {"x": x, "y": y},
                                       impl="naive", seed=1)
        self.assertEqual(sorted(errors), ["x"])  # labels get no gradient
        self.assertLessEqual(errors["x"], 1e-7)

        with self.assertRaises(lc.LayerServeError) as cm:
            self.client.forward("softmax_loss", {"x": x,
                                                 "y": y.astype(np.float64)})
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("must be int64", str(cm.exception))
        with self.assertRaises(lc.LayerServeError) as cm:
            self.client.forward("svm_loss", {"x": x, "y": y + 5})
        self.assertIn("out of range", str(cm.exception))

    def test_spatial_batchnorm(self):
        # The course's check: after a train-mode forward each channel has
        # mean beta and std gamma; the running statistics follow its formula.
        rng = np.random.default_rng(4)
        x = 4 * rng.standard_normal((2, 3, 4, 5)) + 10
        gamma, beta = np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0])
        rm, rv = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.5, 2.0])
        inputs = {"x": x, "gamma": gamma, "beta": beta, "running_mean": rm,
                  "running_var": rv}
        out = self.client.forward("spatial_batchnorm", inputs,
                                  bn_param={"mode": "train"})
        self.assertEqual(sorted(out), ["out", "running_mean", "running_var"])
        np.testing.assert_allclose(out["out"].mean(axis=(0, 2, 3)), beta,
                                   rtol=0, atol=1e-10)
        np.testing.assert_allclose(out["out"].std(axis=(0, 2, 3)), gamma,
                                   rtol=1e-4)
        mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
        np.testing.assert_allclose(out["running_mean"], 0.9 * rm + 0.1 * mean,
                                   rtol=1e-13)
        np.testing.assert_allclose(out["running_var"], 0.9 * rv + 0.1 * var,
                                   rtol=1e-13)
        out = self.client.forward("spatial_batchnorm", inputs,
                                  bn_param={"mode": "train", "momentum": 0.5})
        np.testing.assert_allclose(out["running_mean"], 0.5 * rm + 0.5 * mean,
                                   rtol=1e-13)

        # Test mode normalizes with the running statistics.
        out = self.client.forward("spatial_batchnorm", inputs,
                                  bn_param={"mode": "test", "eps": 1e-3})
        c = (slice(None), None, None)
        want = (gamma[c] * (x - rm[c]) / np.sqrt(rv[c] + 1e-3) + beta[c])
        np.testing.assert_allclose(out["out"], want, rtol=1e-12)

        # The course's gradient check, float64.
        inputs["x"] = 5 * rng.standard_normal((2, 3, 4, 5)) + 12
        inputs["gamma"] = rng.standard_normal(3)
        inputs["beta"] = rng.standard_normal(3)
        errors = self.client.gradcheck(
            "spatial_batchnorm", inputs,
            dout=rng.standard_normal((2, 3, 4, 5)), seed=2,
            bn_param={"mode": "train"})
        self.assertEqual(sorted(errors), ["beta", "gamma", "x"])
        for name, e in errors.items():
            self.assertLessEqual(e, 1e-5, name)

        with self.assertRaises(lc.LayerServeError) as cm:
            self.client.forward("spatial_batchnorm", inputs)
        self.assertEqual(cm.exception.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("bn_param", str(cm.exception))

    def test_dropout_keeps_with_probability_p(self):
        x = np.random.default_rng(5).standard_normal((4, 50)) + 3
        param = {"p": 0.25, "mode": "train", "seed": 9}
        out = self.client.forward("dropout", {"x": x},
                                  dropout_param=param)["out"]
        kept = out != 0
        np.testing.assert_allclose(out[kept], x[kept] / 0.25, rtol=1e-15)
        self.assertTrue(0.1 < kept.mean() < 0.4, kept.mean())
        dx = self.client.backward("dropout", {"x": x}, np.ones_like(x),
                                  dropout_param=param)["dx"]
        np.testing.assert_array_equal(dx != 0, kept)  # the same mask
        out = self.client.forward("dropout", {"x": x},
                                  dropout_param={"p": 0.25, "mode": "test"})
        np.testing.assert_array_equal(out["out"], x)

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


TOKEN = "py-t0ken_0123456789"


class SecureServerTest(unittest.TestCase):
    """TLS, mutual TLS and a bearer token against a server of its own."""

    @classmethod
    def setUpClass(cls):
        if not ARGS.layerserve or not ARGS.make_certs:
            raise unittest.SkipTest("needs --layerserve and --make_certs")
        cls.dir = tempfile.mkdtemp(prefix="layerserve-py-tls-")
        subprocess.run(["bash", ARGS.make_certs, cls.dir], check=True,
                       timeout=60)
        with open(cls.path("token"), "w") as f:
            f.write(f"\n {TOKEN}  \n")  # the server trims it
        cls.log = open(cls.path("log"), "w")
        cls.server = subprocess.Popen(
            [ARGS.layerserve, "--address=127.0.0.1:0",
             "--tls_cert=" + cls.path("server.pem"),
             "--tls_key=" + cls.path("server.key"),
             "--tls_client_ca=" + cls.path("ca.pem"),
             "--auth_token_file=" + cls.path("token")],
            stdout=subprocess.PIPE, stderr=cls.log, text=True)
        line = cls.server.stdout.readline().strip()
        if not line.startswith("listening on 127.0.0.1:"):
            cls.tearDownClass()
            raise AssertionError(f"layerserve said {line!r}")
        cls.port = line.rsplit(":", 1)[1]

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=60)
        cls.server.stdout.close()
        cls.log.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    @classmethod
    def path(cls, name):
        return os.path.join(cls.dir, name)

    def client(self, host="localhost", **kwargs):
        return lc.Client(f"{host}:{self.port}", timeout=20, **kwargs)

    def full(self, **overrides):
        """Keyword arguments with everything right, then `overrides`."""
        kwargs = {"tls_ca": self.path("ca.pem"),
                  "tls_cert": self.path("client.pem"),
                  "tls_key": self.path("client.key"), "auth_token": TOKEN}
        kwargs.update(overrides)
        return {k: v for k, v in kwargs.items() if v is not None}

    def relu(self, client):
        x = np.array([-1.0, 0.5, 2.0])
        with client as c:
            return c.forward("relu", {"x": x})["out"]

    def assert_refused(self, code, **kwargs):
        with self.assertRaises(lc.LayerServeError) as cm:
            self.relu(self.client(**kwargs))
        self.assertEqual(cm.exception.code, code, str(cm.exception))

    def test_everything_right(self):
        np.testing.assert_array_equal(self.relu(self.client(**self.full())),
                                      [0.0, 0.5, 2.0])
        # PEM text instead of paths, and an IP address with the name the
        # certificate is for.
        with open(self.path("ca.pem")) as f:
            ca = f.read()
        with open(self.path("client.pem"), "rb") as f:
            cert = f.read()
        out = self.relu(self.client(host="127.0.0.1", **self.full(
            tls_ca=ca, tls_cert=cert, tls_server_name="localhost")))
        np.testing.assert_array_equal(out, [0.0, 0.5, 2.0])

    def test_sampled_gradcheck_over_tls(self):
        rng = np.random.default_rng(7)
        x = rng.standard_normal((4, 10))
        with self.client(**self.full()) as c:
            results = c.gradcheck("affine", {"x": x,
                                             "w": rng.standard_normal((10, 3)),
                                             "b": rng.standard_normal(3)},
                                  num_checks=5, seed=1, details=True)
        self.assertEqual(len(results["x"]["checked_indices"]), 5)
        self.assertEqual(len(results["w"]["checked_indices"]), 5)
        self.assertEqual(len(results["b"]["checked_indices"]), 0)  # 3 <= 5

    def test_token_required(self):
        self.assert_refused(grpc.StatusCode.UNAUTHENTICATED,
                            **self.full(auth_token=None))
        self.assert_refused(grpc.StatusCode.UNAUTHENTICATED,
                            **self.full(auth_token=TOKEN + "x"))
        with self.assertRaises(lc.LayerServeError) as cm:
            self.relu(self.client(**self.full(auth_token="wrong")))
        self.assertNotIn("wrong", str(cm.exception))

    def test_tls_and_client_certificate_required(self):
        # Plaintext to a TLS server.
        self.assert_refused(grpc.StatusCode.UNAVAILABLE, auth_token=TOKEN)
        # A CA that did not sign the server's certificate.
        self.assert_refused(grpc.StatusCode.UNAVAILABLE,
                            **self.full(tls_ca=self.path("rogue_ca.pem")))
        # No client certificate, or one from a CA the server does not trust.
        self.assert_refused(grpc.StatusCode.UNAVAILABLE,
                            **self.full(tls_cert=None, tls_key=None))
        self.assert_refused(
            grpc.StatusCode.UNAVAILABLE,
            **self.full(tls_cert=self.path("rogue_client.pem"),
                        tls_key=self.path("rogue_client.key")))
        # A name the certificate is not for.
        self.assert_refused(grpc.StatusCode.UNAVAILABLE,
                            **self.full(tls_server_name="other.example"))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "give both"):
            lc.Client("localhost:1", tls_cert=self.path("client.pem"))
        with self.assertRaisesRegex(ValueError, "tls_ca: cannot read"):
            lc.Client("localhost:1", tls_ca=self.path("missing.pem"))
        with self.assertRaisesRegex(ValueError, "printable ASCII") as cm:
            lc.Client("localhost:1", auth_token="two words")
        self.assertNotIn("two words", str(cm.exception))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--example", required=True)
    parser.add_argument("--layerserve")
    parser.add_argument("--make_certs")
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
