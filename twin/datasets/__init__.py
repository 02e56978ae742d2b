"""Labelled training datasets generated with the twin, at scale on Dask (issue 9).

- :mod:`twin.datasets.spec`: the dataset spec (TOML) validated into a :class:`DatasetSpec`;
- :mod:`twin.datasets.sample`: one pure task ``run_sample(spec, index, out_dir)`` writing one
  HDF5 shard per sample, byte-identical for the same spec and index;
- :mod:`twin.datasets.runner`: runs the tasks on Dask distributed (LocalCluster or an existing
  scheduler), resume, verify, manifest, progress and the summary figure;
- :mod:`twin.datasets.reader`: :class:`DatasetReader`, numpy samples and random patches for a
  PyTorch ``DataLoader`` (torch is never imported);
- :mod:`twin.datasets.cli`: the ``xrm-twin dataset`` command.

See ``docs/datasets.md``.
"""

from twin.datasets.spec import DatasetSpec, load_dataset_spec, validate_dataset_spec

__all__ = ["DatasetSpec", "load_dataset_spec", "validate_dataset_spec"]
