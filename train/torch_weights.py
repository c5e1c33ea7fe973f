"""Read PyTorch ``.pth`` state dicts without torch, and port EfficientNet-Lite weights onto tf_keras layers.

``read_pth`` understands both of PyTorch's serialisations:

- the legacy (pre-1.6, non-zip) one: a run of pickles -- magic number, protocol version (1001), system
  info (endianness, type sizes), the state dict (its tensors point at storages through persistent ids),
  the list of storage keys -- followed by each raw storage in that key order, each prefixed by its
  element count as a little-endian int64;
- the zip one (torch >= 1.6): ``<root>/data.pkl`` plus one raw file ``<root>/data/<key>`` per storage.

The pickles are read with a restricted ``pickle.Unpickler``: only the handful of globals a state dict
needs (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage`` and friends, ``collections.OrderedDict``)
are mapped onto small stand-ins here; anything else is refused, so a hostile file cannot run code.

``port_efficientnet_lite0`` maps the EfficientNet-PyTorch key names (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...) onto the layer names that ``train.efficientnet_lite`` uses.

This module does not import TensorFlow: the port only calls ``get_weights``/``set_weights`` on the
layer objects it is handed.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch storage class name -> numpy dtype (byte order added when read). BFloat16 is widened by hand.
_STORAGE_DTYPES = {
    "FloatStorage": "f4",
    "DoubleStorage": "f8",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",  # converted to float32 after reading
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class PthFormatError(ValueError):
    """The file is not a PyTorch state dict this reader understands."""


# ---------------------------------------------------------------------------------------------------
# stand-ins for the torch globals a state-dict pickle references


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> str:
        return _STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    stype: _StorageType
    numel: int | None
    offset: int = 0  # elements into the root storage (legacy storage views)


@dataclass
class _LazyTensor:
    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


class _StateDict(collections.OrderedDict):
    """OrderedDict that accepts the ``_metadata`` attribute PyTorch sets through BUILD."""


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict | None = None):
        super().__init__(file)
        self.storages = {} if storages is None else storages  # key -> _StorageRef (root storages)

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only plain tensor state dicts are supported"
            ) from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        stype, key, _location, numel = pid[1], str(pid[2]), pid[3], pid[4]
        if not isinstance(stype, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {stype!r}")
        view = pid[5] if len(pid) > 5 else None
        root = self.storages.setdefault(key, _StorageRef(key, stype, int(numel)))
        if view is not None:  # legacy storage view: (view_key, offset, view_size) into the root storage
            _view_key, view_offset, view_size = view
            return _StorageRef(key, stype, int(view_size), int(view_offset))
        return root


# ---------------------------------------------------------------------------------------------------
# materialising tensors


def _storage_array(raw: bytes, stype: _StorageType, byteorder: str) -> np.ndarray:
    dt = np.dtype(stype.dtype).newbyteorder(byteorder) if np.dtype(stype.dtype).itemsize > 1 else np.dtype(stype.dtype)
    arr = np.frombuffer(raw, dtype=dt)
    if stype.name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(arr.dtype.newbyteorder("="), copy=False)


def _materialise(t: _LazyTensor, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    base = arrays[t.storage.key]
    start = t.storage.offset + t.offset
    shape, stride = t.size, t.stride
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if n == 0:
        return np.zeros(shape, dtype=base.dtype)
    # the last element reached must lie inside the storage
    last = start + sum((d - 1) * s for d, s in zip(shape, stride))
    if start < 0 or last >= base.size or any(s < 0 for s in stride):
        raise PthFormatError(f"tensor view {shape}/{stride}@{start} runs outside its storage of {base.size}")
    contiguous = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
    if all(s == c or d == 1 for s, c, d in zip(stride, contiguous, shape)):
        return base[start:start + n].reshape(shape).copy()
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(base[start:], shape=shape, strides=[s * item for s in stride],
                                           writeable=False)
    return np.array(view)  # copy: never hand out an aliasing view


def _resolve(obj: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if isinstance(obj, _LazyTensor):
        return _materialise(obj, arrays)
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v, arrays)) for k, v in obj.items()) if isinstance(obj, _StateDict) \
            else {k: _resolve(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v, arrays) for v in obj)
    return obj


def _flatten(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """Tensors of a (possibly nested, e.g. ``{"state_dict": {...}}``) dict as ``{dotted.key: array}``."""
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


# ---------------------------------------------------------------------------------------------------
# the two container formats


def _read_legacy(f) -> dict[str, np.ndarray]:
    def load():
        return _Unpickler(f).load()

    try:
        magic = _Unpickler(f).load()
    except Exception as e:  # noqa: BLE001
        raise PthFormatError(f"not a PyTorch file (cannot read the magic number: {e})") from None
    if magic != LEGACY_MAGIC:
        raise PthFormatError("not a PyTorch legacy file (wrong magic number)")
    protocol = load()
    if protocol != LEGACY_PROTOCOL:
        raise PthFormatError(f"unsupported PyTorch legacy protocol version {protocol!r}")
    sys_info = load()
    byteorder = "<" if sys_info.get("little_endian", True) else ">"
    up = _Unpickler(f)
    result = up.load()
    keys = [str(k) for k in _Unpickler(f).load()]
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        if key not in up.storages:
            raise PthFormatError(f"storage {key} is listed but no tensor references it")
        stype = up.storages[key].stype
        head = f.read(8)
        if len(head) != 8:
            raise PthFormatError(f"file truncated before storage {key}")
        numel = int(np.frombuffer(head, dtype=np.dtype("i8").newbyteorder(byteorder))[0])
        itemsize = np.dtype(stype.dtype).itemsize
        raw = f.read(numel * itemsize)
        if len(raw) != numel * itemsize:
            raise PthFormatError(f"file truncated inside storage {key}")
        arrays[key] = _storage_array(raw, stype, byteorder)
    missing = set(up.storages) - set(arrays)
    if missing:
        raise PthFormatError(f"storages referenced but not stored: {sorted(missing)[:5]}")
    return _flatten(_resolve(result, arrays))


def _read_zip(path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise PthFormatError(f"zip file without exactly one data.pkl ({len(pkl)} found)")
        root = pkl[0][: -len("data.pkl")]
        byteorder = "<"
        if root + "byteorder" in names:
            byteorder = "<" if zf.read(root + "byteorder").strip() == b"little" else ">"
        up = _Unpickler(io.BytesIO(zf.read(pkl[0])))
        result = up.load()
        arrays = {}
        for key, ref in up.storages.items():
            raw = zf.read(f"{root}data/{key}")
            arrays[key] = _storage_array(raw, ref.stype, byteorder)
    return _flatten(_resolve(result, arrays))


def read_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict file into ``{key: numpy array}`` without torch.

    Supports the legacy (non-zip) serialisation and the zip one. Only plain tensor state dicts are
    accepted: any pickled global other than the tensor/storage rebuild helpers raises
    ``pickle.UnpicklingError``. Nested dicts (``{"state_dict": {...}}``) are flattened to dotted keys;
    non-tensor values are dropped.
    """
    path = os.fspath(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as f:
        return _read_legacy(f)


# ---------------------------------------------------------------------------------------------------
# EfficientNet-PyTorch (lukemelas / ml-illustrated Lite fork) -> train.efficientnet_lite layer names

_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")  # -> gamma, beta, moving_mean, moving_variance
_BACKBONE_LAYER = re.compile(r"^(stem_|head_|block\d+_)")


def _conv_kernel(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)


def _dw_kernel(w: np.ndarray) -> np.ndarray:
    return np.transpose(w, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _keras_to_torch_plan(layer_names) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (pth prefix, kind) for every backbone layer with weights."""
    plan: dict[str, tuple[str, str]] = {}
    for name in layer_names:
        if name == "stem_conv":
            plan[name] = ("_conv_stem", "conv")
        elif name == "stem_bn":
            plan[name] = ("_bn0", "bn")
        elif name == "head_conv":
            plan[name] = ("_conv_head", "conv")
        elif name == "head_bn":
            plan[name] = ("_bn1", "bn")
        else:
            m = re.fullmatch(r"block(\d+)_(expand_conv|expand_bn|dw_conv|dw_bn|project_conv|project_bn)", name)
            if m is None:
                continue
            i, part = int(m.group(1)), m.group(2)
            plan[name] = {
                "expand_conv": (f"_blocks.{i}._expand_conv", "conv"),
                "expand_bn": (f"_blocks.{i}._bn0", "bn"),
                "dw_conv": (f"_blocks.{i}._depthwise_conv", "dw"),
                "dw_bn": (f"_blocks.{i}._bn1", "bn"),
                "project_conv": (f"_blocks.{i}._project_conv", "conv"),
                "project_bn": (f"_blocks.{i}._bn2", "bn"),
            }[part]
    return plan


def port_efficientnet_lite0(model_or_layers, state: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """Copy an EfficientNet-PyTorch Lite state dict onto ``train.efficientnet_lite`` layers.

    ``model_or_layers``: a tf_keras model, or a mapping ``{layer name: layer}`` (what
    ``efficientnet_lite.backbone`` collects). Works for any Lite variant whose file follows the same key
    scheme; shapes are checked. Strict both ways: raises ``ValueError`` if a shape differs, a Keras
    backbone weight is left unassigned, or a backbone key of the file (anything but ``_fc.*`` and
    ``num_batches_tracked``) is unused. Returns ``{layer name: [pth keys used]}``.

    PyTorch's (out, in, kh, kw) convolutions become Keras (kh, kw, in, out), depthwise (C, 1, kh, kw)
    become (kh, kw, C, 1); BatchNorm weight/bias/running_mean/running_var become
    gamma/beta/moving_mean/moving_variance (both sides use epsilon 1e-3).
    """
    if hasattr(model_or_layers, "layers"):
        layers = {layer.name: layer for layer in model_or_layers.layers}
    else:
        layers = dict(model_or_layers)
    backbone = {n: l for n, l in layers.items() if _BACKBONE_LAYER.match(n) and l.weights}
    plan = _keras_to_torch_plan(backbone)
    unmapped = sorted(set(backbone) - set(plan))
    if unmapped:
        raise ValueError(f"backbone layers with weights but no PyTorch counterpart: {unmapped}")

    used: set[str] = set()
    report: dict[str, list[str]] = {}
    for name, (prefix, kind) in plan.items():
        layer = backbone[name]
        current = layer.get_weights()
        if kind == "bn":
            keys = [f"{prefix}.{field}" for field in _BN_FIELDS]
            if len(current) != 4:
                raise ValueError(f"{name}: expected a BatchNormalization with 4 weights, got {len(current)}")
            new = [state[k] if k in state else None for k in keys]
        else:
            keys = [f"{prefix}.weight"]
            if len(current) != 1:
                raise ValueError(f"{name}: expected a bias-free convolution (1 weight), got {len(current)}")
            w = state.get(keys[0])
            new = [None if w is None else (_dw_kernel(w) if kind == "dw" else _conv_kernel(w))]
        missing = [k for k, v in zip(keys, new) if v is None]
        if missing:
            raise ValueError(f"{name}: keys missing from the state dict: {missing}")
        for k, cur, v in zip(keys, current, new):
            if cur.shape != v.shape:
                raise ValueError(f"{name}: shape mismatch for {k}: Keras {cur.shape} vs PyTorch-ported {v.shape}")
        layer.set_weights([np.asarray(v, dtype=cur.dtype) for cur, v in zip(current, new)])
        for k in keys:
            if k in used:
                raise ValueError(f"{k} assigned twice")
            used.add(k)
        report[name] = keys

    leftover = sorted(k for k in state
                      if k not in used and not k.startswith("_fc.") and not k.endswith("num_batches_tracked"))
    if leftover:
        raise ValueError(f"{len(leftover)} PyTorch tensors not used by the Keras backbone, e.g. {leftover[:5]}")
    return report


port_efficientnet_lite = port_efficientnet_lite0  # the key scheme is the same for every Lite variant
