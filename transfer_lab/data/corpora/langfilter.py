"""Per-paragraph language filter: a cheap stopword/script vote, langdetect for the unsure rest.

langdetect costs ~3.5 ms a paragraph (too slow for ~200k paragraphs on 2 cores), so most
paragraphs are decided by counting function words (en/de/es) or Han characters (zh); only
paragraphs where the vote is unclear go to langdetect, seeded (DetectorFactory.seed = 0) so
the result is deterministic.
"""

from __future__ import annotations

import bisect
import re

STOPWORDS = {
    "en": set("the and of to is that it for you with are this be on not as by from at an have "
              "if can will which was we they but there when what your has been use used into "
              "their more other these should would may must its than only any such each then "
              "also were all who how he she his her him my our me do does did why where "
              "about just like because out up".split()),
    "de": set("der die und den von zu das mit sich des auf für ist im dem nicht ein eine als "
              "auch es werden aus er hat dass sie nach wird bei einer um am sind noch wie einem "
              "über einen so zum kann oder wenn diese ich du wir ihr sein wurde zur durch "
              "nur vom gibt wird können muss sollte dieser dieses beim".split()),
    "es": set("de la que el en y los del se las por un para con una su al es lo como más pero "
              "sus le ya este si porque esta entre cuando muy sin sobre también me hasta hay "
              "donde desde puede todo nos uno les ni ese eso ellos esto antes unos otro otra "
              "él tanto esa estos mucho nada cual ella estar estas algo usted puede".split()),
}
# words shared by two languages vote for neither
_SHARED = {w for a in STOPWORDS for b in STOPWORDS if a < b for w in STOPWORDS[a] & STOPWORDS[b]}
for _words in STOPWORDS.values():
    _words -= _SHARED
WORD = re.compile(r"[^\W\d_]+")
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
KANA_HANGUL = re.compile(r"[\u3040-\u30ff\uac00-\ud7af]")
LATIN_WORD = re.compile(r"[A-Za-zÀ-ÿ]+")
_DETECT_CHARS = 300
_TRIALS = 3
_detector_ready = False


def _langdetect(text: str) -> str | None:
    """langdetect's best language, seeded; 3 trials instead of 7 (2.3x faster, same top-1
    on paragraphs in our measurements)."""
    global _detector_ready
    from langdetect import DetectorFactory, detector_factory
    from langdetect.lang_detect_exception import LangDetectException

    if not _detector_ready:
        DetectorFactory.seed = 0
        detector_factory.init_factory()
        detector_factory._factory.set_seed(0)
        _detector_ready = True
    detector = detector_factory._factory.create()
    detector.n_trial = _TRIALS
    detector.append(text[:_DETECT_CHARS])
    try:
        return detector.detect()
    except LangDetectException:
        return None


def vote(paragraph: str, language: str) -> bool | None:
    """True keep / False drop when the cheap vote is sure, None when unsure."""
    if language == "zh":
        han = len(HAN.findall(paragraph))
        latin = len(LATIN_WORD.findall(paragraph))
        if KANA_HANGUL.search(paragraph) and len(KANA_HANGUL.findall(paragraph)) > han / 4:
            return False
        if han >= 2 and han >= latin:
            return True
        if han == 0:
            return False
        return None
    words = [w.lower() for w in WORD.findall(paragraph)]
    if not words:
        return False  # no letters: numbers, rules, ascii art
    visible = len(paragraph) - paragraph.count(" ") - paragraph.count("\n")
    if sum(map(len, words)) < 0.55 * visible:
        return False  # symbol-heavy: code, tables, ascii art
    if HAN.search(paragraph) and len(HAN.findall(paragraph)) > len(words):
        return False
    hits = {lang: sum(w in stops for w in words) for lang, stops in STOPWORDS.items()}
    mine = hits[language]
    other = max(v for k, v in hits.items() if k != language)
    if mine >= 2 and mine >= 3 * other and mine >= 0.06 * len(words):
        return True
    if mine >= 1 and other == 0 and mine >= 0.08 * len(words):
        return True
    if other >= 3 and other >= 3 * mine or other >= 2 and mine == 0:
        return False
    return None


def _decide(paragraph: str, language: str) -> bool:
    found = _langdetect(paragraph)
    if found is None:
        return False
    return found.startswith("zh") if language == "zh" else found == language


def filter_paragraphs(paragraphs: list[str], language: str, short_words: int = 5) -> list[bool]:
    """Keep-flags for a document's paragraphs.

    Short unsure paragraphs (headings, "-- Author" lines) take the decision of the nearest
    sure paragraph of the same document: langdetect is unreliable on a few words.
    """
    flags: list[bool | None] = []
    for paragraph in paragraphs:
        sure = vote(paragraph, language)
        if sure is None:
            size = (len(HAN.findall(paragraph)) // 2 if language == "zh"
                    else len(WORD.findall(paragraph)))
            if size >= short_words:
                sure = _decide(paragraph, language)
        flags.append(sure)
    decided = [i for i, f in enumerate(flags) if f is not None]
    out = []
    for i, flag in enumerate(flags):
        if flag is None:
            if decided:
                at = bisect.bisect_left(decided, i)
                near = [j for j in (decided[at - 1] if at else None,
                                    decided[at] if at < len(decided) else None) if j is not None]
                flag = flags[min(near, key=lambda j: (abs(j - i), j > i))]
            else:
                flag = _decide(paragraphs[i], language)
        out.append(bool(flag))
    return out
