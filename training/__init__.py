"""Language-alignment data and DeepSpeed instruction tuning (`import bayling_local.training`).

Installed as `bayling_local.training`; the data builder and SFT land with their own issue.
"""
