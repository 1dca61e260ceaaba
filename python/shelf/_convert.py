"""Conversions between Python values and shelf tables.

Kept apart from the API (``__init__.py``) so that the rules for what can be
published, and how each shelf type comes back, read in one place.

Tables (pandas DataFrames, lists of them, Dask DataFrames, dicts of numpy
arrays, shelf Datasets) become shelf tables: one shelf column per DataFrame column, one
partition per DataFrame. Anything else is pickled with protocol 5: the pickle
stream is partition 0 of a raw-bytes dataset whose column is named
``pickle5``, and every out-of-band buffer (numpy arrays and the like) is a
partition of its own, so it comes back as a view on shared memory.
"""

import pickle
import re
import sys

import numpy as np

from . import _shelf

# The column of a raw-bytes dataset holding a pickled object (see above);
# raw bytes published as such use "bytes", the C++ API's name.
PICKLE_COLUMN = "pickle5"
BYTES_COLUMN = "bytes"
# Buffers of a pickled object this large or larger become partitions of their
# own (zero-copy when read); smaller ones stay in the pickle stream, since a
# partition takes at least a 4 KiB page and a round trip to allocate.
OUT_OF_BAND_MIN_BYTES = 64 * 1024
# A DataFrame index that is not the default RangeIndex(0..n) is stored as a
# column of this name (suffixed ":<name>" when the index has a name).
INDEX_COLUMN = "__index__"

# numpy dtype -> shelf column type, for the dtypes stored without conversion.
_NUMPY_TO_SHELF = {
    np.dtype("int8"): "int8",
    np.dtype("int16"): "int16",
    np.dtype("int32"): "int32",
    np.dtype("int64"): "int64",
    np.dtype("uint8"): "uint8",
    np.dtype("uint16"): "uint16",
    np.dtype("uint32"): "uint32",
    np.dtype("uint64"): "uint64",
    np.dtype("float32"): "float32",
    np.dtype("float64"): "float64",
    np.dtype("bool"): "bool",
    np.dtype("datetime64[ns]"): "timestamp",
}

# shelf column type -> numpy dtype of its values ("string" has none).
SHELF_TO_NUMPY = {v: k for k, v in _NUMPY_TO_SHELF.items()}

# pandas' nullable extension dtypes, by name, and the shelf type they store as.
_NULLABLE_TO_SHELF = {
    "Int8": "int8", "Int16": "int16", "Int32": "int32", "Int64": "int64",
    "UInt8": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
    "Float32": "float32", "Float64": "float64", "boolean": "bool",
}
# The reverse, for integer and bool columns (floats read back as NaN, not Float64).
_SHELF_TO_NULLABLE = {v: k for k, v in _NULLABLE_TO_SHELF.items() if not k.startswith("Float")}


def _unsupported(column, dtype, hint=""):
    return TypeError(
        f"column {column!r} has dtype {dtype}, which shelf cannot store; it stores "
        f"int8..int64, uint8..uint64, float32/64, bool, datetime64[ns] and str{hint}")


class _Column:
    """One column of one partition, ready for _Table.append_partition."""

    __slots__ = ("name", "type", "values", "nulls")

    def __init__(self, name, type_, values, nulls=None):
        self.name, self.type, self.values, self.nulls = name, type_, values, nulls


def _numpy_column(name, array):
    array = np.asarray(array)
    if array.ndim != 1:
        raise TypeError(f"column {name!r} has {array.ndim} dimensions; a column needs 1")
    if array.dtype == object:
        return _Column(name, "string", array)
    if array.dtype.kind == "U":
        return _Column(name, "string", array.astype(object))
    type_ = _NUMPY_TO_SHELF.get(array.dtype.newbyteorder("=")
                                if array.dtype.byteorder == ">" else array.dtype)
    if type_ is None:
        hint = (": convert it with .astype('datetime64[ns]')" if array.dtype.kind == "M" else "")
        raise _unsupported(name, array.dtype, hint)
    values = np.ascontiguousarray(array, dtype=SHELF_TO_NUMPY[type_])
    if type_ == "timestamp":
        values = values.view("int64")  # the buffer protocol has no datetime64
    return _Column(name, type_, values)


