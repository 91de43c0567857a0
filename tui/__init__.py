"""The Textual app for offline chat, translation and benchmarks (`import bayling_local.tui`).

Installed as `bayling_local.tui`; the screens land with their own issue.
"""
