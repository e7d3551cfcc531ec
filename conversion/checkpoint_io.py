"""Reading original checkpoints safely: nothing from a pickle is ever executed, and nothing a file declares can make
the reader allocate more than the file could hold.

* safetensors files are read with safetensors.
* ``torch.save`` files (plain state dicts and Lightning checkpoints with pickled omegaconf objects, optimizer state,
  callbacks) go through :class:`RestrictedUnpickler`: tensors and plain containers are rebuilt; every other class or
  callable named in the pickle (omegaconf, a malicious ``os.system`` from a ``__reduce__`` payload, ...) becomes an
  inert placeholder that is never imported and never called. State (pickle BUILD) is applied only to fresh tensors,
  ordered dicts and placeholders, never to a class, function or module, so a checkpoint cannot change the process.
* Before anything is unpickled, the archive is checked: its members may not expand beyond the file's size (a
  compressed "zip bomb" storage is refused), and the storages the pickle declares must fit in the file.

Every failure is a :class:`ConversionError` with one line naming the file and the cause.
"""

from __future__ import annotations

import functools
import pickle
import threading
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import torch


class ConversionError(ValueError):
    """A checkpoint or config cannot be converted; the message names the cause in one line."""


# Distinct refused classes/functions one checkpoint may name (a Lightning checkpoint names a few dozen).
MAX_REFUSED_GLOBALS = 10_000


class InertObject:
    """Stands in for any class the restricted unpickler refuses to import; accepts and ignores everything."""

    __slots__ = ()

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __repr__(self):
        return f"<skipped {type(self).__name__}>"


_placeholders: dict[tuple[str, str], type] = {}


def _placeholder(module: str, name: str) -> type:
    """One inert subclass per refused global (cached), so the skipped object's origin stays visible."""
    key = (module, name)
    if key not in _placeholders:
        if len(_placeholders) >= 4 * MAX_REFUSED_GLOBALS:  # bounded across many files too
            _placeholders.clear()
        _placeholders[key] = type(f"{module}.{name}", (InertObject,), {"__slots__": ()})
    return _placeholders[key]


@functools.cache
def _allowed_globals() -> dict[str, object]:
    """torch's own weights-only allow-list, less what can allocate without bound (``bytearray(n)``) and numpy."""
    from torch._weights_only_unpickler import _get_allowed_globals

    allowed = {
        k: v for k, v in _get_allowed_globals().items() if k != "builtins.bytearray" and not k.startswith("numpy")
    }
    allowed["collections.OrderedDict"] = OrderedDict
    return allowed


@functools.cache
def _allowed_callable_ids() -> frozenset[int]:
    """Identities of the allowed objects that can be called (pickle REDUCE / NEWOBJ / INST)."""
    return frozenset(id(obj) for obj in _allowed_globals().values() if callable(obj))


class _Limits(threading.local):
    """What the checkpoint being read may declare: its size, and the sizes of its zip records (None: legacy file)."""

    file_size: int = 0
    storage_bytes: int = 0
    storages_seen: set | None = None
    record_sizes: dict[str, int] | None = None


_limits = _Limits()


class RefusedCheckpoint(pickle.UnpicklingError):
    """The pickle asks for something the restricted reader never does (the message says what, as "it ...")."""


def _refuse(message: str):
    raise RefusedCheckpoint(message)


class RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler whose every object-creating opcode is restricted (see the module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._refused: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str):
        if not isinstance(module, str) or not isinstance(name, str):
            _refuse(f"names a global by a {type(module).__name__}.{type(name).__name__}, not text")
        obj = _allowed_globals().get(f"{module}.{name}")
        if obj is not None:
            return obj
        self._refused.add((module, name))
        if len(self._refused) > MAX_REFUSED_GLOBALS:
            _refuse(f"names more than {MAX_REFUSED_GLOBALS} distinct classes or functions")
        return _placeholder(module, name)

    @staticmethod
    def _check_callable(func) -> None:
        if isinstance(func, type) and issubclass(func, InertObject):
            return
        if id(func) not in _allowed_callable_ids():
            _refuse(f"calls {getattr(func, '__name__', type(func).__name__)!r}, which is not allowed")

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        self._check_callable(func)
        if not isinstance(args, tuple):
            _refuse("passes call arguments that are not a tuple")
        self.stack[-1] = func(*args)

    def _instantiate(self, klass, args):
        self._check_callable(klass)
        self.append(klass(*args))

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        self._check_callable(cls)
        self.append(cls.__new__(cls, *args))

    def load_newobj_ex(self):
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._check_callable(cls)
        self.append(cls.__new__(cls, *args, **kwargs))

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        kind = type(inst)
        if issubclass(kind, InertObject):
            return
        if kind is torch.Tensor:  # legacy format: state is (storage, offset, size, stride)
            inst.set_(*state)
        elif kind is torch.nn.Parameter:
            inst.__setstate__(state)
        elif kind is OrderedDict and isinstance(state, dict):
            inst.__dict__.update(state)
        else:
            _refuse(
                f"applies state to {getattr(inst, '__name__', kind.__name__)!r}, which is not a fresh tensor, "
                "ordered dict or skipped object"
            )

    def load_binpersid(self):
        pid = self.stack.pop()
        self._check_storage(pid)
        self.append(self.persistent_load(pid))

    def load_binget(self):
        self._get_memo(self.read(1)[0])

    def load_long_binget(self):
        self._get_memo(int.from_bytes(self.read(4), "little"))

    def _get_memo(self, index: int) -> None:
        if index not in self.memo:
            raise pickle.UnpicklingError(f"pickle reads memo entry {index} before storing it")
        self.append(self.memo[index])

    def load_persid(self):
        _refuse("uses protocol-0 persistent ids, which torch.save never writes")

    @staticmethod
    def _check_storage(pid) -> None:
        """A storage must fit in its record (zip) and all storages together in the file: nothing is allocated that the
        file does not hold."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            return
        if pid[2] in _limits.storages_seen:  # shared storage (tied weights): its bytes are counted once
            return
        _limits.storages_seen.add(pid[2])
        dtype = getattr(pid[1], "dtype", None)
        numel = pid[4] if isinstance(pid[4], int) else pid[-1]
        if not isinstance(numel, int) or numel < 0 or not isinstance(dtype, torch.dtype):
            _refuse(f"declares a malformed storage record {pid[2]!r}")
        nbytes = numel * torch._utils._element_size(dtype)
        if _limits.record_sizes is not None:
            record = _limits.record_sizes.get(f"data/{pid[2]}")
            if record is None or nbytes > record:
                _refuse(f"declares {nbytes} bytes for storage {pid[2]!r}, whose record holds {record or 0}")
        _limits.storage_bytes += nbytes
        if _limits.storage_bytes > _limits.file_size:
            _refuse(f"declares {_limits.storage_bytes} bytes of tensor data in a {_limits.file_size}-byte file")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.BINPERSID[0]] = load_binpersid
    dispatch[pickle.PERSID[0]] = load_persid
    dispatch[pickle.BINGET[0]] = load_binget
    dispatch[pickle.LONG_BINGET[0]] = load_long_binget


# torch.load subclasses ``pickle_module.Unpickler`` (adding persistent_load for the storages).
restricted_pickle_module = types.ModuleType("hyena_hf_restricted_pickle")
restricted_pickle_module.Unpickler = RestrictedUnpickler
restricted_pickle_module.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()
restricted_pickle_module.UnpicklingError = pickle.UnpicklingError


def _zip_record_sizes(path: Path, file_size: int) -> dict[str, int] | None:
    """Record sizes (keys relative to the archive's folder) of a ``torch.save`` zip, None for a legacy file; refuses
    archives whose members expand beyond the file."""
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ConversionError(f"truncated or corrupt checkpoint file {path}: {exc}") from None
    expanded = sum(info.file_size for info in infos)
    if expanded > file_size:
        raise ConversionError(
            f"checkpoint file {path} expands to {expanded} bytes from {file_size} (compressed "
            "records; torch.save never compresses): refusing to read it"
        )
    pickles = [info.filename for info in infos if info.filename.endswith("/data.pkl") or info.filename == "data.pkl"]
    if len(pickles) != 1:
        raise ConversionError(
            f"checkpoint file {path} is a zip archive without exactly one data.pkl "
            f"(found {len(pickles)}); not a torch.save file"
        )
    root = pickles[0][: -len("data.pkl")]
    return {info.filename[len(root) :]: info.file_size for info in infos if info.filename.startswith(root)}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file into a dict of tensors / plain containers without running code from it."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint file not found: {path}")
    file_size = path.stat().st_size
    if file_size == 0:
        raise ConversionError(f"truncated or corrupt checkpoint file {path}: file is empty")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ConversionError(f"truncated or corrupt safetensors file {path}: {_first_line(exc)}") from None
    _limits.record_sizes = _zip_record_sizes(path, file_size)
    _limits.file_size, _limits.storage_bytes, _limits.storages_seen = file_size, 0, set()
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle_module)
    except RefusedCheckpoint as exc:
        raise ConversionError(f"refusing checkpoint file {path}: it {exc}") from None
    except (Exception, RecursionError) as exc:  # KeyError, IndexError, EOFError, ... from damaged pickles
        raise ConversionError(f"truncated or corrupt checkpoint file {path}: {_first_line(exc)}") from None
    finally:
        _limits.record_sizes = None


def _describe_tensor_problem(value: torch.Tensor) -> str | None:
    if value.is_meta:
        return "a meta tensor (no data)"
    if value.layout != torch.strided:
        return f"a {str(value.layout).replace('torch.', '')} tensor (only dense tensors are supported)"
    if value.is_quantized:
        return "a quantized tensor (only float tensors are supported)"
    if value.is_complex():
        return "a complex tensor (the original weights are real)"
    return None


def extract_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model tensors of a plain state dict or of a Lightning checkpoint (``state_dict`` entry)."""
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"checkpoint holds a {type(checkpoint).__name__}, not a state dict")
    if "state_dict" in checkpoint and isinstance(checkpoint["state_dict"], dict):
        checkpoint = checkpoint["state_dict"]
    state_dict = {}
    for key, value in checkpoint.items():
        if not isinstance(value, torch.Tensor):
            continue
        if not isinstance(key, str):
            raise ConversionError(f"state dict key {key!r} is a {type(key).__name__}, not a parameter name")
        problem = _describe_tensor_problem(value)
        if problem:
            raise ConversionError(f"state dict entry {key} is {problem}")
        state_dict[key] = value
    if not state_dict:
        raise ConversionError("checkpoint contains no tensors (expected a state dict or a Lightning checkpoint)")
    return state_dict
