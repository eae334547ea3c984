"""WordNet 3.0 through nltk's reader, over Debian's ``wordnet-base`` files (/usr/share/wordnet); never downloads.

nltk's ``WordNetCorpusReader`` wants a corpus directory ``<nltk_data>/corpora/wordnet`` holding the Princeton
database files *and* a ``lexnames`` file (the 45 lexicographer file names). Debian ships the database without
``lexnames``, so we build a small cache directory once:

    <cache>/nltk_data/corpora/wordnet/{data,index}.{noun,verb,adj,adv}, *.exc, cntlist.rev   (copied)
    <cache>/nltk_data/corpora/wordnet/lexnames                                            (generated)

Why copies and not symlinks: nltk >= 3.9's path hardening (``nltk.pathsec``) refuses a file whose resolved path
escapes the corpus root (a symlink into /usr/share/wordnet) and refuses multiply-linked files (hardlinks), so
the ~28 MB of database files are copied once; a stamp file (source path, sizes, mtimes) makes later calls free.

``lexnames`` is the fixed public list of WordNet's lexnames(5WN) man page (/usr/share/man/man5/lexnames.5WN.gz
on Debian); it is embedded here because Debian images often drop man pages. nltk's ``map_wn`` only serves the
Open Multilingual Wordnet mapping from its *downloaded* "wordnet" corpus to the loaded one; we have no OMW, so it is
switched off (otherwise nltk looks for an ``index.sense`` that Debian does not ship).

Environment: ``MODALBRIDGE_WORDNET_DIR`` (source, default /usr/share/wordnet), ``MODALBRIDGE_CACHE`` (cache root,
default ``$XDG_CACHE_HOME/modalbridge`` or ``~/.cache/modalbridge``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import warnings
from pathlib import Path
from typing import Any

from modalbridge.errors import UserError
from modalbridge.files import atomic_dir, cache_root

DEFAULT_SOURCE = Path("/usr/share/wordnet")
INSTALL_HINT = "apt-get install wordnet-base"
# Files nltk's reader opens (index.sense is only opened for sense keys, which we do not use).
DB_FILES = tuple(
    [f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")]
    + [f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")]
    + ["cntlist.rev"]
)
# lexnames(5WN): file number (list position), lexicographer file name; syntactic category follows from the prefix.
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_LOCK = threading.Lock()
_READER: Any = None


def source_dir() -> Path:
    return Path(os.environ.get("MODALBRIDGE_WORDNET_DIR", DEFAULT_SOURCE))


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>category`` per line, as in WordNet's own distribution."""
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def _stamp(src: Path) -> str:
    files = {name: [(src / name).stat().st_size, int((src / name).stat().st_mtime)] for name in DB_FILES}
    return json.dumps({"source": str(src.resolve()), "files": files, "lexnames": len(LEXNAMES)}, sort_keys=True)


def ensure_corpus(src: Path | None = None, cache: Path | None = None) -> Path:
    """Build (once) and return the nltk_data root whose ``corpora/wordnet`` nltk's reader can open.

    Raises:
        UserError: the WordNet database files are missing (Debian package ``wordnet-base`` not installed).
    """
    src = Path(src) if src is not None else source_dir()
    missing = [name for name in DB_FILES if not (src / name).is_file()]
    if missing:
        raise UserError(f"WordNet 3.0 database not found in {src} (missing {missing[0]}): {INSTALL_HINT}")
    root = (Path(cache) if cache is not None else cache_root()) / "nltk_data"
    target = root / "corpora" / "wordnet"
    stamp = _stamp(src)
    stamp_file = target / "modalbridge-stamp.json"
    if stamp_file.is_file() and stamp_file.read_text(encoding="utf-8") == stamp:
        return root
    # Build next to the target and swap it in with one rename, so concurrent builders never see half a corpus.
    with atomic_dir(target) as tmp:
        for name in DB_FILES:
            shutil.copyfile(src / name, tmp / name)
        (tmp / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        (tmp / "modalbridge-stamp.json").write_text(stamp, encoding="utf-8")
    return root


def reader():
    """The process-wide nltk ``WordNetCorpusReader`` over WordNet 3.0 (built on first use, ~3 s)."""
    global _READER
    with _LOCK:
        if _READER is None:
            root = ensure_corpus()
            import nltk
            from nltk.corpus.reader.wordnet import WordNetCorpusReader

            class _Reader(WordNetCorpusReader):
                def map_wn(self, version="wordnet"):  # no OMW: nothing to map (see module docstring)
                    return None

            if str(root) not in [str(p) for p in nltk.data.path]:
                nltk.data.path.append(str(root))  # nltk only opens files under its data roots
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "multilingual functions are not available"
                rd = _Reader(str(root / "corpora" / "wordnet"), None)
            if rd.get_version() != "3.0":
                raise UserError(f"expected WordNet 3.0 in {source_dir()}, found version {rd.get_version()}")
            _READER = rd
        return _READER


def synset(wnid: str):
    """Synset of a WordNet id like ``n02084071`` (pos letter + 8-digit offset); UserError if it does not resolve."""
    wnid = str(wnid).strip()
    if len(wnid) != 9 or wnid[0] not in "nvasr" or not wnid[1:].isdigit():
        raise UserError(f"'{wnid}' is not a WordNet id (expected e.g. n02084071)")
    rd = reader()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nltk warns and returns None for an offset between entries
            syn = rd.synset_from_pos_and_offset(wnid[0], int(wnid[1:]))
    except Exception:  # nltk raises WordNetError/ValueError/IndexError depending on the offset
        syn = None
    if syn is None or syn.offset() != int(wnid[1:]):
        raise UserError(f"WordNet id {wnid} not found in WordNet 3.0")
    return syn


def wnid(syn) -> str:
    """WordNet id (``n`` + 8-digit offset) of an nltk synset."""
    return f"{syn.pos().replace('s', 'a')}{syn.offset():08d}"
