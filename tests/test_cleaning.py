"""Tests for emitlab.data.cleaning, on made-up example sentences with exact expected outputs."""

from __future__ import annotations

import dataclasses
import json

import emoji
import pytest

from emitlab.data.cleaning import CleaningConfig, TextCleaner

# The emoji library's Italian name for 😂 (emoji 2.16: ":faccina_con_lacrime_di_gioia:").
JOY = "faccina con lacrime di gioia"


def clean(text: str, **options) -> str:
    return TextCleaner(CleaningConfig(**options))(text)


# Everything off except the rule under test, so each test pins down one rule.
OFF = dict(
    urls="keep",
    mentions="keep",
    retweet_prefix="keep",
    hashtags="keep",
    split_camel_case=False,
    emoji="keep",
    lowercase=False,
    normalize_whitespace=False,
    max_repeat_chars=0,
)


def only(**options) -> dict:
    return {**OFF, **options}


# --------------------------------------------------------------------------- defaults


def test_default_pipeline_on_a_typical_retweet():
    text = "RT @user: Che bella giornata 😂 #BuonaDomenica https://t.co/xyz"
    assert clean(text) == f"Che bella giornata {JOY} BuonaDomenica url"


def test_default_config_values():
    cfg = CleaningConfig()
    assert cfg.to_dict() == {
        "enabled": True,
        "urls": "token",
        "mentions": "token",
        "retweet_prefix": "remove",
        "hashtags": "word",
        "split_camel_case": False,
        "emoji": "words",
        "lowercase": False,
        "normalize_whitespace": True,
        "max_repeat_chars": 0,
    }


def test_every_field_has_help_text():
    for f in dataclasses.fields(CleaningConfig):
        assert f.metadata.get("help"), f.name


def test_default_out_of_domain_comment():
    text = "Questa canzone mi ricorda l'estate!!\nChi la ascolta nel 2024? ❤️"
    assert clean(text) == "Questa canzone mi ricorda l'estate!! Chi la ascolta nel 2024? cuore rosso"


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token", "guarda url e anche url oppure url fine"),
        ("remove", "guarda  e anche  oppure  fine"),
        ("keep", "guarda https://t.co/AbC123 e anche www.esempio.it/pagina oppure http://esempio.it/a?b=1 fine"),
    ],
)
def test_urls_modes(mode, expected):
    text = "guarda https://t.co/AbC123 e anche www.esempio.it/pagina oppure http://esempio.it/a?b=1 fine"
    assert clean(text, **only(urls=mode)) == expected


def test_url_trailing_punctuation_stays_with_the_sentence():
    assert clean("leggi qui: https://t.co/abc.", **only(urls="token")) == "leggi qui: url."
    assert clean("(vedi https://esempio.it/x)", **only(urls="token")) == "(vedi url)"


def test_url_glued_to_a_word_gets_a_space():
    assert clean("incredibilehttps://t.co/abc", **only(urls="token")) == "incredibile url"


def test_bare_tco_link_is_a_url():
    assert clean("foto t.co/Zz9 bella", **only(urls="token")) == "foto url bella"


def test_hash_inside_url_is_not_a_hashtag():
    text = "vedi https://esempio.it/pagina/#sezione #Bello"
    assert clean(text, **only(urls="keep", hashtags="word")) == "vedi https://esempio.it/pagina/#sezione Bello"
    assert clean(text, **only(urls="keep", hashtags="remove")) == "vedi https://esempio.it/pagina/#sezione "


def test_at_sign_inside_url_is_not_a_mention():
    text = "profilo https://esempio.it/@autore ciao @Mario"
    assert clean(text, **only(urls="keep", mentions="token")) == "profilo https://esempio.it/@autore ciao @user"


def test_kept_url_is_not_lowercased_or_deduplicated():
    text = "Link https://t.co/AAAAbC OK"
    assert clean(text, **only(urls="keep", lowercase=True, max_repeat_chars=2)) == "link https://t.co/AAAAbC ok"


# --------------------------------------------------------------------------- mentions


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token", "grazie @user e @user!"),
        ("remove", "grazie  e !"),
        ("keep", "grazie @Mario_Rossi99 e @user!"),
    ],
)
def test_mentions_modes(mode, expected):
    assert clean("grazie @Mario_Rossi99 e @user!", **only(mentions=mode)) == expected


def test_email_address_is_not_a_mention():
    assert clean("scrivi a nome@esempio.it", **only(mentions="token")) == "scrivi a nome@esempio.it"


# --------------------------------------------------------------------------- retweet prefix