def _series_column(name, series):
    import pandas as pd

    dtype = series.dtype
    if dtype == object:  # strings; None, NaN and pd.NA are all missing
        return _Column(name, "string", series.to_numpy(dtype=object, na_value=None))
    if isinstance(dtype, np.dtype):
        if dtype.kind == "M" and dtype != np.dtype("datetime64[ns]"):
            raise _unsupported(name, dtype, ": convert it with .astype('datetime64[ns]')")
        return _numpy_column(name, series.to_numpy(copy=False))
    if isinstance(dtype, pd.StringDtype):
        return _Column(name, "string", series.to_numpy(dtype=object, na_value=None))
    type_ = _NULLABLE_TO_SHELF.get(str(dtype))
    if type_ is not None:
        nulls = series.isna().to_numpy()
        # A null slot holds what shelf's readers expect there: NaN for floats.
        fill = False if type_ == "bool" else np.nan if type_.startswith("float") else 0
        values = series.to_numpy(dtype=SHELF_TO_NUMPY[type_], na_value=fill)
        return _Column(name, type_, np.ascontiguousarray(values), nulls if nulls.any() else None)
    hint = ""
    if isinstance(dtype, pd.DatetimeTZDtype):
        hint = ": drop the time zone with .dt.tz_convert(None) (shelf timestamps are UTC)"
    elif isinstance(dtype, pd.CategoricalDtype):
        hint = ": convert it with .astype(str) or to its codes"
    raise _unsupported(name, dtype, hint)


def _is_default_index(index):
    import pandas as pd

    return (isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1
            and index.name is None)


def _frame_columns(frame, keep_index):
    """The _Columns of a DataFrame, its index first when keep_index."""
    import pandas as pd

    columns = []
    if keep_index:
        if isinstance(frame.index, pd.MultiIndex):
            raise TypeError("a MultiIndex cannot be stored; call .reset_index() first")
        name = INDEX_COLUMN if frame.index.name is None else f"{INDEX_COLUMN}:{frame.index.name}"
        columns.append(_series_column(name, frame.index.to_series()))
    if not frame.columns.is_unique:
        raise ValueError("column names must be unique")
    for name in frame.columns:
        if not isinstance(name, str):
            raise TypeError(f"column names must be str; got {name!r} ({type(name).__name__}): "
                            "rename the columns, e.g. df.columns = df.columns.map(str)")
        if is_index_column(name):
            raise ValueError(f"column name {name!r} is reserved: shelf stores a DataFrame's "
                             "index under it")
        columns.append(_series_column(name, frame[name]))
    return columns


def is_index_column(name):
    """True for the name a stored index takes: "__index__" or "__index__:<name>"."""
    return name == INDEX_COLUMN or name.startswith(INDEX_COLUMN + ":")


def _is_dask_dataframe(value):
    dd = sys.modules.get("dask.dataframe")
    return dd is not None and isinstance(value, (dd.DataFrame, dd.Series))


def _is_pandas_frame(value):
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(value, pd.DataFrame)


def _is_array_dict(value):
    """A dict of 1-D numpy arrays of one length: the columns of a table.
    1-D arrays of several lengths raise ValueError naming them (columns that
    cannot be one table); any other dict (model weights of several
    dimensions...) is pickled."""
    if not isinstance(value, dict) or not value:
        return False
    arrays = list(value.values())
    if not all(isinstance(v, np.ndarray) and v.ndim == 1 for v in arrays):
        return False
    lengths = {str(k): len(v) for k, v in value.items()}
    if len(set(lengths.values())) != 1:
        # Columns of a table that cannot be one: say so rather than pickle it.
        raise ValueError("a dict of 1-D arrays is published as the columns of a table, and "
                         f"columns need one length; got {lengths}. To publish it as an object "
                         "(pickled), wrap it in a list: publish_dataset(my_name=[the_dict])")
    return True


def _is_shelf_dataset(value):
    from . import Dataset  # here, not at the top: the package imports this module

    return isinstance(value, Dataset)


