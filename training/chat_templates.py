"""Jinja chat templates that render exactly as the built-in chat formats, saved with trained models.

`bayling-local` reads the template back (`detect_chat_format` recognises BayLing-2's and BayLing-3's),
and other runtimes (transformers' `apply_chat_template`, llama.cpp through the GGUF) get the prompt the
model was trained on: the templates write the BOS token where the model starts (transformers tokenizes
a rendered chat without adding it) and add the assistant header only for `add_generation_prompt`.
"""

from __future__ import annotations

from bayling_local.prompts import BAYLING2_SYSTEM, BAYLING3_SYSTEM


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _system_or_default(default: str) -> str:
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
        "{%- else -%}"
        "{%- set system = " + _jinja_string(default) + " -%}{%- set turns = messages -%}"
        "{%- endif -%}"
    )


# Meta's Llama-3 instruct layout (header tokens, `content | trim`, <|eot_id|>) with BayLing's system text.
BAYLING_3_TEMPLATE = (
    _system_or_default(BAYLING3_SYSTEM)
    + "{{- '<|begin_of_text|>' -}}"
    "{%- if system -%}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system | trim + '<|eot_id|>' -}}{%- endif -%}"
    "{%- for message in turns -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)

# ictnlp/BayLing's "BayLing" conversation (separator style BAYLING): system + "\n", then
# "### Instruction:\n{user}\n" and "### Response:\n{assistant}</s>\n"; Llama-2 starts with <s> (bos_token).
BAYLING_2_TEMPLATE = (
    _system_or_default(BAYLING2_SYSTEM)
    + "{{- bos_token -}}"
    "{{- system + '\\n' -}}"
    "{%- for message in turns -%}"
    "{%- if message['role'] == 'user' -%}{{- '### Instruction:\\n' + message['content'] + '\\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}{{- '### Response:\\n' + message['content'] + '</s>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '### Response:\\n' -}}{%- endif -%}"
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
