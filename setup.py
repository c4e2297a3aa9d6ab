"""Package list only; all other metadata is in pyproject.toml.

pyproject's packages.find cannot name a package whose directory sits outside its parent, so the
shipped rules (top-level rules/, mapped by package-dir) are added to the discovered packages here.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["detector", "detector.*"]), "detector.shipped_rules"])
