"""A small Python client for layerserve (layerserve.v1.LayerService).

numpy arrays become ``layerserve.v1.Tensor`` messages (raw little-endian,
C-order bytes, the wire format) and back; ``Client`` wraps the generated stub
with the message-size limits and deadline the C++ client uses.

The stubs (``layerserve/v1/layer_service_pb2*.py``) are generated at build
time from proto/layerserve/v1/layer_service.proto by protoc and Debian's
grpc_python_plugin into ``<build>/client/python``, next to a copy of this
module; put that directory on PYTHONPATH:

    PYTHONPATH=build/client/python /usr/bin/python3 -c '
    import numpy as np, layerserve_client as lc
    c = lc.Client("127.0.0.1:50051")
    out = c.forward("conv", {"x": np.ones((1, 1, 3, 3)),
                             "w": np.ones((1, 1, 3, 3)), "b": np.zeros(1)},
                    conv_param={"stride": 1, "pad": 0})["out"]
    print(out)'

A secured server (TLS, mutual TLS, a bearer token):

    c = lc.Client("localhost:50051", tls_ca="ca.pem", tls_cert="client.pem",
                  tls_key="client.key", auth_token=open("token").read().strip())

Class labels (a loss's ``y``) are numpy int64 arrays and travel as INT64
tensors; batchnorm and dropout take the course's dicts:

    c.forward("softmax_loss", {"x": scores, "y": np.array([3, 0, 9])})
    c.forward("spatial_batchnorm", {"x": x, "gamma": g, "beta": b,
                                    "running_mean": rm, "running_var": rv},
              bn_param={"mode": "train"})   # -> out, running_mean, running_var
    c.forward("dropout", {"x": x}, dropout_param={"p": 0.8, "mode": "train",
                                                 "seed": 1})

Thread-safety: a Client may be shared between threads (gRPC channels and
stubs are thread-safe); the functions are pure.
"""

import grpc
import numpy as np

from layerserve.v1 import layer_service_pb2 as pb
from layerserve.v1 import layer_service_pb2_grpc as pb_grpc

__all__ = [
    "Client", "LayerServeError", "bn_param", "dropout_param", "from_tensor",
    "from_tensor_map", "layer_spec", "pb", "rel_error", "to_tensor",
    "to_tensor_map"
]

_TO_WIRE = {np.dtype("float32"): pb.FLOAT32, np.dtype("float64"): pb.FLOAT64,
            np.dtype("int64"): pb.INT64}
_FROM_WIRE = {pb.FLOAT32: np.dtype("<f4"), pb.FLOAT64: np.dtype("<f8"),
              pb.INT64: np.dtype("<i8")}
_IMPLS = {"naive": pb.NAIVE, "fast": pb.FAST}
_MODES = {"train": pb.TRAIN, "test": pb.TEST}

# Match the server's default --max_message_bytes (gRPC's own default of
# 4 MiB would cut off a (100, 3, 32, 32) float64 gradient check).
DEFAULT_MAX_MESSAGE_BYTES = 512 << 20


class LayerServeError(Exception):
    """An RPC failed; ``code`` is the grpc.StatusCode, str() the message."""

    def __init__(self, code, message):
        super().__init__(f"{code.name}: {message}")
        self.code = code


def to_tensor(array):
    """numpy array (float32, float64, or int64 for class labels; any byte
    order or layout) -> Tensor.

    Raises TypeError for other dtypes: silently converting, say, int32
    labels or float16 data would hide a mistake.
    """
    a = np.asarray(array)
    base = a.dtype.newbyteorder("=")
    if base not in _TO_WIRE:
        hint = (" (labels: a.astype(np.int64))"
                if np.issubdtype(a.dtype, np.integer) else "")
        raise TypeError(f"dtype {a.dtype} is not supported; expected "
                        f"float32, float64 or int64 (class labels){hint}")
    a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
    return pb.Tensor(dtype=_TO_WIRE[base], shape=list(a.shape),
                     data=a.tobytes())


