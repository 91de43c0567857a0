"""bayling-local: an offline toolchain for multilingual LLMs (BayLing and friends).

The runtime every front end shares: languages, prompt formats, the model store, backends,
translation and the `bayling-local` CLI. Heavy libraries are imported only where they are used.
"""

__version__ = "0.1.0"
