"""Datasets: the bundled digits, the user's .npz/.csv files and the JSC jet-tagging formats.

``load_dataset(spec)`` is the entry point; heavy readers (pandas, h5py, scikit-learn) are
imported only when a file is actually read.
"""

from onnxopt.data.dataset import Dataset, Split
from onnxopt.data.registry import load_dataset

__all__ = ["Dataset", "Split", "load_dataset"]