@pytest.mark.parametrize(
    "text, expected",
    [
        ("RT @user: testo", "testo"),
        ("RT @user testo", "testo"),
        ("RT : testo", "testo"),
        ("RT testo", "testo"),
        ("RT @user: RT @altro: testo annidato", "testo annidato"),
        ("  RT @user:testo", "testo"),
    ],
)
def test_retweet_prefix_remove(text, expected):
    assert clean(text, **only(retweet_prefix="remove")) == expected


def test_retweet_not_at_the_start_stays():
    text = "Fate RT @user: per favore"
    assert clean(text, **only(retweet_prefix="remove")) == text


def test_words_starting_with_rt_are_not_a_prefix():
    assert clean("RTL trasmette musica", **only(retweet_prefix="remove")) == "RTL trasmette musica"
    assert clean("rt non maiuscolo", **only(retweet_prefix="remove")) == "rt non maiuscolo"


def test_retweet_prefix_keep():
    assert clean("RT @user: testo", **only(retweet_prefix="keep")) == "RT @user: testo"


def test_retweet_prefix_is_removed_before_mentions():
    # The prefix's mention must go with the prefix, not be turned into a stray "@user" first.
    assert clean("RT @Pippo: ciao @Pluto", **only(retweet_prefix="remove", mentions="token")) == "ciao @user"


# --------------------------------------------------------------------------- hashtags


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("word", "viva BuonaDomenica e governoconte!"),
        ("keep", "viva #BuonaDomenica e #governoconte!"),
        ("remove", "viva  e !"),
    ],
)
def test_hashtags_modes(mode, expected):
    assert clean("viva #BuonaDomenica e #governoconte!", **only(hashtags=mode)) == expected


def test_hashtag_underscores_become_spaces_in_word_mode():
    assert clean("#forza_azzurri", **only(hashtags="word")) == "forza azzurri"


def test_numbers_and_html_entities_are_not_hashtags():
    assert clean("siamo #1 &#39;", **only(hashtags="word")) == "siamo #1 &#39;"


# --------------------------------------------------------------------------- camel case


@pytest.mark.parametrize(
    "text, expected",
    [
        ("#BuonaDomenica", "Buona Domenica"),
        ("#COVID19", "COVID19"),
        ("#governoconte", "governoconte"),
        ("#Italia2020", "Italia 2020"),
        ("#5Stelle", "5 Stelle"),
        ("#TGLa7", "TG La 7"),
        ("#DaVinciCode", "Da Vinci Code"),
        ("#forza_ItaliaBella", "forza Italia Bella"),
        ("#PerchéNo", "Perché No"),
    ],
)
def test_split_camel_case_on(text, expected):
    assert clean(text, **only(hashtags="word", split_camel_case=True)) == expected


def test_split_camel_case_off():
    assert clean("#BuonaDomenica #Italia2020", **only(hashtags="word")) == "BuonaDomenica Italia2020"


def test_split_camel_case_only_applies_in_word_mode():
    assert clean("#BuonaDomenica", **only(hashtags="keep", split_camel_case=True)) == "#BuonaDomenica"


def test_camel_split_before_lowercase():
    assert (
        clean("#BuonaDomenica", **only(hashtags="word", split_camel_case=True, lowercase=True)) == "buona domenica"
    )


# --------------------------------------------------------------------------- emoji


def test_installed_emoji_library_italian_name():
    # Guards the expectation below: the Italian CLDR name that emoji.demojize gives 😂.
    assert emoji.demojize("😂", language="it") == ":faccina_con_lacrime_di_gioia:"


def test_emoji_words():
    assert clean("che ridere 😂", **only(emoji="words")) == f"che ridere {JOY}"


def test_emoji_words_do_not_glue_to_neighbours():
    assert clean("ahah😂😂bello", **only(emoji="words")) == f"ahah {JOY} {JOY} bello"
    assert clean("davvero?😂!", **only(emoji="words")) == f"davvero? {JOY}!"


def test_emoji_words_sequences_and_modifiers():
    text = "forza 🇮🇹 👍🏻 ❤️"
    assert clean(text, **only(emoji="words")) == "forza bandiera italia pollice in su carnagione chiara cuore rosso"


def test_emoji_remove():
    assert clean("che ridere 😂 ❤️ 👍🏻 fine", **only(emoji="remove")) == "che ridere    fine"


def test_emoji_keep():
    assert clean("che ridere 😂", **only(emoji="keep")) == "che ridere 😂"


def test_emoji_words_then_whitespace_normalisation():
    assert clean(" 😂\n\n😂 ", **only(emoji="words", normalize_whitespace=True)) == f"{JOY} {JOY}"


# --------------------------------------------------------------------------- whitespace


def test_normalize_whitespace_on():
    assert clean("  prima riga\n\nseconda\t\triga  ", **only(normalize_whitespace=True)) == "prima riga seconda riga"