def from_tensor(tensor):
    """Tensor -> a new, writable numpy array of its dtype and shape."""
    if tensor.dtype not in _FROM_WIRE:
        raise ValueError(f"tensor dtype {tensor.dtype} is not "
                         "FLOAT32/FLOAT64/INT64")
    dtype = _FROM_WIRE[tensor.dtype]
    shape = tuple(tensor.shape)
    count = int(np.prod(shape)) if shape else 1
    if len(tensor.data) != count * dtype.itemsize:
        raise ValueError(f"tensor of shape {shape} {dtype} needs "
                         f"{count * dtype.itemsize} bytes, has "
                         f"{len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).copy()


def to_tensor_map(arrays, proto_map):
    """Fills a map<string, Tensor> field from a dict of arrays."""
    for name, array in arrays.items():
        proto_map[name].CopyFrom(to_tensor(array))


def from_tensor_map(proto_map):
    return {name: from_tensor(t) for name, t in proto_map.items()}


def rel_error(x, y):
    """The seed notebook's relative error."""
    return np.max(np.abs(x - y) / (np.maximum(1e-8, np.abs(x) + np.abs(y))))


def _mode(value, where):
    if value in _MODES:
        return _MODES[value]
    if value in (pb.TRAIN, pb.TEST):
        return value
    raise ValueError(f"{where}['mode']: expected 'train' or 'test', "
                     f"got {value!r}")


def _check_keys(param, allowed, where, note=""):
    unknown = sorted(set(param) - set(allowed))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} (expected "
                         f"{', '.join(allowed)}){note}")
    if "mode" not in param:
        raise ValueError(f"{where} needs 'mode': 'train' or 'test'")


def bn_param(param):
    """BatchnormParam from the course's dict {'mode': 'train'|'test',
    'eps': 1e-5, 'momentum': 0.9}; eps and momentum are sent only when
    present (the server's defaults are those numbers)."""
    if isinstance(param, pb.BatchnormParam):
        return param
    _check_keys(param, ("mode", "eps", "momentum"), "bn_param",
                "; running_mean and running_var are inputs here, and come "
                "back as outputs")
    msg = pb.BatchnormParam(mode=_mode(param["mode"], "bn_param"))
    if "eps" in param:
        msg.eps = float(param["eps"])
    if "momentum" in param:
        msg.momentum = float(param["momentum"])
    return msg


def dropout_param(param):
    """DropoutParam from a dict {'p': keep probability, 'mode': 'train'|
    'test', 'seed': int}. p is the probability of KEEPING a unit (kept
    units are scaled by 1/p in train mode); the mask is a function of the
    seed, so forward and backward with one seed agree."""
    if isinstance(param, pb.DropoutParam):
        return param
    _check_keys(param, ("p", "mode", "seed"), "dropout_param")
    if "p" not in param:
        raise ValueError("dropout_param needs 'p', the probability of KEEPING "
                         "a unit, in (0, 1]")
    return pb.DropoutParam(p=float(param["p"]),
                           mode=_mode(param["mode"], "dropout_param"),
                           seed=int(param.get("seed", 0)))


def layer_spec(name, conv_param=None, pool_param=None, bn_param=None,
               dropout_param=None):
    """A LayerSpec from the seed's and the course's dicts, e.g.
    conv_param={'stride': 2, 'pad': 1}, pool_param={'pool_height': 2,
    'pool_width': 2, 'stride': 2}, bn_param={'mode': 'train'},
    dropout_param={'p': 0.8, 'mode': 'train', 'seed': 1}.
    """
    spec = pb.LayerSpec(name=name)
    if conv_param is not None:
        spec.conv_param.CopyFrom(pb.ConvParam(**conv_param))
    if pool_param is not None:
        spec.pool_param.CopyFrom(pb.PoolParam(**pool_param))
    if bn_param is not None:
        spec.bn_param.CopyFrom(_bn_param(bn_param))
    if dropout_param is not None:
        spec.dropout_param.CopyFrom(_dropout_param(dropout_param))
    return spec


# layer_spec's keyword arguments shadow the module-level helpers.
_bn_param = bn_param
_dropout_param = dropout_param


def _pem(value, name):
    """PEM bytes from PEM text (str or bytes starting with -----BEGIN) or
    from the file a path names; ValueError naming the argument if it cannot
    be read."""
    if value is None:
        return None
    if isinstance(value, bytes) and value.lstrip().startswith(b"-----BEGIN"):
        return value
    if isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        return value.encode("ascii")
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{name}: cannot read {value!r}: {e.strerror}") \
            from None


