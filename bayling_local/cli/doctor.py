"""`bayling-local doctor`: what this install can run, on which devices, and where things are."""

from __future__ import annotations

from bayling_local.cli.output import print_table


def doctor() -> None:
    """Report backends, devices, the model store and the default model."""
    from bayling_local import __version__
    from bayling_local.backends.device import (
        describe_instruction_sets,
        llama_cpp_extra_buffers_default,
        llama_cpp_report,
        machine_summary,
        onnxruntime_report,
        transformers_report,
    )
    from bayling_local.config import config_path
    from bayling_local.families import auto_on_this_cpu
    from bayling_local.model import default_model_name
    from bayling_local.store import bayling_home

    print(f"bayling-local {__version__} on {machine_summary()}")
    print(f"CPU instruction sets: {describe_instruction_sets()}")
    print(f"store: {bayling_home()}   config: {config_path()}   default model: {default_model_name()}")
    reports = [llama_cpp_report(), onnxruntime_report(), transformers_report()]
    print_table(
        ("backend", "installed", "version", "devices", "note"),
        [(r.name, "yes" if r.installed else "no", r.version or "-", ", ".join(r.devices) or "-", r.note) for r in reports],
    )
    if reports[0].installed:
        print(f"llama.cpp extra buffer types (weight repacking): {llama_cpp_extra_buffers_default()}")
    if reports[1].installed:
        print(f"ONNX Runtime on the CPU: {onnx_huge_pages()}")
    for line in auto_on_this_cpu():
        print(line)


def onnx_huge_pages() -> str:
    from bayling_local.backends.huge_pages import system_mode
    from bayling_local.config import load_config

    return system_mode() if load_config().get("huge_pages", True) else "weights in 4 KiB pages (huge_pages = false)"
