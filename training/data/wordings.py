"""Instruction wordings for the cross-lingual builders: ours in English and Chinese, more from YAML files.

A wording file adds an instruction language (so an instruction can be written in the source language):

    language: fra_Latn            # any code or name `bayling-local languages` knows
    names: {eng_Latn: anglais}    # optional: language names as written in this language
    translate: ["Traduis ce texte du {source} vers le {target} : {text}"]    # required
    retarget: ["Et maintenant en {target} ?"]         # optional follow-ups of interactive dialogues
    extend: ["Ajoute cette phrase et traduis le tout : {text}"]
    back: ["Retraduis ta traduction en {target}."]
    choice: ["Quelle phrase en {target} traduit ceci ?\\n{text}\\n\\n{options}"]

Placeholders: {source} and {target} (language names), {text}, and {options} for `choice`.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from pathlib import Path

from bayling_local.languages import Language, resolve
from bayling_local.training.typed import RecipeError

# Which placeholders each kind of wording must and may use.
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "translate": frozenset({"target", "text"}),
    "retarget": frozenset({"target"}),
    "extend": frozenset({"text"}),
    "back": frozenset({"target"}),
    "choice": frozenset({"target", "text", "options"}),
}
ALLOWED_FIELDS = frozenset({"source", "target", "text", "options"})
FOLLOW_UP_KINDS = ("retarget", "extend", "back")


@dataclass(frozen=True)
class Wordings:
    """The instruction templates of one instruction language."""

    language: str  # FLORES code
    templates: dict[str, tuple[str, ...]]
    names: dict[str, str] = field(default_factory=dict)

    def has(self, kind: str) -> bool:
        return bool(self.templates.get(kind))

    def name_of(self, lang: Language) -> str:
        """The name of `lang` as written in this instruction language (English name as fallback)."""
        return self.names.get(lang.code, lang.english_name)


ENGLISH = Wordings(
    language="eng_Latn",
    templates={
        "translate": (
            "Translate the following {source} text into {target}:\n{text}",
            "Please translate this sentence from {source} to {target}.\n{text}",
            "What is the {target} translation of this {source} sentence?\n{text}",
            "Render the following in {target}: {text}",
            "{text}\n\nTranslate the text above into {target}.",
            "I need this in {target}, please: {text}",
            "Could you help me translate this {source} sentence into {target}? {text}",
            "Give a faithful {target} translation of the {source} sentence below.\n\n{text}",
        ),
        "retarget": (
            "Now translate it into {target} as well.",
            "Can you also give me the {target} version?",
            "And in {target}?",
            "Please translate the same text into {target} too.",
        ),
        "extend": (
            "Add this sentence to it and give me the whole translation: {text}",
            "The text continues: {text}\nPlease translate both sentences together.",
            "Here is the next sentence: {text}\nGive me the full translation of both.",
        ),
        "back": (
            "Translate your translation back into {target}.",
            "Now translate that back into {target} so I can check it.",
        ),
        "choice": (
            (
                "Which of the following {target} sentences is the translation of this {source} sentence?\n"
                "{text}\n\n{options}\n\nAnswer with the letter and the sentence."
            ),
            "{text}\n\nPick the correct {target} translation of the sentence above:\n{options}",
        ),
    },
    # The language table's names tell script variants apart; a sentence says just "Chinese".
    names={"zho_Hans": "Chinese", "zho_Hant": "Traditional Chinese"},
)

CHINESE = Wordings(
    language="zho_Hans",
    templates={
        "translate": (
            "请把下面的{source}翻译成{target}：\n{text}",
            "将这句{source}译为{target}。\n{text}",
            "下面这句话用{target}怎么说？\n{text}",
            "{text}\n\n把上面这段话翻译成{target}。",
            "帮我把这段{source}文字翻译成{target}：{text}",
            "请给出以下句子的{target}译文：{text}",
            "把这句{source}准确地翻译成{target}：\n\n{text}",
            "翻译成{target}：{text}",
        ),
        "retarget": (
            "再把它翻译成{target}。",
            "也给我一个{target}版本吧。",
            "那用{target}怎么说？",
            "请把同一段话也译成{target}。",
        ),
        "extend": (
            "再加上这句，给出完整的译文：{text}",
            "后面还有一句：{text}\n请把两句一起翻译。",
            "接下来这句是：{text}\n请给出两句话的完整译文。",
        ),
        "back": (
            "把你的译文再翻译回{target}。",
            "再把它回译成{target}，我想核对一下。",
        ),
        "choice": (
            "下面哪一句{target}是这句{source}的译文？\n{text}\n\n{options}\n\n请回答选项字母和句子。",
            "{text}\n\n请选出上面这句话正确的{target}译文：\n{options}",
        ),
    },
    # Names as a Chinese sentence writes them; other languages fall back to their English name.
    names={
        "eng_Latn": "英语", "zho_Hans": "中文", "zho_Hant": "繁体中文", "yue_Hant": "粤语",
        "jpn_Jpan": "日语", "kor_Hang": "韩语", "fra_Latn": "法语", "deu_Latn": "德语",
        "spa_Latn": "西班牙语", "por_Latn": "葡萄牙语", "ita_Latn": "意大利语", "rus_Cyrl": "俄语",
        "arb_Arab": "阿拉伯语", "hin_Deva": "印地语", "ben_Beng": "孟加拉语", "urd_Arab": "乌尔都语",
        "pes_Arab": "波斯语", "tur_Latn": "土耳其语", "vie_Latn": "越南语", "tha_Thai": "泰语",
        "ind_Latn": "印度尼西亚语", "zsm_Latn": "马来语", "tgl_Latn": "他加禄语", "swh_Latn": "斯瓦希里语",
        "amh_Ethi": "阿姆哈拉语", "hau_Latn": "豪萨语", "yor_Latn": "约鲁巴语", "ibo_Latn": "伊博语",
        "zul_Latn": "祖鲁语", "xho_Latn": "科萨语", "som_Latn": "索马里语", "nld_Latn": "荷兰语",
        "pol_Latn": "波兰语", "ukr_Cyrl": "乌克兰语", "ces_Latn": "捷克语", "slk_Latn": "斯洛伐克语",
        "hun_Latn": "匈牙利语", "ron_Latn": "罗马尼亚语", "bul_Cyrl": "保加利亚语", "ell_Grek": "希腊语",
        "heb_Hebr": "希伯来语", "swe_Latn": "瑞典语", "dan_Latn": "丹麦语", "nob_Latn": "书面挪威语",
        "fin_Latn": "芬兰语", "est_Latn": "爱沙尼亚语", "lvs_Latn": "拉脱维亚语", "lit_Latn": "立陶宛语",
        "srp_Cyrl": "塞尔维亚语", "hrv_Latn": "克罗地亚语", "bos_Latn": "波斯尼亚语", "slv_Latn": "斯洛文尼亚语",
        "mkd_Cyrl": "马其顿语", "cat_Latn": "加泰罗尼亚语", "glg_Latn": "加利西亚语", "eus_Latn": "巴斯克语",
        "isl_Latn": "冰岛语", "gle_Latn": "爱尔兰语", "cym_Latn": "威尔士语", "tam_Taml": "泰米尔语",
        "tel_Telu": "泰卢固语", "kan_Knda": "卡纳达语", "mal_Mlym": "马拉雅拉姆语", "mar_Deva": "马拉地语",
        "guj_Gujr": "古吉拉特语", "pan_Guru": "旁遮普语", "npi_Deva": "尼泊尔语", "sin_Sinh": "僧伽罗语",
        "mya_Mymr": "缅甸语", "khm_Khmr": "高棉语", "lao_Laoo": "老挝语", "khk_Cyrl": "蒙古语",
        "bod_Tibt": "藏语", "uig_Arab": "维吾尔语", "kaz_Cyrl": "哈萨克语", "uzn_Latn": "乌兹别克语",
        "kir_Cyrl": "吉尔吉斯语", "tgk_Cyrl": "塔吉克语", "azj_Latn": "阿塞拜疆语", "kat_Geor": "格鲁吉亚语",
        "hye_Armn": "亚美尼亚语", "afr_Latn": "南非荷兰语", "mlt_Latn": "马耳他语", "epo_Latn": "世界语",
        "jav_Latn": "爪哇语", "sun_Latn": "巽他语", "ceb_Latn": "宿务语", "mri_Latn": "毛利语",
        "smo_Latn": "萨摩亚语", "kin_Latn": "卢旺达语", "lin_Latn": "林加拉语", "wol_Latn": "沃洛夫语",
        "gaz_Latn": "奥罗莫语", "tir_Ethi": "提格利尼亚语", "lug_Latn": "卢干达语", "sna_Latn": "绍纳语",
        "nya_Latn": "齐切瓦语", "bel_Cyrl": "白俄罗斯语", "ltz_Latn": "卢森堡语", "als_Latn": "阿尔巴尼亚语",
        "kmr_Latn": "北库尔德语", "ckb_Arab": "中库尔德语", "pbt_Arab": "普什图语", "snd_Arab": "信德语",
        "asm_Beng": "阿萨姆语", "ory_Orya": "奥里亚语", "hat_Latn": "海地克里奥尔语", "fao_Latn": "法罗语",
    },
)

BUILTIN_WORDINGS: dict[str, Wordings] = {w.language: w for w in (ENGLISH, CHINESE)}


def load_wordings_file(path: Path) -> Wordings:
    """Read and check one user wording file (YAML)."""
    import yaml

    if not path.is_file():
        raise RecipeError(f"no wording file at {path}")
    try:
        data = yaml.safe_load(path.read_text("utf-8")) or {}
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from error
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a wording file is a mapping with `language` and `translate`")
    unknown = sorted(set(data) - {"language", "names"} - set(REQUIRED_FIELDS))
    if unknown:
        raise RecipeError(f"{path}: unknown key '{unknown[0]}'; known keys: language, names, {', '.join(REQUIRED_FIELDS)}")
    if "language" not in data or not data.get("translate"):
        raise RecipeError(f"{path}: a wording file needs `language` and at least one `translate` wording")
    templates = {kind: _checked_templates(path, kind, data.get(kind) or []) for kind in REQUIRED_FIELDS}
    names = {resolve(str(key)).code: str(value) for key, value in (data.get("names") or {}).items()}
    return Wordings(resolve(str(data["language"])).code, templates, names)


def _checked_templates(path: Path, kind: str, items: object) -> tuple[str, ...]:
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise RecipeError(f"{path}: `{kind}` must be a list of strings")
    for item in items:
        check_template(item, kind, str(path))
    return tuple(items)


def check_template(template: str, kind: str, origin: str) -> None:
    """Refuse a wording that misses a placeholder its kind needs or uses one that does not exist."""
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as error:
        raise RecipeError(f"{origin}: {kind} wording {template!r} is not a valid template ({error})") from error
    unknown = sorted(used - ALLOWED_FIELDS)
    if unknown:
        raise RecipeError(
            f"{origin}: {kind} wording {template!r} uses {{{unknown[0]}}}; placeholders are "
            f"{', '.join('{' + name + '}' for name in sorted(ALLOWED_FIELDS))}"
        )
    missing = sorted(REQUIRED_FIELDS[kind] - used)
    if missing:
        raise RecipeError(f"{origin}: {kind} wording {template!r} needs {{{missing[0]}}}")


def wordings_for(instruction_languages: list[str], files: list[Path]) -> dict[str, Wordings]:
    """Built-in wordings of the chosen instruction languages plus every user file (files win)."""
    chosen: dict[str, Wordings] = {}
    for name in instruction_languages:
        code = resolve(name).code
        if code not in BUILTIN_WORDINGS:
            raise RecipeError(
                f"no built-in wordings in {resolve(name).english_name}; built-in instruction languages are "
                f"{', '.join(BUILTIN_WORDINGS)}; add a wording file under data.wordings for others"
            )
        chosen[code] = BUILTIN_WORDINGS[code]
    for path in files:
        loaded = load_wordings_file(path)
        chosen[loaded.language] = loaded
    return chosen
