"""A tiny random BERT with a small WordPiece vocabulary, built locally in a second."""

from __future__ import annotations

from pathlib import Path

from synthetic import make_rows


def build_tiny_bert(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    _, texts, _, _ = make_rows(300, 0, "x")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(texts + ["query: url user"],
                            trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=0)
    BertModel(config).save_pretrained(folder)
    return folder


def build_tiny_roberta_family(folder: Path, model_type: str, seed: int = 0) -> Path:
    """A tiny random CamemBERT (UmBERTo's architecture: a SentencePiece-style BPE) or XLM-RoBERTa (a
    SentencePiece-style Unigram, as XLM-R's) with its tokenizer trained locally on the synthetic texts,
    saved as a ``PreTrainedTokenizerFast`` (``tokenizer.json`` loads as it is)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (
        CamembertConfig,
        CamembertModel,
        PreTrainedTokenizerFast,
        XLMRobertaConfig,
        XLMRobertaModel,
    )

    folder.mkdir(parents=True, exist_ok=True)
    _, texts, _, _ = make_rows(300, 0, "x")
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    if model_type == "camembert":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials)
        config_cls, model_cls = CamembertConfig, CamembertModel
    elif model_type == "xlm-roberta":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=specials, unk_token="<unk>")
        config_cls, model_cls = XLMRobertaConfig, XLMRobertaModel
    else:
        raise ValueError(model_type)
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts + ["query: url user"], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                   model_max_length=128)
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = config_cls(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.token_to_id("<pad>"),
                        bos_token_id=tok.token_to_id("<s>"), eos_token_id=tok.token_to_id("</s>"), type_vocab_size=1)
    model_cls(config).save_pretrained(folder)
    return folder
