"""The shipped product catalogue (products.yaml, next to this module) and its loader."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from services.inventory.domain.catalogue import Product, parse_catalogue

PRODUCTS_PATH = Path(__file__).with_name("products.yaml")


def load_products(path: str | os.PathLike[str] | None = None) -> list[Product]:
    """Read and validate a catalogue file (default: the shipped ``products.yaml``).

    Raises ``CatalogueError`` listing every bad field, ``OSError`` if the file cannot be read
    and ``yaml.YAMLError`` if it is not YAML."""
    with open(PRODUCTS_PATH if path is None else path, encoding="utf-8") as file:
        data = yaml.safe_load(file)
    return parse_catalogue(data)