class Client:
    """LayerService over a channel to ``address`` (HOST:PORT).

    Plaintext by default. TLS when ``tls`` is true or any of ``tls_ca``,
    ``tls_cert``, ``tls_server_name`` is given:

    - ``tls_ca``: the CA(s) that signed the server's certificate (a PEM file
      path, or PEM text); None: the system's roots.
    - ``tls_cert``, ``tls_key``: this client's certificate chain and private
      key, for a server run with --tls_client_ca (mutual TLS). Both or
      neither.
    - ``tls_server_name``: check the server's certificate for this name
      instead of the address's host (e.g. when connecting by IP).

    ``auth_token``: the server's bearer token (its --auth_token_file), sent
    as ``authorization: Bearer <token>`` on every call.
    """

    def __init__(self, address="127.0.0.1:50051", timeout=60.0,
                 max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, tls=False,
                 tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name=None, auth_token=None):
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key: give both (a client "
                             "certificate for mutual TLS) or neither")
        self.timeout = timeout
        self._metadata = None
        if auth_token is not None:
            if (not isinstance(auth_token, str) or not auth_token or
                    any(not "\x21" <= c <= "\x7e" for c in auth_token)):
                # The token itself stays out of the message.
                raise ValueError("auth_token: must be a non-empty str of "
                                 "printable ASCII without spaces")
            self._metadata = (("authorization", f"Bearer {auth_token}"),)
        options = [
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes),
        ]
        if tls or tls_ca is not None or tls_cert is not None or \
                tls_server_name is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(tls_ca, "tls_ca"),
                private_key=_pem(tls_key, "tls_key"),
                certificate_chain=_pem(tls_cert, "tls_cert"))
            if tls_server_name is not None:
                options.append(("grpc.ssl_target_name_override",
                                tls_server_name))
            self.channel = grpc.secure_channel(address, credentials,
                                               options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self.stub = pb_grpc.LayerServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout,
                          metadata=self._metadata)
        except grpc.RpcError as e:
            raise LayerServeError(e.code(), e.details()) from None

    def list_layers(self):
        return self._call(self.stub.ListLayers, pb.ListLayersRequest()).layers

    def forward(self, layer, inputs, impl="fast", conv_param=None,
                pool_param=None, bn_param=None, dropout_param=None):
        """Returns {"out": array} ({"loss": array of shape (1,)} for a loss;
        batchnorm in train mode adds the updated "running_mean" and
        "running_var")."""
        req = pb.ForwardRequest(layer=layer_spec(layer, conv_param,
                                                 pool_param, bn_param,
                                                 dropout_param),
                                implementation=_IMPLS[impl])
        to_tensor_map(inputs, req.inputs)
        return from_tensor_map(self._call(self.stub.Forward, req).outputs)

    def backward(self, layer, inputs, dout, impl="fast", conv_param=None,
                 pool_param=None, bn_param=None, dropout_param=None):
        """Returns {"dx": array, ...}. For a loss, dout=np.ones(1) gives the
        loss's own gradient."""
        req = pb.BackwardRequest(layer=layer_spec(layer, conv_param,
                                                  pool_param, bn_param,
                                                  dropout_param),
                                 implementation=_IMPLS[impl],
                                 dout=to_tensor(dout))
        to_tensor_map(inputs, req.inputs)
        return from_tensor_map(self._call(self.stub.Backward, req).grads)

    def gradcheck(self, layer, inputs, dout=None, impl="fast", seed=0,
                  conv_param=None, pool_param=None, bn_param=None,
                  dropout_param=None, num_checks=0, details=False):
        """Returns {"x": rel_error, ...}, one per differentiable input.

        ``num_checks=K`` (> 0) is sampled mode (cs231n's grad_check_sparse):
        the server checks K random elements of each input (from ``seed``)
        instead of all of them; an input with at most K elements is checked
        whole. ``details=True`` returns, per input, a dict with "rel_error",
        "max_abs_error", "worst_index" (a tuple) and "checked_indices": the
        flat (C-order) indices checked in sampled mode, an int64 array that
        is empty when every element was checked
        (``np.unravel_index(d["checked_indices"], x.shape)`` gives the
        multi-indices).
        """
        req = pb.GradCheckRequest(layer=layer_spec(layer, conv_param,
                                                   pool_param, bn_param,
                                                   dropout_param),
                                  implementation=_IMPLS[impl], seed=seed,
                                  num_checks=num_checks)
        if dout is not None:
            req.dout.CopyFrom(to_tensor(dout))
        to_tensor_map(inputs, req.inputs)
        resp = self._call(self.stub.GradCheck, req)
        if not details:
            return {r.input: r.rel_error for r in resp.results}
        return {r.input: {"rel_error": r.rel_error,
                          "max_abs_error": r.max_abs_error,
                          "worst_index": tuple(r.worst_index),
                          "checked_indices": np.array(r.checked_indices,
                                                      dtype=np.int64)}
                for r in resp.results}

    def compare(self, layer, inputs, dout=None, seed=0, repeats=1,
                conv_param=None, pool_param=None, bn_param=None,
                dropout_param=None):
        """Returns the CompareResponse message."""
        req = pb.CompareRequest(layer=layer_spec(layer, conv_param,
                                                 pool_param, bn_param,
                                                 dropout_param),
                                seed=seed, repeats=repeats)
        if dout is not None:
            req.dout.CopyFrom(to_tensor(dout))
        to_tensor_map(inputs, req.inputs)
        return self._call(self.stub.Compare, req)
