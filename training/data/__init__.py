"""The language-alignment instruction mix: readers, cross-lingual builders, mixer, stats.

`build_mix(recipe)` (build.py) is the entry; `bayling-local train data build RECIPE.yaml` calls it.
"""

from bayling_local.training.data.build import MixPaths, MixResult, build_mix

__all__ = ["MixPaths", "MixResult", "build_mix"]