def table_kind(value):
    """How `value` is published: "table", "bytes" or "pickle"."""
    if (_is_pandas_frame(value) or _is_dask_dataframe(value) or _is_array_dict(value)
            or _is_shelf_dataset(value)
            or (isinstance(value, list) and len(value) > 0
                and all(_is_pandas_frame(v) for v in value))):
        return "table"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bytes"
    return "pickle"


def _partitions(value):
    """Yields each partition of a table-like value as a list of _Columns."""
    if _is_array_dict(value):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"column names must be str; got {key!r} ({type(key).__name__})")
        yield [_numpy_column(k, v) for k, v in value.items()]
        return
    if _is_pandas_frame(value):
        frames = [value]
    elif _is_shelf_dataset(value):  # a copy of a published dataset, partition by partition
        frames = [value.partition(i) for i in range(value.npartitions)]
    elif isinstance(value, list):
        frames = value
    else:  # a Dask DataFrame (or Series): each partition is computed in turn, then copied in
        if not hasattr(value, "columns"):
            value = value.to_frame()
        frames = (part.compute() for part in value.to_delayed())
    if isinstance(frames, list):
        keep_index = not all(_is_default_index(f.index) for f in frames)
        for frame in frames:
            yield _frame_columns(frame, keep_index)
    else:
        # A Dask DataFrame's partitions come one at a time, and any of them
        # may carry real labels (from_pandas, set_index) even when the first
        # does not: its index is always kept, so it comes back exactly.
        for frame in frames:
            yield _frame_columns(frame, keep_index=True)


def _not_unicode(columns, partition):
    """ValueError naming the column and row of a str that UTF-8 cannot hold
    (a lone surrogate, as from a bad decode with errors='surrogateescape')."""
    for c in columns:
        if c.type != "string":
            continue
        for row, v in enumerate(c.values):
            if isinstance(v, str):
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError as e:
                    return ValueError(
                        f"column {c.name!r}, partition {partition}, row {row}: the string "
                        f"{v!r} is not valid Unicode ({e.reason}: {v[e.start:e.end]!r}); "
                        "shelf stores strings as UTF-8")
    return ValueError(f"partition {partition} holds a string that is not valid Unicode")


def _check_schema(schema, columns, what):
    got = [(c.name, c.type) for c in columns]
    if got != schema:
        raise TypeError(f"{what} does not match the first: columns {got} vs {schema}")


def build_table(client, value):
    """A shelf _Table holding `value` (not yet published)."""
    kind = table_kind(value)
    if kind == "bytes":
        table = client.create_table([(BYTES_COLUMN, "bytes")])
        table.append_bytes(value)
        return table
    if kind == "pickle":
        return _pickle_table(client, value)
    table = None
    schema = None
    try:
        for i, columns in enumerate(_partitions(value)):
            if table is None:
                schema = [(c.name, c.type) for c in columns]
                table = client.create_table(schema)
            else:
                _check_schema(schema, columns, f"partition {i}")
            rows = len(columns[0].values) if columns else 0
            nulls = [c.nulls for c in columns]
            try:
                table.append_partition(rows, [c.values for c in columns],
                                       nulls if any(n is not None for n in nulls) else None)
            except UnicodeEncodeError:
                raise _not_unicode(columns, i) from None
    except BaseException:
        # A partition that fails (a Dask partition that raises, a column
        # shelf cannot store) gives back the memory of those written before
        # it now: a traceback would keep the table alive until the GC runs.
        if table is not None:
            table.abort()
        raise
    if table is None:
        raise ValueError("a Dask DataFrame with no partitions cannot be published")
    return table


def _pickle_table(client, value):
    buffers = []

    def out_of_band(buffer):
        try:
            raw = buffer.raw()
        except BufferError:
            return True  # not contiguous: stays inside the pickle stream
        if raw.nbytes < OUT_OF_BAND_MIN_BYTES:
            return True  # a partition costs a page at least: small ones stay in the stream
        buffers.append(raw)  # goes to a partition of its own, read back without a copy
        return False

    try:
        stream = pickle.dumps(value, protocol=5, buffer_callback=out_of_band)
    except Exception as e:
        raise TypeError(f"cannot publish a {type(value).__name__}: it is neither a table nor "
                        f"picklable ({e})") from e
    table = client.create_table([(PICKLE_COLUMN, "bytes")])
    table.append_bytes(stream)
    for buffer in buffers:
        table.append_bytes(buffer)
    return table