def test_normalize_whitespace_off():
    text = "  prima riga\n\nseconda\t\triga  "
    assert clean(text, **only(normalize_whitespace=False)) == text


# --------------------------------------------------------------------------- lowercase


def test_lowercase_on():
    assert clean("Che BELLA Giornata", **only(lowercase=True)) == "che bella giornata"


def test_lowercase_off():
    assert clean("Che BELLA Giornata", **only(lowercase=False)) == "Che BELLA Giornata"


# --------------------------------------------------------------------------- repeated characters


@pytest.mark.parametrize(
    "n, expected",
    [
        (3, "bellissimooo!!! nooo"),
        (2, "bellissimoo!! noo"),
        (1, "belisimo! no"),  # 1 also merges Italian double letters: allowed, but not useful
    ],
)
def test_max_repeat_chars(n, expected):
    assert clean("bellissimoooooo!!!!!! noooo", **only(max_repeat_chars=n)) == expected


def test_max_repeat_chars_off_and_digits_untouched():
    assert clean("bellissimoooooo", **only(max_repeat_chars=0)) == "bellissimoooooo"
    assert clean("costa 1000000 euro", **only(max_repeat_chars=2)) == "costa 1000000 euro"


# --------------------------------------------------------------------------- disabled


def test_disabled_is_identity():
    text = "RT @user: Che   bella 😂 #BuonaDomenica https://t.co/xyz\n"
    cleaner = TextCleaner(CleaningConfig(enabled=False, lowercase=True, max_repeat_chars=2))
    assert cleaner(text) == text
    assert cleaner.clean_many([text, ""]) == [text, ""]


# --------------------------------------------------------------------------- clean_many / misc


def test_clean_many_matches_call():
    cleaner = TextCleaner()
    texts = ["RT @user: ciao", "a   b", (t for t in ["#Ciao"])]
    assert cleaner.clean_many(texts[:2]) == ["ciao", "a b"]
    assert cleaner.clean_many(texts[2]) == ["Ciao"]
    assert cleaner.clean_many([]) == []


def test_empty_text():
    assert TextCleaner()("") == ""


def test_default_cleaner_without_config():
    assert TextCleaner()("RT @user: ok") == "ok"


# --------------------------------------------------------------------------- (de)serialisation


def test_round_trip_through_json():
    cfg = CleaningConfig(
        urls="remove",
        mentions="keep",
        retweet_prefix="keep",
        hashtags="remove",
        split_camel_case=True,
        emoji="remove",
        lowercase=True,
        normalize_whitespace=False,
        max_repeat_chars=4,
        enabled=False,
    )
    restored = CleaningConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert restored == cfg
    cleaner = TextCleaner.from_dict(json.loads(json.dumps(TextCleaner(cfg).to_dict())))
    assert cleaner.config == cfg


def test_from_dict_missing_keys_take_defaults():
    assert CleaningConfig.from_dict({"lowercase": True}) == CleaningConfig(lowercase=True)


def test_from_dict_unknown_key():
    with pytest.raises(ValueError, match="unknown key.*colour"):
        CleaningConfig.from_dict({"urls": "keep", "colour": "blu"})
    with pytest.raises(ValueError, match="unknown key.*colour"):
        TextCleaner.from_dict({"colour": "blu"})


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "field_name, bad",
    [
        ("urls", "placeholder"),
        ("mentions", "delete"),
        ("retweet_prefix", "token"),
        ("hashtags", "words"),
        ("emoji", "word"),
    ],
)
def test_bad_choice_names_field_and_allowed_values(field_name, bad):
    with pytest.raises(ValueError) as excinfo:
        CleaningConfig(**{field_name: bad})
    message = str(excinfo.value)
    assert field_name in message
    assert repr(bad) in message
    allowed = {f.name: f.metadata["choices"] for f in dataclasses.fields(CleaningConfig) if "choices" in f.metadata}
    for value in allowed[field_name]:
        assert repr(value) in message


@pytest.mark.parametrize(
    "field_name, bad",
    [
        ("max_repeat_chars", -1),
        ("max_repeat_chars", "3"),
        ("max_repeat_chars", True),
        ("lowercase", "yes"),
        ("enabled", 1),
        ("split_camel_case", None),
        ("normalize_whitespace", 0),
    ],
)
def test_bad_types_name_the_field(field_name, bad):
    with pytest.raises(ValueError, match=field_name):
        CleaningConfig(**{field_name: bad})


def test_bad_value_in_from_dict_names_the_field():
    with pytest.raises(ValueError, match="urls"):
        CleaningConfig.from_dict({"urls": "sometimes"})


def test_bare_url_prefix_is_not_a_url():
    assert clean("scrivi https:// oppure www. ecco", **only(urls="token")) == "scrivi https:// oppure www. ecco"
