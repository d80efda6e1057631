"""Run a SavedModel signature through TensorFlow's C API, the way TF Serving's C++ server does.

TF Serving loads a SavedModel into a session (`LoadSavedModel`) and runs a
signature with `Session::Run` on the signature's input and output tensor
names. `SessionRunner` does the same through the C API of the TensorFlow
wheel (`TF_LoadSessionFromSavedModel`, `TF_SessionRun`, via ctypes), so a
benchmark can time the SavedModel without the cost of calling a restored
`tf.function` from Python (~0.1-0.4 ms a call), which a server never pays.
The session options take a `ConfigProto`, like TF Serving's
`--tensorflow_intra_op_parallelism` / `--tensorflow_inter_op_parallelism`.

Example:

    runner = SessionRunner("serving/vae/1", "decode", inter_op_threads=1)
    outputs = runner(z=np.zeros((1, 20), "float32"))   # {"mean": ..., "sigma": ...}
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

_TF_FLOAT = 1  # TF_DataType of float32
_P = ctypes.c_void_p


class _Output(ctypes.Structure):
    """`TF_Output`: an operation and the index of one of its outputs."""

    _fields_ = [("oper", _P), ("index", ctypes.c_int)]


@functools.cache
def _libraries():
    root = Path(tf.__file__).parent
    framework = ctypes.CDLL(str(root / "libtensorflow_framework.so.2"), mode=ctypes.RTLD_GLOBAL)
    cc = ctypes.CDLL(str(root / "libtensorflow_cc.so.2"), mode=ctypes.RTLD_GLOBAL)
    prototypes = [  # (library, function, result type, argument types), as in tensorflow/c/c_api.h
        (framework, "TF_NewStatus", _P, []),
        (framework, "TF_DeleteStatus", None, [_P]),
        (framework, "TF_GetCode", ctypes.c_int, [_P]),
        (framework, "TF_Message", ctypes.c_char_p, [_P]),
        (framework, "TF_AllocateTensor", _P, [ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int,
                                              ctypes.c_size_t]),
        (framework, "TF_TensorData", _P, [_P]),
        (framework, "TF_TensorByteSize", ctypes.c_size_t, [_P]),
        (framework, "TF_NumDims", ctypes.c_int, [_P]),
        (framework, "TF_Dim", ctypes.c_int64, [_P, ctypes.c_int]),
        (framework, "TF_DeleteTensor", None, [_P]),
        (cc, "TF_NewSessionOptions", _P, []),
        (cc, "TF_DeleteSessionOptions", None, [_P]),
        (cc, "TF_SetConfig", None, [_P, ctypes.c_char_p, ctypes.c_size_t, _P]),
        (cc, "TF_NewGraph", _P, []),
        (cc, "TF_GraphOperationByName", _P, [_P, ctypes.c_char_p]),
        (cc, "TF_LoadSessionFromSavedModel", _P, [_P, _P, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p),
                                                  ctypes.c_int, _P, _P, _P]),
        (cc, "TF_SessionRun", None, [_P, _P, ctypes.POINTER(_Output), ctypes.POINTER(_P), ctypes.c_int,
                                     ctypes.POINTER(_Output), ctypes.POINTER(_P), ctypes.c_int, _P, ctypes.c_int,
                                     _P, _P]),
    ]
    functions = {}
    for library, name, result, arguments in prototypes:
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
        functions[name] = function
    return functions


class SessionRunner:
    """One signature of a SavedModel in a C-API session: `runner(**inputs) -> {name: array}`.

    Args:
        folder: A SavedModel folder (with `saved_model.pb`), tag set "serve".
        signature: The signature name, e.g. "decode".
        inter_op_threads: Session inter-op threads (0: TensorFlow's default).
        intra_op_threads: Session intra-op threads (0: TensorFlow's default).

    Raises:
        FileNotFoundError: If `folder` has no `saved_model.pb`.
        KeyError: If the SavedModel has no such signature.
        TypeError: If the signature has an input that is not float32.
        RuntimeError: With TensorFlow's message, when loading or a run fails
            (for example an in-graph shape check).

    Inputs are float32 (every signature of a keras_vae export but `sample`
    and `decode_indices`); outputs come back in their signature dtypes.
    """

    def __init__(self, folder, signature: str, inter_op_threads: int = 0, intra_op_threads: int = 0):
        folder = Path(folder)
        if not (folder / "saved_model.pb").is_file():
            raise FileNotFoundError(f"No saved_model.pb in {folder}")
        definitions = saved_model_pb2.SavedModel.FromString((folder / "saved_model.pb").read_bytes())
        signatures = definitions.meta_graphs[0].signature_def
        if signature not in signatures:
            raise KeyError(f"SavedModel {folder} has no signature {signature!r}; it has {sorted(signatures)}")
        definition = signatures[signature]
        not_float = {n: tf.as_dtype(t.dtype).name for n, t in definition.inputs.items() if t.dtype != tf.float32}
        if not_float:
            raise TypeError(f"SessionRunner feeds float32 inputs only; {signature!r} takes {not_float}")
        self._c = _libraries()
        self._status = self._c["TF_NewStatus"]()
        options = self._c["TF_NewSessionOptions"]()
        config = tf.compat.v1.ConfigProto(
            inter_op_parallelism_threads=inter_op_threads, intra_op_parallelism_threads=intra_op_threads
        ).SerializeToString()
        self._c["TF_SetConfig"](options, config, len(config), self._status)
        self._check()
        self._graph = self._c["TF_NewGraph"]()
        tags = (ctypes.c_char_p * 1)(b"serve")
        self._session = self._c["TF_LoadSessionFromSavedModel"](
            options, None, str(folder).encode(), tags, 1, self._graph, None, self._status
        )
        self._c["TF_DeleteSessionOptions"](options)
        self._check()
        self.input_names = list(definition.inputs)
        self.output_names = sorted(definition.outputs)
        self._output_dtypes = [tf.as_dtype(definition.outputs[name].dtype).as_numpy_dtype
                               for name in self.output_names]
        self._inputs = (_Output * len(self.input_names))(*(self._tensor(definition.inputs[n].name)
                                                           for n in self.input_names))
        self._outputs = (_Output * len(self.output_names))(*(self._tensor(definition.outputs[n].name)
                                                             for n in self.output_names))

    def _check(self) -> None:
        if self._c["TF_GetCode"](self._status) != 0:
            raise RuntimeError(self._c["TF_Message"](self._status).decode())

    def _tensor(self, name: str) -> _Output:
        operation, index = name.rsplit(":", 1)
        handle = self._c["TF_GraphOperationByName"](self._graph, operation.encode())
        if not handle:
            raise KeyError(f"No operation {operation!r} in the SavedModel graph")
        return _Output(handle, int(index))

    def _new_tensor(self, value) -> int:
        array = np.ascontiguousarray(value, dtype=np.float32)
        dims = (ctypes.c_int64 * array.ndim)(*array.shape)
        tensor = self._c["TF_AllocateTensor"](_TF_FLOAT, dims, array.ndim, array.nbytes)
        ctypes.memmove(self._c["TF_TensorData"](tensor), array.ctypes.data, array.nbytes)
        return tensor

    def _to_numpy(self, tensor, dtype) -> np.ndarray:
        shape = [self._c["TF_Dim"](tensor, i) for i in range(self._c["TF_NumDims"](tensor))]
        data = ctypes.string_at(self._c["TF_TensorData"](tensor), self._c["TF_TensorByteSize"](tensor))
        return np.frombuffer(data, dtype).reshape(shape)

    def __call__(self, **inputs) -> dict[str, np.ndarray]:
        if sorted(inputs) != sorted(self.input_names):
            raise ValueError(f"Expected inputs {self.input_names}. Received: {sorted(inputs)}")
        feeds = (_P * len(self.input_names))(*(self._new_tensor(inputs[n]) for n in self.input_names))
        fetched = (_P * len(self.output_names))()
        self._c["TF_SessionRun"](self._session, None, self._inputs, feeds, len(feeds), self._outputs, fetched,
                                 len(fetched), None, 0, None, self._status)
        for tensor in feeds:
            self._c["TF_DeleteTensor"](tensor)
        self._check()
        results = {}
        for name, tensor, dtype in zip(self.output_names, fetched, self._output_dtypes):
            results[name] = self._to_numpy(tensor, dtype)
            self._c["TF_DeleteTensor"](tensor)
        return results
