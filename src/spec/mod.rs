//! The fleet repository format: `rackform.yaml` and `clusters/*.yaml`.
