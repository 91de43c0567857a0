"""`bayling-local tm`: TMX export/import round trip with inline codes, refusal of a TMX of other languages (one
line, nothing written), reviewed XLIFF/PO targets imported as human units that outrank machine ones, stats."""

from __future__ import annotations

from lxml import etree

from bayling_local.translate.memory import HUMAN, MACHINE, REJECTED, MemoryUnit, TranslationMemory

UNITS = [
    MemoryUnit("Click <1>Save</1> now.", "Cliquez sur <1>Enregistrer</1> maintenant.", "eng_Latn", "fra_Latn",
               origin=HUMAN),
    MemoryUnit("Page <2/> of <3/>", "Page <2/> sur <3/>", "eng_Latn", "fra_Latn", "footer", MACHINE, "smollm2"),
    MemoryUnit("ends <4> here", "finit <4> ici", "eng_Latn", "fra_Latn", origin=MACHINE, model="smollm2"),
    MemoryUnit("Open", "Ouvrir", "eng_Latn", "fra_Latn", "menu", MACHINE, "smollm2"),
    MemoryUnit("Open", "Ouvrir (relu)", "eng_Latn", "fra_Latn", "menu", HUMAN),
    MemoryUnit("a < b & c", "a < b & c", "eng_Latn", "fra_Latn", origin=HUMAN),
]
OTHER = [
    MemoryUnit("Close", "<1> missing", "eng_Latn", "fra_Latn", origin=REJECTED),
    MemoryUnit("Close", "Funga", "eng_Latn", "swh_Latn"),
]


def _fill(path, units):
    with TranslationMemory.open(path) as memory:
        memory.add(units)


def _units(path):
    with TranslationMemory.open(path) as memory:
        return {(u.source, u.target, u.source_lang, u.target_lang, u.context, u.origin, u.model) for u in memory.units()}


def _refused_with_one_line(result):
    stderr = result.stderr.decode("utf-8")
    assert result.returncode != 0 and stderr.startswith("bayling-local: error:"), stderr
    assert len(stderr.strip().splitlines()) == 1, stderr
    return stderr


def test_tmx_export_then_import_into_an_empty_memory_gives_the_same_units(tmp_path, cli):
    full, empty, tmx = tmp_path / "full.sqlite", tmp_path / "empty.sqlite", tmp_path / "out.tmx"
    _fill(full, UNITS + OTHER)
    exported = cli("tm", "export", str(tmx), "--from", "en", "--to", "fr", "--tm", str(full))
    assert exported.returncode == 0, exported.stderr
    root = etree.parse(str(tmx)).getroot()
    assert root.get("version") == "1.4" and root.find("header").get("srclang") == "en"
    assert {t.get("{http://www.w3.org/XML/1998/namespace}lang") for t in root.iter("tuv")} == {"en", "fr"}
    assert len(root.findall("body/tu")) == len(UNITS)  # the rejected answer and the other pair stay out
    first = root.find("body/tu/tuv/seg")
    assert [(e.tag, e.get("i") or e.get("x")) for e in first] == [("bpt", "1"), ("ept", "1")]
    assert {e.tag for e in root.iter("ph", "it")} == {"ph", "it"}

    from translate.storage.tmx import tmxfile  # the field's own TMX reader reads it too

    assert len(tmxfile(tmx.read_bytes()).units) == len(UNITS)
    imported = cli("tm", "import", str(tmx), "--from", "eng_Latn", "--to", "fr", "--tm", str(empty))
    assert imported.returncode == 0, imported.stderr
    assert _units(empty) == _units(full) - {(u.source, u.target, u.source_lang, u.target_lang, u.context, u.origin,
                                              u.model) for u in OTHER}


TMX = """<?xml version="1.0" encoding="UTF-8"?>
<tmx version="1.4"><header creationtool="t" creationtoolversion="1" segtype="sentence" o-tmf="t" adminlang="en"
 srclang="{srclang}" datatype="plaintext"/><body>
<tu><tuv xml:lang="en-US"><seg>Good <bpt i="1" x="1">&lt;b&gt;</bpt>morning<ept i="1">&lt;/b&gt;</ept></seg></tuv>
<tuv xml:lang="fr-FR"><seg>Bonjour <bpt i="1" x="1">&lt;b&gt;</bpt>matin<ept i="1">&lt;/b&gt;</ept></seg></tuv></tu>
<tu><tuv xml:lang="{second}"><seg>Night</seg></tuv><tuv xml:lang="fr"><seg>Nuit</seg></tuv></tu>
</body></tmx>"""


def test_tmx_of_other_languages_is_refused_with_one_line_and_nothing_written(tmp_path, cli):
    memory, tmx = tmp_path / "tm.sqlite", tmp_path / "in.tmx"
    tmx.write_text(TMX.format(srclang="en-US", second="en"), encoding="utf-8")
    assert "fra_Latn" in _refused_with_one_line(cli("tm", "import", str(tmx), "-f", "en", "-t", "sw", "--tm", str(memory)))
    assert "srclang" in _refused_with_one_line(cli("tm", "import", str(tmx), "-f", "de", "-t", "fr", "--tm", str(memory)))
    assert not memory.exists()  # a refused file does not even create the memory
    _fill(memory, OTHER)
    before = _units(memory)
    tmx.write_text(TMX.format(srclang="en-US", second="de"), encoding="utf-8")  # the 2nd unit lacks its srclang
    stderr = _refused_with_one_line(cli("tm", "import", str(tmx), "-f", "en", "-t", "fr", "--tm", str(memory)))
    assert "disagrees" in stderr and _units(memory) == before  # the good first unit was not stored either
    tmx.write_text(TMX.format(srclang="en-US", second="en"), encoding="utf-8")
    assert cli("tm", "import", str(tmx), "-f", "en", "-t", "fr", "--tm", str(memory)).returncode == 0
    assert _units(memory) - before == {
        ("Good <1>morning</1>", "Bonjour <1>matin</1>", "eng_Latn", "fra_Latn", "", HUMAN, ""),
        ("Night", "Nuit", "eng_Latn", "fra_Latn", "", HUMAN, ""),
    }


