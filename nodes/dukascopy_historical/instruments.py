"""Dukascopy price scaling: ``price = points / decimal_factor``, per instrument, never assumed.

The table is Dukascopy's own ``decimalFactor`` for every currency, metal and major crypto pair,
restated from dukascopy-node's generated instrument metadata (repo Leo4815162342/dukascopy-node,
commit 5d1b3f1, ``src/utils/instrument-meta-data/generated/instrument-meta-data.json``; its
``999999.99…`` entries are 1 000 000 written in floating point). Most FX pairs use 100 000,
JPY and HUF quotes 1 000, gold and silver 1 000, BTC/ETH 10, but there are surprises
(DKKJPY 100 000, USDTHB 10 000, XAUJPY 10), hence a table. Anything else (index and commodity
CFDs, stocks) goes in the node's ``decimal_factors`` param.

Pure Python (no numpy): the node's spec imports it to validate params.
"""

from __future__ import annotations

from collections.abc import Mapping

_BY_FACTOR: dict[int, str] = {
    1000000: (
        "AUDCNH CZKTHB CZKTRY MXNCZK MXNTHB "
    ),
    100000: (
        "AEDCNH AEDHKD AEDHUF AEDMXN AEDRON AEDSAR AEDTRY AEDZAR AUDAED AUDCAD AUDCHF AUDDKK AUDHKD AUDILS "
        "AUDMXN AUDNOK AUDNZD AUDPLN AUDRON AUDSAR AUDSEK AUDSGD AUDTRY AUDUSD AUDZAR CADAED CADCHF CADCNH "
        "CADDKK CADHKD CADILS CADMXN CADNOK CADPLN CADRON CADSAR CADSEK CADSGD CADTRY CADZAR CHFAED CHFCNH "
        "CHFDKK CHFHKD CHFILS CHFMXN CHFNOK CHFPLN CHFRON CHFSAR CHFSEK CHFSGD CHFTRY CHFZAR CNHHKD CNHMXN "
        "CNHTRY CNHZAR DKKAED DKKCNH DKKHKD DKKILS DKKJPY DKKMXN DKKRON DKKSAR DKKTRY DKKZAR EURAED EURAUD "
        "EURCAD EURCHF EURCNH EURDKK EURGBP EURHKD EURILS EURMXN EURNOK EURNZD EURPLN EURRON EURSAR EURSEK "
        "EURSGD EURTRY EURUSD EURZAR GBPAED GBPAUD GBPCAD GBPCHF GBPCNH GBPDKK GBPHKD GBPILS GBPMXN GBPNOK "
        "GBPNZD GBPPLN GBPRON GBPSAR GBPSEK GBPSGD GBPTRY GBPUSD GBPZAR HKDJPY HKDMXN HKDTRY HKDZAR ILSAED "
        "ILSCNH ILSHKD ILSMXN ILSRON ILSSAR ILSTRY ILSZAR JPYHUF MXNJPY MXNTRY NOKAED NOKCNH NOKDKK NOKHKD "
        "NOKILS NOKJPY NOKMXN NOKRON NOKSAR NOKSEK NOKTRY NOKZAR NZDAED NZDCAD NZDCHF NZDCNH NZDDKK NZDILS "
        "NZDMXN NZDNOK NZDPLN NZDRON NZDSAR NZDSEK NZDSGD NZDTRY NZDUSD NZDZAR PLNAED PLNCNH PLNDKK PLNHKD "
        "PLNILS PLNMXN PLNNOK PLNRON PLNSAR PLNSEK PLNTHB PLNTRY PLNZAR RONCNH RONHKD RONMXN RONTRY RONZAR "
        "SARCNH SARHKD SARMXN SARRON SARTRY SARZAR SEKAED SEKCNH SEKDKK SEKHKD SEKILS SEKJPY SEKMXN SEKRON "
        "SEKSAR SEKTRY SEKZAR SGDAED SGDCNH SGDDKK SGDHKD SGDILS SGDMXN SGDNOK SGDPLN SGDRON SGDSAR SGDSEK "
        "SGDTRY SGDZAR THBHUF THBJPY TRYTHB USDCAD USDCHF USDCNH USDDKK USDHKD USDILS USDMXN USDNOK USDPLN "
        "USDRON USDSEK USDSGD USDTRY USDZAR XAUXAG ZARMXN ZARTRY "
    ),
    10000: (
        "AEDCZK AUDCZK CADCZK CHFCZK CNHCZK CZKHUF CZKJPY DKKCZK EURCZK GBPCZK HKDCZK ILSCZK MXNHUF NOKCZK "
        "NZDCZK PLNCZK RONCZK SARCZK SEKCZK SGDCZK USDCZK USDTHB ZARCZK "
    ),
    1000: (
        "AEDJPY AEDTHB AUDHUF AUDJPY AUDTHB CADHUF CADJPY CADTHB CHFHUF CHFJPY CHFTHB CNHHUF CNHJPY CNHTHB "
        "DKKHUF DKKTHB EURHUF EURJPY EURTHB GBPHUF GBPJPY GBPTHB HKDHUF HKDTHB ILSHUF ILSJPY ILSTHB NOKHUF "
        "NOKTHB NZDHKD NZDHUF NZDJPY NZDTHB PLNHUF PLNJPY RONHUF RONJPY RONTHB SARHUF SARJPY SARTHB SEKHUF "
        "SEKTHB SGDHUF SGDJPY SGDTHB TRYHUF TRYJPY USDHUF USDJPY XAGAED XAGAUD XAGCAD XAGCHF XAGCNH XAGCZK "
        "XAGDKK XAGEUR XAGGBP XAGHKD XAGHUF XAGILS XAGJPY XAGMXN XAGNOK XAGNZD XAGPLN XAGRON XAGSAR XAGSEK "
        "XAGSGD XAGTHB XAGTRY XAGUSD XAGZAR XAUAED XAUAUD XAUCAD XAUCHF XAUCNH XAUDKK XAUEUR XAUGBP XAUHKD "
        "XAUILS XAUNOK XAUNZD XAUPLN XAURON XAUSAR XAUSEK XAUSGD XAUUSD ZARHUF ZARJPY ZARTHB "
    ),
    100: (
        "USDAED USDSAR "
    ),
    10: (
        "BCHCHF BCHEUR BCHGBP BCHUSD BTCCHF BTCEUR BTCGBP BTCUSD ETHCHF ETHEUR ETHGBP ETHUSD LTCCHF LTCEUR "
        "LTCGBP LTCUSD XAUCZK XAUHUF XAUJPY XAUMXN XAUTHB XAUTRY XAUZAR "
    ),
}

DECIMAL_FACTORS: dict[str, int] = {symbol: factor for factor, names in _BY_FACTOR.items() for symbol in names.split()}
"""Symbol (``EURUSD``) → Dukascopy decimal factor."""


class UnknownInstrument(ValueError):
    """No decimal factor is known for a symbol."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        super().__init__(
            f"no Dukascopy decimal factor for {symbol!r}: add it under params.decimal_factors "
            f"(e.g. decimal_factors: {{{symbol}: 1000}}; price = points / factor)"
        )


def decimal_factor(symbol: str, overrides: Mapping[str, int] | None = None) -> int:
    """The factor of ``symbol``: ``overrides`` first, then the table; :class:`UnknownInstrument` otherwise."""
    if overrides and symbol in overrides:
        return int(overrides[symbol])
    try:
        return DECIMAL_FACTORS[symbol]
    except KeyError:
        raise UnknownInstrument(symbol) from None


def price_digits(factor: int) -> int:
    """Decimal places a factor gives prices (100000 → 5, 1000 → 3, 10 → 1)."""
    digits = 0
    while factor > 1 and factor % 10 == 0:
        factor //= 10
        digits += 1
    return digits
