"""What a request costs, from the price table in `prices.csv`.

Prices are USD per 1M tokens, standard and batch, with a higher tier for requests whose
prompt is longer than `tier_threshold_tokens` (200k for Gemini). A synchronous call is billed at
the rates of its service tier (`ONLINE_TIERS`): `standard` (the standard columns) or `flex` (the
optional `flex_*` columns, with their own `flex_source_url` and `flex_as_of`; blank: no Flex price,
and a Flex call with that model is refused before it is sent). Thinking tokens are billed
as output; cached tokens are part of the prompt count and billed at the cached rate.
Users override the table with `COTGEN_PRICES_FILE` (same columns) or an explicit path.
Blank `*_over_200k` cells mean "no higher tier"; a blank cached price means "no discount".
A row's `backend` (`developer`, `vertex`) says which batch API bills at those prices; a blank cell
(or no such column) means both.
"""

import csv
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from cotgen_assets.core.model_io import Usage

PRICES_ENV = "COTGEN_PRICES_FILE"
_KINDS = ("input", "output", "cached_input")
_MODES = ("standard", "batch")
ONLINE_TIERS = ("standard", "flex")  # the synchronous tiers the project prices (priority: not offered)


class UnknownModelError(KeyError):
    """No price row for a model; the message names the models that have one."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


@dataclass(frozen=True)
class Rates:
    """USD per 1M tokens for one mode and prompt-size tier."""

    input: float
    cached_input: float
    output: float


@dataclass(frozen=True)
class ModelPrice:
    model: str
    standard: Rates
    standard_over_threshold: Rates
    batch: Rates
    batch_over_threshold: Rates
    tier_threshold_tokens: int
    source_url: str
    as_of: str
    flex: Rates | None = None  # None: no Flex price in the table
    flex_over_threshold: Rates | None = None
    flex_source_url: str = ""
    flex_as_of: str = ""

    def rates(self, prompt_tokens: int, batch: bool = True) -> Rates:
        """The rates that apply to one request with this many prompt tokens."""
        return self.mode_rates("batch" if batch else "standard", prompt_tokens)

    def mode_rates(self, mode: str, prompt_tokens: int) -> Rates:
        """The rates of `mode` (batch, standard, flex) for one request with this many prompt tokens."""
        over = prompt_tokens > self.tier_threshold_tokens
        base, higher = {
            "batch": (self.batch, self.batch_over_threshold),
            "standard": (self.standard, self.standard_over_threshold),
            "flex": (self.flex, self.flex_over_threshold),
        }[mode]
        if base is None:
            raise UnknownModelError(
                f"no {mode} price for model {self.model!r} in the price table: add its {mode}_* columns "
                f"(or point {PRICES_ENV} at a file that has them), or use another tier"
            )
        return higher if over else base


def default_prices_path() -> Path:
    """The user's file from COTGEN_PRICES_FILE, else the table shipped with the package."""
    override = os.environ.get(PRICES_ENV)
    if override:
        return Path(override)
    return Path(str(resources.files("cotgen_assets").joinpath("prices.csv")))


def _number(row: dict, column: str, where: str, default: float | None = None) -> float:
    text = (row.get(column) or "").strip()
    if not text:
        if default is None:
            raise ValueError(f"{where}: column {column!r} is empty")
        return default
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{where}: column {column!r} is not a number: {text!r}") from None
    if not math.isfinite(number) or number < 0:  # nan or a negative price would defeat max_cost_usd
        raise ValueError(
            f"{where}: column {column!r} is {text!r}, which is no price: write a number of at least 0"
        )
    return number