XLIFF12 = """<?xml version="1.0" encoding="UTF-8"?>
<xliff version="1.2" xmlns="urn:oasis:names:tc:xliff:document:1.2">
 <file original="app" source-language="en" target-language="{target}" datatype="plaintext"><body>
  <trans-unit id="1" approved="yes"><source>Press <g id="a">OK</g> to <x id="b"/>go</source>
   <target>Appuyez sur <g id="a">OK</g> pour <x id="b"/>partir</target></trans-unit>
  <trans-unit id="2"><source>Signed</source><target state="signed-off">Signé</target></trans-unit>
  <trans-unit id="3"><source>Draft</source><target state="translated">Brouillon</target></trans-unit>
  <trans-unit id="4"><source>Broken <g id="a">tag</g></source><target state="final">Cassé sans balise</target>
  </trans-unit>
 </body></file></xliff>"""
XLIFF2 = """<?xml version="1.0" encoding="UTF-8"?>
<xliff version="2.0" xmlns="urn:oasis:names:tc:xliff:document:2.0" srcLang="en" trgLang="fr"><file id="f">
 <unit id="u1"><segment state="reviewed"><source>Hello <pc id="1">dear <pc id="2">friend</pc></pc></source>
  <target><pc id="1">Cher <pc id="2">ami</pc></pc>, bonjour</target></segment></unit>
 <unit id="u2"><segment state="translated"><source>Later</source><target>Plus tard</target></segment></unit>
</file></xliff>"""
PO = """msgid ""
msgstr ""
"Language: fr_FR\\n"
"Plural-Forms: nplurals=2; plural=(n > 1);\\n"

msgctxt "menu"
msgid "Open"
msgstr "Ouvrir (relu)"

#, fuzzy
msgid "Close"
msgstr "Fermer ?"

msgid "Quit"
msgstr ""

#, python-format
msgid "%(n)d file"
msgid_plural "%(n)d files"
msgstr[0] "%(n)d fichier"
msgstr[1] "%(n)d fichiers"
"""


def test_reviewed_xliff_and_po_targets_are_imported_as_human_and_outrank_machine(tmp_path, cli):
    from bayling_local.translate.document import ReadOptions
    from bayling_local.translate.format_xliff import read_xliff

    memory = tmp_path / "tm.sqlite"
    _fill(memory, [MemoryUnit("Open", "Ouvrir (machine)", "eng_Latn", "fra_Latn", "menu", MACHINE, "smollm2")])
    files = {"a.xlf": XLIFF12.format(target="fr-FR"), "b.xliff": XLIFF2, "c.po": PO}
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        result = cli("tm", "import", str(tmp_path / name), "-f", "en", "-t", "fr", "--tm", str(memory))
        assert result.returncode == 0, result.stderr
    assert "skipped 1 (inline codes differ)" in cli(
        "tm", "import", str(tmp_path / "a.xlf"), "-f", "en", "-t", "fr", "--tm", str(memory)
    ).stdout.decode()
    with TranslationMemory.open(memory) as opened:
        human = {(u.source, u.target, u.context) for u in opened.units() if u.origin == HUMAN}
        # what `translate -i` reads from the same file is found as an exact hit
        for text in (XLIFF12.format(target="fr"), XLIFF2):
            for segment in read_xliff(text, ReadOptions("x", overwrite_final=True)).segments[:1]:
                assert opened.exact(segment.text, "eng_Latn", "fra_Latn").origin == HUMAN
        assert opened.exact("Open", "eng_Latn", "fra_Latn", "menu").target == "Ouvrir (relu)"
    assert human == {
        ("Press <1>OK</1> to <2/>go", "Appuyez sur <1>OK</1> pour <2/>partir", ""),
        ("Signed", "Signé", ""),
        ("Hello <1>dear <2>friend</2></1>", "<1>Cher <2>ami</2></1>, bonjour", ""),
        ("Open", "Ouvrir (relu)", "menu"),
        ("%(n)d file", "%(n)d fichier", ""),
        ("%(n)d files", "%(n)d fichiers", ""),
    }
    (tmp_path / "de.xlf").write_text(XLIFF12.format(target="de"), encoding="utf-8")
    before = _units(memory)
    assert "target-language" in _refused_with_one_line(
        cli("tm", "import", str(tmp_path / "de.xlf"), "-f", "en", "-t", "fr", "--tm", str(memory))
    )
    assert _units(memory) == before


def test_stats_prints_counts_per_pair_and_per_origin(tmp_path, cli):
    memory = tmp_path / "tm.sqlite"
    _fill(memory, UNITS + OTHER)
    result = cli("tm", "stats", "--tm", str(memory))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode("utf-8").splitlines()
    assert lines[:4] == [
        "eng_Latn\tfra_Latn\thuman\t3",
        "eng_Latn\tfra_Latn\tmachine\t3",
        "eng_Latn\tfra_Latn\trejected\t1",
        "eng_Latn\tswh_Latn\tmachine\t1",
    ]
    assert lines[4] == f"8 units in {memory} (human 3, machine 4, rejected 1)"
    _refused_with_one_line(cli("tm", "stats", "--tm", str(tmp_path / "none.sqlite")))
