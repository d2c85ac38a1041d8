"""Frames written by pandas ``to_hdf``, read with h5py: numbers and names only, nothing unpickled.

pandas writes frames through PyTables, and reading them back with ``pd.read_hdf`` runs code
from the file: pandas stores an object column as a pickled array, and PyTables unpickles any
string attribute that looks like a pickle. So a ``.h5`` file could run anything it liked.
This module reads the two pandas layouts with h5py, which never unpickles:

* ``fixed`` (``pandas_type = 'frame'``): one ``block<i>_values`` array per dtype block and its
  column names in ``block<i>_items``. An object block (pickled rows) is refused by column name
  before anything of it is read.
* ``table`` (``pandas_type = 'frame_table'``): one compound dataset ``table`` whose fields are
  the index, data columns (named by the field) and ``values_block_<i>`` (several columns per
  row). PyTables keeps a block's column names in the ``values_block_<i>_kind`` attribute as a
  protocol-0 pickle of a list of strings; it is parsed opcode by opcode with ``pickletools``
  (which builds nothing) and refused unless it is exactly such a list.
"""

from __future__ import annotations

import pickletools
from typing import TYPE_CHECKING

import numpy as np

from onnxopt.errors import DataError

if TYPE_CHECKING:
    import h5py
    import pandas as pd

FIXED, TABLE = "frame", "frame_table"

# Opcodes of a flat list of strings or integers (what PyTables writes for column names).
# None of them can name a global, call anything or build an object.
_NAME_OPS = frozenset({
    "PROTO", "FRAME", "MARK", "STOP", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE",
    "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "INT", "BININT", "BININT1", "BININT2", "LONG",
})  # fmt: skip
_LISTS = frozenset({"EMPTY_LIST", "LIST"})
_POSITIONAL = frozenset({"PROTO", "FRAME", "PUT", "BINPUT", "LONG_BINPUT"})
"""Opcodes whose argument is a protocol number or memo index, not a list item."""


def is_pandas_frame(node: object) -> bool:
    """Whether an h5py node is a group pandas wrote (it carries a ``pandas_type`` attribute)."""
    import h5py

    return isinstance(node, h5py.Group) and "pandas_type" in node.attrs


def read_pandas_frame(group: h5py.Group, where: str) -> pd.DataFrame:
    """The numeric (and fixed-width string) columns of a pandas frame, read with h5py.

    Args:
        group: The h5py group pandas wrote the frame to.
        where: The file and key, for messages.

    Raises:
        DataError: A column holds pickled objects, the column names are not a plain list,
            or the group is not a pandas frame onnxopt reads.
    """
    kind = _text(group.attrs.get("pandas_type"))
    if kind == FIXED:
        return _fixed(group, where)
    if kind == TABLE:
        return _table(group, where)
    raise DataError(
        f"{where} is a pandas {kind!r}, not a frame; write a DataFrame with "
        "df.to_hdf(path, key=...)"
    )


def _fixed(group: h5py.Group, where: str) -> pd.DataFrame:
    import pandas as pd

    encoding = _text(group.attrs.get("encoding")) or "UTF-8"
    blocks = []
    for i in range(_count(group.attrs.get("nblocks"), where)):
        items, values = group.get(f"block{i}_items"), group.get(f"block{i}_values")
        if items is None or values is None:
            raise DataError(f"{where}: pandas block {i} is incomplete; write the file again")
        names = _item_names(items, encoding, where)
        if _pickled(values):
            raise _pickled_columns(where, names)
        blocks.append((names, values))
    columns: dict[str, np.ndarray] = {}
    for names, values in blocks:  # read only once every block is known to be plain numbers
        data = values[()]
        data = data if data.ndim == 2 and values.attrs.get("transposed", 1) else data.T
        if data.ndim != 2 or data.shape[1] != len(names):
            raise DataError(f"{where}: a pandas block does not match its column names")
        columns.update({name: data[:, j] for j, name in enumerate(names)})
    return pd.DataFrame(columns)


def _table(group: h5py.Group, where: str) -> pd.DataFrame:
    import h5py
    import pandas as pd

    table = group.get("table")
    if not isinstance(table, h5py.Dataset) or table.dtype.names is None:
        raise DataError(f"{where}: pandas table has no 'table' dataset; write the file again")
    layout = {}
    for field in table.dtype.names:
        if field == "index":
            continue
        raw = table.attrs.get(f"{field}_kind")
        names = _plain_names(raw) if raw is not None else [field]
        if names is None:
            raise DataError(
                f"{where}: the column names of {field!r} are not a plain list of names "
                "(a crafted pickle?); onnxopt unpickles nothing from data files"
            )
        if len(names) != max(1, int(np.prod(table.dtype[field].shape))):
            raise DataError(f"{where}: field {field!r} does not match its column names")
        layout[field] = names
    rows = table[()]
    columns: dict[str, np.ndarray] = {}
    for field, names in layout.items():
        data = rows[field].reshape(len(rows), -1)
        columns.update({name: data[:, j] for j, name in enumerate(names)})
    return pd.DataFrame(columns)


def _plain_names(raw: object) -> list[str] | None:
    """The strings (or integers) of a pickled flat list, found without unpickling, else None."""
    data = raw.tobytes() if isinstance(raw, np.ndarray) else raw
    if not isinstance(data, bytes | np.bytes_):
        return None
    names, lists = [], 0
    try:
        for opcode, arg, _ in pickletools.genops(bytes(data)):
            if opcode.name not in _NAME_OPS:
                return None
            lists += opcode.name in _LISTS
            if isinstance(arg, str | bytes | int) and opcode.name not in _POSITIONAL:
                names.append(arg.decode("utf-8", "replace") if isinstance(arg, bytes) else arg)
    except (ValueError, UnicodeDecodeError):  # not a pickle at all
        return None
    return [str(n) for n in names] if lists == 1 else None


def _pickled(values: h5py.Dataset) -> bool:
    # PyTables stores object blocks as a VLARRAY of pickles (an h5py vlen/object dtype)
    return values.dtype.kind == "O" or _text(values.attrs.get("CLASS")) == "VLARRAY"


def _pickled_columns(where: str, names: list[str]) -> DataError:
    shown = ", ".join(repr(n) for n in names[:6]) + (" ..." if len(names) > 6 else "")
    return DataError(
        f"{where}: columns {shown} hold Python objects (pandas stored them pickled) and "
        "onnxopt unpickles nothing from data files; convert them to numbers (or drop them) "
        "and write the file again"
    )


def _item_names(items: h5py.Dataset, encoding: str, where: str) -> list[str]:
    if items.dtype.kind not in "SUiu" or items.ndim != 1:  # object names are pickled too
        raise DataError(
            f"{where}: the frame's column names are Python objects (pickled); "
            "name the columns with strings and write the file again"
        )
    return [v.decode(encoding, "replace") if isinstance(v, bytes) else str(v) for v in items[()]]


def _count(value: object, where: str) -> int:
    if isinstance(value, np.integer | int) and 0 <= int(value) <= 10_000:
        return int(value)
    raise DataError(f"{where}: pandas frame has no valid block count; write the file again")


def _text(value: object) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)
