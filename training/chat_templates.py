"""Jinja chat templates that render exactly as the built-in chat formats, saved with trained models.

`bayling-local` reads the template back (`detect_chat_format` recognises BayLing-3's), and other
runtimes (transformers, llama.cpp through the GGUF) get the same prompt the model was trained on.
"""

from __future__ import annotations

from bayling_local.prompts import BAYLING2_SYSTEM, BAYLING3_SYSTEM


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


BAYLING_3_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = " + _jinja_string(BAYLING3_SYSTEM) + " -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{{- '<|begin_of_text|>' -}}"
    "{%- if system -%}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' -}}{%- endif -%}"
    "{%- for message in turns -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

BAYLING_2_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system = " + _jinja_string(BAYLING2_SYSTEM) + " -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- if system -%}{{- system -}}{%- if not system.endswith('\\n') -%}{{- '\\n' -}}{%- endif -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}{{- '### Instruction:\\n' + message['content'] + '\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '### Response:\\n' + message['content'] + '</s>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{- '### Response:\\n' -}}"
)

CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

CHAT_TEMPLATES: dict[str, str] = {
    "bayling-2": BAYLING_2_TEMPLATE,
    "bayling-3": BAYLING_3_TEMPLATE,
    "chatml": CHATML_TEMPLATE,
}
