"""Datasets: a catalog by name, file readers, rendered letters and few-shot splits."""

from dwp.data.catalog import (
    DATASETS,
    Dataset,
    DatasetStatus,
    ImageSet,
    dataset_arch,
    dataset_status,
    load_dataset,
    mnist5k_split,
)
from dwp.data.letters import LETTERS, export_letters, find_fonts, render_letters
from dwp.data.paths import cache_dir, data_roots
from dwp.data.splits import few_shot, stratified_indices

__all__ = [
    "DATASETS",
    "LETTERS",
    "Dataset",
    "DatasetStatus",
    "ImageSet",
    "cache_dir",
    "data_roots",
    "dataset_arch",
    "dataset_status",
    "export_letters",
    "few_shot",
    "find_fonts",
    "load_dataset",
    "mnist5k_split",
    "render_letters",
    "stratified_indices",
]