def _rates(row: dict, mode: str, where: str) -> tuple[Rates, Rates]:
    base = {}
    for kind in ("input", "output"):
        base[kind] = _number(row, f"{mode}_{kind}_usd_per_1m", where)
    base["cached_input"] = _number(row, f"{mode}_cached_input_usd_per_1m", where, base["input"])
    over = {kind: _number(row, f"{mode}_{kind}_over_200k_usd_per_1m", where, base[kind]) for kind in _KINDS}
    return Rates(**base), Rates(**over)


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> dict[tuple[str, str], ModelPrice]:
    """(backend or "", model) -> its prices."""
    prices: dict[tuple[str, str], ModelPrice] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        required = ["model", "tier_threshold_tokens"] + [
            f"{mode}_{kind}_usd_per_1m" for mode in _MODES for kind in ("input", "output")
        ]
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"price file {path} lacks column(s) {', '.join(missing)}")
        for number, row in enumerate(reader, start=2):
            model = (row.get("model") or "").strip()
            if not model:
                continue
            where = f"price file {path}, line {number} ({model})"
            standard, standard_over = _rates(row, "standard", where)
            batch, batch_over = _rates(row, "batch", where)
            flex, flex_over = (
                _rates(row, "flex", where)
                if (row.get("flex_input_usd_per_1m") or "").strip()
                else (None, None)
            )
            prices[(row.get("backend") or "").strip(), model] = ModelPrice(
                model=model,
                standard=standard,
                standard_over_threshold=standard_over,
                batch=batch,
                batch_over_threshold=batch_over,
                tier_threshold_tokens=int(_number(row, "tier_threshold_tokens", where)),
                source_url=(row.get("source_url") or "").strip(),
                as_of=(row.get("as_of") or "").strip(),
                flex=flex,
                flex_over_threshold=flex_over,
                flex_source_url=(row.get("flex_source_url") or "").strip(),
                flex_as_of=(row.get("flex_as_of") or "").strip(),
            )
    if not prices:
        raise ValueError(f"price file {path} has no model rows")
    return prices


def load_prices(path: str | Path | None = None, backend: str = "developer") -> dict[str, ModelPrice]:
    """Model id -> prices on `backend`, from `path`, else COTGEN_PRICES_FILE, else the packaged table.

    A row for the backend beats a row for every backend (blank `backend`)."""
    path = Path(path) if path is not None else default_prices_path()
    if not path.is_file():
        raise FileNotFoundError(f"price file {path} does not exist (set {PRICES_ENV} to another file)")
    rows = _load(str(path.resolve()), path.stat().st_mtime_ns)
    prices = {model: price for (where, model), price in rows.items() if where == ""}
    return prices | {model: price for (where, model), price in rows.items() if where == backend}


def model_price(
    model: str, prices: dict[str, ModelPrice] | None = None, backend: str = "developer"
) -> ModelPrice:
    """The price row of a model id (a `models/` prefix is ignored) on `backend`, unless `prices` is given."""
    prices = load_prices(backend=backend) if prices is None else prices
    model_id = model.removeprefix("models/")
    if model_id not in prices:
        known = ", ".join(sorted(prices))
        raise UnknownModelError(
            f"no price for model {model_id!r}; known models: {known} (on the {backend} batch API). "
            f"Add a row to the price file (or point {PRICES_ENV} at one)."
        )
    return prices[model_id]


def cost_usd(
    model: str, usage: Usage, batch: bool = True, prices: dict | None = None, backend: str = "developer"
) -> float:
    """USD cost of ONE request's usage; sum per request, since the tier is per request."""
    return _cost(model_price(model, prices, backend).rates(usage.input_tokens, batch=batch), usage)


def online_cost_usd(
    model: str, usage: Usage, tier: str, prices: dict | None = None, backend: str = "developer"
) -> float:
    """USD cost of ONE synchronous call's usage at service tier `tier` (one of ONLINE_TIERS)."""
    if tier not in ONLINE_TIERS:
        raise ValueError(
            f"service tier {tier!r} is not one the project prices; use one of {', '.join(ONLINE_TIERS)}"
        )
    return _cost(model_price(model, prices, backend).mode_rates(tier, usage.input_tokens), usage)


def _cost(rates: Rates, usage: Usage) -> float:
    cached = min(usage.cached_tokens, usage.input_tokens)
    return (
        (usage.input_tokens - cached) * rates.input
        + cached * rates.cached_input
        + (usage.thinking_tokens + usage.output_tokens) * rates.output
    ) / 1_000_000