# The layers to_dask() makes are named "shelf-<dataset>-<token>" (dd.from_map's
# label and its 32-hex token): how a graph tells which shelf datasets it reads.
_SHELF_LAYER = re.compile(r"^shelf-(.+)-[0-9a-f]{32}$", re.DOTALL)


def is_unpersisted(value):
    """True for a Dask collection with tasks still to run in its graph: as in
    Dask, publishing it publishes a view (its graph), not data. A persisted
    collection (client.persist) or dd.from_pandas holds its partitions."""
    dask = sys.modules.get("dask")
    if dask is None or not dask.is_dask_collection(value):
        return False
    from dask.core import istask

    return any(istask(task) for task in value.__dask_graph__().values())


def graph_view(value):
    """An un-persisted collection as a view: its pickle (cloudpickle, as
    Dask's distributed does: graphs hold lambdas), and the shelf datasets
    its graph reads, which the view's rules (cascade) then cover."""
    try:
        import cloudpickle

        graph = cloudpickle.dumps(value, protocol=5)
    except ImportError:
        graph = pickle.dumps(value, protocol=5)
    layers = getattr(value.__dask_graph__(), "layers", {})
    bases = sorted({m.group(1) for name in layers if (m := _SHELF_LAYER.match(str(name)))})
    return graph, bases


def load_graph(handle):
    """The Dask collection of a view of a graph: unpickled, to be computed
    from scratch by whoever got it."""
    return pickle.loads(memoryview(handle.payload(0)))


def load_object(handle):
    """The Python object of a raw-bytes dataset: unpickled, or memoryviews."""
    column = handle.schema[0][0]
    views = [memoryview(handle.payload(p)) for p in range(handle.num_partitions)]
    if column == PICKLE_COLUMN:
        # The buffers are read-only views on shared memory; each object made
        # from them (numpy arrays) keeps the dataset, and so its lease, alive.
        return pickle.loads(views[0], buffers=views[1:])
    return views[0] if len(views) == 1 else views


def nullable_dtype(type_):
    """pandas' nullable dtype for an integer or bool column with nulls."""
    import pandas as pd

    return pd.api.types.pandas_dtype(_SHELF_TO_NULLABLE[type_])


def numpy_dtype(type_):
    """The numpy dtype a column of shelf type `type_` reads as."""
    return SHELF_TO_NUMPY.get(type_, np.dtype(object))


def column_as_pandas(handle, partition, column, type_, rows, nullable):
    """Column `column` of `partition` (its first `rows` rows) for a DataFrame.

    Numbers, bools and timestamps are zero-copy views unless the column has
    nulls; `nullable` says to use pandas' nullable dtype (Int64, boolean)
    for an integer or bool column that has nulls anywhere in the dataset.
    """
    if type_ == "string":
        return handle.strings(partition, column, rows)
    values = handle.values(partition, column)[:rows]
    mask = handle.null_mask(partition, column, rows)
    if nullable:
        return _masked(values, np.zeros(len(values), dtype=bool) if mask is None else mask, type_)
    if mask is None:
        return values
    if type_ in ("float32", "float64"):
        return np.where(mask, np.nan, values).astype(values.dtype, copy=False)
    if type_ == "timestamp":
        return np.where(mask, np.datetime64("NaT"), values)
    return values  # integers and bools without a nullable dtype: null slots as written


def _masked(values, mask, type_):
    """A pandas nullable array (Int64, boolean...): a copy, as pandas needs its own."""
    import pandas as pd

    if type_ == "bool":
        return pd.arrays.BooleanArray(np.array(values, dtype=bool), mask.copy())
    return pd.arrays.IntegerArray(np.array(values), mask.copy())
