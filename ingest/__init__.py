"""STAC catalogs -> cloud-filtered chips -> WebDataset shards + manifest."""
