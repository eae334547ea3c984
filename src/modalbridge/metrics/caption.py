"""COCO caption metrics exactly as coco-caption / pycocoevalcap compute them, plus a Unicode path for other languages.

English (``lang="en"``), the published pipeline (Chen et al. 2015, https://arxiv.org/abs/1504.00325):
  1. Stanford PTBTokenizer (CoreNLP 3.4.1 jar shipped in pycocoevalcap; ``-preserveLines -lowerCase``), then removal
     of pycocoevalcap's ``PUNCTUATIONS`` tokens;
  2. ``Bleu(4)`` (``closest`` reference length), ``Meteor`` 1.5 (``-l en -norm``), ``Rouge`` (ROUGE-L, beta 1.2),
     all pycocoevalcap's own classes;
  3. CIDEr = pycocoevalcap's ``Cider`` (which *is* CIDEr-D: clipped counts + Gaussian length penalty, sigma 6,
     x10, idf from the evaluated references; Vedantam et al. 2015, https://arxiv.org/abs/1411.5726), re-implemented
     here operation for operation in plain Python floats (same n-gram order, same sums, numpy only where the
     reference uses numpy reductions), because the reference spends most of its time in numpy scalar calls. The
     golden test checks it against pycocoevalcap's class to the last bit; ``reference_cider=True`` runs the class.

Deviations from calling pycocoevalcap by hand, each one only where the reference would break:
  * captions are put on one line with whitespace runs collapsed (the Java tokenizer treats ``\\u2028`` and ``\\r``
    as line ends, which would silently shift every later caption onto the wrong image);
  * the tokenizer reads stdin instead of a temp file written into site-packages (read-only installs work), and its
    line count is checked;
  * ``|||`` (METEOR's field separator) is removed from references too, not just from hypotheses.

Other languages (``lang != "en"``): the PTB tokenizer drops or mangles non-ASCII text (emoji vanish, quotes turn into
`````), so captions are tokenized with :func:`modalbridge.words.tokenize` (lower-case, punctuation dropped,
any script). BLEU/ROUGE-L/CIDEr are then language-independent n-gram statistics. METEOR is reported only for
English: pycocoevalcap ships only the English paraphrase table and function-word list needed for the published
METEOR configuration, so for other languages ``"METEOR"`` is ``None`` and a warning says why.

SPICE is not offered: pycocoevalcap's ``Spice`` downloads Stanford CoreNLP models on first use, which an offline
install cannot do.

Speed (bench/bench_metrics.py): with ``meteor=False`` 5,000 images x 5 references score in a few seconds; METEOR
adds a JVM with a 2 GB heap and roughly 1 ms per image.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
import subprocess
import warnings
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np

from modalbridge.errors import UserError

METRIC_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
JAVA_HINT = "apt-get install default-jre-headless"
_WS = re.compile(r"\s+")


# -------------------------------------------------------------------------------------------------- java


def java_executable() -> str:
    """Path of ``java``, or a UserError saying how to install it."""
    java = shutil.which("java")
    if java is None:
        raise UserError(
            "the COCO caption metrics (PTB tokenizer, METEOR) need Java, which is not installed: "
            f"{JAVA_HINT} (or pass tokenizer='unicode' and meteor=False)"
        )
    return java


def one_line(text: str) -> str:
    """Collapse all whitespace (including ``\\r``, ``\\u2028``, ``\\x85``) to single spaces and strip."""
    return _WS.sub(" ", text).strip()


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """Tokenize like pycocoevalcap's ``PTBTokenizer``: Stanford PTBTokenizer, lower-case, punctuation removed.

    One Java call for all sentences (``-preserveLines`` keeps one output line per input line).
    """
    from pycocoevalcap.tokenizer import ptbtokenizer as ptb

    if not sentences:
        return []
    jar = Path(ptb.__file__).resolve().parent / ptb.STANFORD_CORENLP_3_4_1_JAR
    cmd = [java_executable(), "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase"]
    text = "\n".join(one_line(s) for s in sentences) + "\n"
    proc = subprocess.run(cmd, input=text.encode("utf-8"), capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"Stanford PTBTokenizer failed (exit {proc.returncode}): {err[-1] if err else ''}")
    lines = proc.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences) or any(line.strip() for line in lines[len(sentences) :]):
        raise RuntimeError(f"Stanford PTBTokenizer returned {len(lines)} lines for {len(sentences)} captions")
    punct = set(ptb.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punct) for line in lines[: len(sentences)]]


def unicode_tokenize(sentences: Sequence[str]) -> list[str]:
    """Lower-cased words of any script, punctuation dropped (see :func:`modalbridge.words.tokenize`)."""
    from modalbridge.words import tokenize

    return [" ".join(tokenize(s, lower=True, punct=False)) for s in sentences]


# ------------------------------------------------------------------------------------------------- CIDEr-D


def cider_d(
    gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, str], n: int = 4, sigma: float = 6.0
) -> tuple[float, np.ndarray]:
    """CIDEr-D of tokenized captions, bit-identical to ``pycocoevalcap.cider.Cider().compute_score``.

    Same arithmetic in the same order as the reference; the speed comes from hashing each n-gram tuple once
    (to an int id) and from plain floats instead of numpy scalars.

    Args:
        gts: image id -> tokenized reference strings (words separated by single spaces).
        res: image id -> one tokenized hypothesis string (same keys as ``gts``).
        n: largest n-gram order.
        sigma: std of the Gaussian length penalty.

    Returns:
        ``(corpus score, per-image scores in gts key order)``.
    """
    ids: dict[tuple[str, ...], int] = {}

    def precook(sentence: str) -> list[dict[int, int]]:
        # n-gram id -> count, one dict per order; insertion order = the reference's (order 1 first, left to right).
        words = sentence.split()
        out = []
        for k in range(1, n + 1):
            counts = Counter(zip(*(words[i:] for i in range(k)), strict=False))  # C loop, first-seen order kept
            out.append({ids.setdefault(g, len(ids)): tf for g, tf in counts.items()})
        return out

    keys = list(gts)
    crefs = [[precook(r) for r in gts[k]] for k in keys]
    ctest = [precook(res[k]) for k in keys]
    df = [0] * len(ids)  # in how many images' reference sets each n-gram occurs
    for refs in crefs:
        for j in set().union(*(c for ref in refs for c in ref)):
            df[j] += 1
    # idf: the reference calls np.log(max(1.0, df)) per n-gram; the same scalar calls on the distinct counts give
    # the same bits. An n-gram missing from all references has df 0 -> log(1) = 0 -> weight ref_len.
    ref_len = float(np.log(float(len(crefs))))
    log_of = {c: float(np.log(max(1.0, float(c)))) for c in set(df)}
    weight = [ref_len - log_of[c] for c in df]
    penalty_den = 2 * sigma**2

    def counts2vec(cnts: list[dict[int, int]]):
        vecs, norms = [], []
        for counts in cnts:
            vec = {j: float(tf) * weight[j] for j, tf in counts.items()}
            sq = 0.0
            for x in vec.values():
                sq += x**2  # libm pow like the reference (x * x differs in the last bit now and then)
            vecs.append(vec)
            norms.append(math.sqrt(sq))
        length = sum(cnts[1].values()) if n > 1 else 0  # sic: pycocoevalcap's "length" counts bigrams
        return vecs, norms, length

    scores = []
    for test, refs in zip(ctest, crefs, strict=True):
        vec, norm, length = counts2vec(test)
        total = [0.0] * n
        for ref in refs:
            vec_r, norm_r, length_r = counts2vec(ref)
            delta = float(length - length_r)
            penalty = math.e ** (-(delta**2) / penalty_den)
            for k in range(n):
                vr = vec_r[k]
                val = 0.0
                for j, x in vec[k].items():
                    r = vr.get(j, 0.0)
                    val += min(x, r) * r  # clipped tf-idf dot product (the "-D" of CIDEr-D)
                if norm[k] != 0 and norm_r[k] != 0:
                    val /= norm[k] * norm_r[k]
                total[k] += val * penalty
        scores.append(np.mean(np.array(total)) / len(refs) * 10.0)
    arr = np.array(scores, dtype=np.float64)
    return float(np.mean(arr)), arr


# -------------------------------------------------------------------------------------------------- score


def _check_inputs(refs: Mapping, hyps: Mapping) -> list:
    if not isinstance(refs, Mapping) or not isinstance(hyps, Mapping):
        raise UserError("refs and hyps must be dicts keyed by image id")
    if not hyps:
        raise UserError("no captions to score (hyps is empty)")
    missing = [k for k in hyps if k not in refs]
    if missing:
        raise UserError(f"{len(missing)} hypotheses have no references, e.g. {missing[:3]}")
    unscored = [k for k in refs if k not in hyps]
    if unscored:
        raise UserError(f"{len(unscored)} images with references have no hypothesis, e.g. {unscored[:3]}")
    for k in hyps:
        r, h = refs[k], hyps[k]
        if isinstance(r, str) or not isinstance(r, Sequence) or not r or not all(isinstance(s, str) for s in r):
            raise UserError(f"references of image {k!r} must be a non-empty list of strings")
        if not isinstance(h, str):
            raise UserError(f"hypothesis of image {k!r} must be a string, got {type(h).__name__}")
    return list(hyps)


def score(
    refs: Mapping[Hashable, Sequence[str]],
    hyps: Mapping[Hashable, str],
    lang: str = "en",
    meteor: bool = True,
    tokenizer: str = "auto",
    reference_cider: bool = False,
) -> dict[str, float | int | None]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) of ``hyps`` against ``refs``, on pycocoevalcap's scale.

    Args:
        refs: image id -> reference captions (raw text).
        hyps: image id -> generated caption (raw text); must have exactly the keys of ``refs``.
        lang: ISO code of the captions' language; anything but ``"en"`` switches to the Unicode tokenizer and
            leaves METEOR out.
        meteor: compute METEOR (English only; starts a JVM). ``False`` is the fast path; ``"METEOR"`` is then None.
        tokenizer: ``"auto"`` (PTB for English, Unicode otherwise), ``"ptb"`` or ``"unicode"`` (no Java needed).
        reference_cider: run pycocoevalcap's own ``Cider`` class instead of the identical faster port.

    Returns:
        ``{"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr": float (METEOR may be None), "n_images": int}``.

    Raises:
        UserError: mismatched ids, empty reference lists, non-strings, or Java missing when it is needed.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    keys = _check_inputs(refs, hyps)
    lang = (lang or "en").lower().split("-")[0].split("_")[0]
    if tokenizer == "auto":
        tokenizer = "ptb" if lang == "en" else "unicode"
    if tokenizer not in ("ptb", "unicode"):
        raise UserError(f"tokenizer must be 'auto', 'ptb' or 'unicode', got {tokenizer!r}")
    use_meteor = meteor and lang == "en"
    if meteor and lang != "en":
        warnings.warn(
            f"METEOR is not computed for lang={lang!r}: pycocoevalcap ships METEOR 1.5 resources for English only",
            stacklevel=2,
        )
    if tokenizer == "ptb" or use_meteor:
        java_executable()

    flat = [s for k in keys for s in refs[k]] + [hyps[k] for k in keys]
    tokens = ptb_tokenize(flat) if tokenizer == "ptb" else unicode_tokenize(flat)
    gts, res, i = {}, {}, 0
    for k in keys:
        gts[k] = tokens[i : i + len(refs[k])]
        i += len(refs[k])
    for k in keys:
        res[k] = [tokens[i]]
        i += 1

    out: dict[str, float | int | None] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its ratio; stdout may carry --json output
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n_, b in enumerate(bleu, start=1):
        out[f"BLEU-{n_}"] = float(b)
    out["METEOR"] = _meteor(gts, res) if use_meteor else None
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if reference_cider:
        from pycocoevalcap.cider.cider import Cider

        out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    else:
        out["CIDEr"] = cider_d({k: gts[k] for k in keys}, {k: res[k][0] for k in keys})[0]
    out["n_images"] = len(keys)
    return out


def _meteor(gts: dict, res: dict) -> float:
    """pycocoevalcap's Meteor (METEOR 1.5, ``-l en -norm``) over the tokenized captions; its JVM is closed after."""
    from pycocoevalcap.meteor.meteor import Meteor

    gts = {k: [r.replace("|||", "") for r in v] for k, v in gts.items()}
    scorer = Meteor()
    try:
        value, _ = scorer.compute_score(gts, res)
    except (ValueError, BrokenPipeError) as e:
        err = scorer.meteor_p.stderr.read(2000).decode("utf-8", "replace") if scorer.meteor_p.poll() is not None else ""
        raise RuntimeError(f"METEOR (java) failed: {type(e).__name__}: {err.strip()[:300]}") from None
    finally:
        proc = scorer.meteor_p
        if scorer.lock.locked():
            scorer.lock.release()
        del scorer  # its __del__ closes stdin and kills the JVM
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return float(value)
