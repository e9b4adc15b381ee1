"""The kinds of value a setting takes: each parses one raw context value on its own, or says what it
allows. Values given with ``-c`` arrive as strings, so every kind accepts the string form too.

A kind knows nothing of other settings; rules between settings are trn_constructs.setting_rules'.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping, Protocol

from trn_burnin.catalog import CATALOG, OVERRIDES, CatalogOverrideError, InstanceSpec, apply_overrides
from trn_constructs.capacity_purchase.handler.capacity_block.request import TAG_PREFIX as KIT_TAG_PREFIX

GIVEN: Any = object()  # a Problem's value: the value as given


@dataclass(frozen=True)
class Problem:
    """One line's worth: what is allowed, for ``value``, of the setting (or of a part of it such as
    ``.trn3-gen1.efaNetworkCards``)."""

    allowed: str
    value: Any = GIVEN
    part: str = ""


class Invalid(Exception):
    """A value its kind does not accept, with one or more problems."""

    def __init__(self, *problems: Problem | str):
        super().__init__(problems)
        self.problems = tuple(p if isinstance(p, Problem) else Problem(p) for p in problems)


class Kind(Protocol):
    allowed: str  # what the line of a value it rejects says is allowed

    def parse(self, value: Any) -> Any:
        """The typed value of ``value``, or Invalid."""


class Text:
    """A string, stripped, matching ``pattern`` when there is one."""

    def __init__(self, allowed: str, pattern: str | None = None):
        self.allowed, self._pattern = allowed, pattern

    def parse(self, value: Any) -> str:
        if not isinstance(value, str):
            raise Invalid(f"{self.allowed} (a string: in cdk.json, in quotes)")
        if self._pattern and not re.fullmatch(self._pattern, value.strip()):
            raise Invalid(self.allowed)
        return value.strip()


class Choice(Text):
    def __init__(self, options: tuple[str, ...]):
        super().__init__(" or ".join(options), "|".join(map(re.escape, options)))


class Integer:
    """A whole number that ``accepts`` takes; anything else but a whole number says only that."""

    def __init__(self, allowed: str = "a whole number", accepts: Callable[[int], bool] = lambda n: True):
        self.allowed, self._accepts = allowed, accepts

    def parse(self, value: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid("a whole number")
        if not self._accepts(value):
            raise Invalid(self.allowed)
        return value


def between(low: int, high: int) -> Integer:
    return Integer(f"a whole number {low}-{high}", lambda n: low <= n <= high)


def one_of(numbers: tuple[int, ...]) -> Integer:
    return Integer(", ".join(map(str, numbers)), lambda n: n in numbers)


class Fraction:
    allowed = "a number greater than 0 and at most 1"

    def parse(self, value: Any) -> float:
        try:
            number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        except ValueError:
            number = None
        if number is None or not 0 < number <= 1:
            raise Invalid(self.allowed)
        return number


class Boolean:
    allowed = "true or false"

    def parse(self, value: Any) -> bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise Invalid(self.allowed)
        return value


class Amount:
    """A decimal amount, 0 or more (0: not given), from a JSON number or its string form."""

    def __init__(self, allowed: str):
        self.allowed = allowed

    def parse(self, value: Any) -> Decimal:
        amount = None
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            try:
                amount = Decimal(str(value).strip())
            except InvalidOperation:
                pass
        if amount is None or not amount.is_finite() or amount < 0:
            raise Invalid(self.allowed)
        return amount


class UtcTime:
    """Empty (None: not given) or an ISO-8601 UTC time."""

    allowed = "an ISO-8601 UTC time such as 2026-12-01T11:30:00Z"

    def parse(self, value: Any) -> datetime | None:
        text = Text(self.allowed, r"(\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?(Z|\+00:00))?").parse(value)
        try:
            return datetime.fromisoformat(text) if text else None
        except ValueError:  # e.g. a 31st of November
            raise Invalid(self.allowed) from None


def _json(value: Any, kind: type, allowed: str) -> Any:
    """``value`` itself, or the JSON a ``-c`` string holds (empty: an empty ``kind``)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return kind()
    try:
        return json.loads(value)
    except json.JSONDecodeError as error:
        raise Invalid(f"{allowed} (not valid JSON: {error})") from None


def _network(text: str, allowed: str) -> ipaddress.IPv4Network:
    """An IPv4 network in its canonical form (10.0.0.0/16): no host bits, a prefix length."""
    try:
        network = ipaddress.IPv4Network(text)
    except ValueError as error:
        raise Invalid(Problem(f"{allowed} ({error})", text)) from None
    if "/" not in text or str(network) != text:
        raise Invalid(Problem(f"{allowed} (write it as {network})", text))
    return network


class Cidr:
    """A private /16 IPv4 block (RFC 1918)."""

    allowed = "a private /16 IPv4 block such as 10.0.0.0/16"
    _PRIVATE = tuple(map(ipaddress.IPv4Network, ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")))

    def parse(self, value: Any) -> str:
        network = _network(Text(self.allowed).parse(value), self.allowed)
        if network.prefixlen != 16 or not any(network.subnet_of(block) for block in self._PRIVATE):
            raise Invalid(self.allowed)
        return str(network)


class TextList:
    """A JSON list of strings, or a comma-separated string as typed with ``-c``; each item checked
    by ``item`` (a Text or a function that raises Invalid)."""

    def __init__(self, allowed: str, item: Callable[[str], str]):
        self.allowed, self._item = allowed, item

    def parse(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str) and not value.strip().startswith("["):
            value = [item.strip() for item in value.split(",") if item.strip()]
        value = _json(value, list, self.allowed)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise Invalid(self.allowed)
        problems, items = [], []
        for item in value:
            try:
                items.append(self._item(item.strip()))
            except Invalid as invalid:
                problems += invalid.problems
        if problems:
            raise Invalid(*problems)
        return tuple(items)


def cidr_list(allowed: str) -> TextList:
    """IPv4 CIDR blocks, any size, each in its canonical form."""
    return TextList(allowed, lambda item: str(_network(item, "IPv4 CIDR blocks such as 203.0.113.0/24")))


def text_list(allowed: str, pattern: str) -> TextList:
    def item(text: str) -> str:
        if not re.fullmatch(pattern, text):
            raise Invalid(Problem(allowed, text))
        return text

    return TextList(allowed, item)


# AWS's rules for tags (the Tagging user guide's "tag restrictions"), the same for every resource
# the kit tags: a key takes 1-128 characters, a value up to 256, both letters, digits, spaces and
# a few symbols; the aws: prefix, in any case, is AWS's own. trn-kit: is the kit's own, which the
# purchase handler writes on a bought block to find it again.
TAG_SYMBOLS = "_.:/=+-@"
TAG_CHARACTERS = f"letters, digits, spaces and {' '.join(TAG_SYMBOLS)}"
RESERVED_TAG_PREFIXES = {"aws:": "AWS reserves the prefix", KIT_TAG_PREFIX: "the kit's own tags"}


def _tag_problem(text: str, longest: int, what: str, reserved: Mapping[str, str]) -> str | None:
    if len(text) > longest:
        return f"{what} of at most {longest} characters"
    if not all(c in TAG_SYMBOLS or unicodedata.category(c)[0] in "LNZ" for c in text):
        return f"{what} of {TAG_CHARACTERS}"
    for prefix, why in reserved.items():
        if text.lower().startswith(prefix):
            return f"{what} not starting with {prefix} in any case ({why})"
    return None


class Tags:
    allowed = 'an object of string tag values, e.g. {"team": "ml-platform"}'

    def parse(self, value: Any) -> dict[str, str]:
        tags = _json(value, dict, self.allowed)
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise Invalid(self.allowed)
        problems = []
        for key, text in tags.items():
            if not key:
                problems.append(Problem("tag keys of 1-128 characters", key))
            elif allowed := _tag_problem(key, 128, "tag keys", RESERVED_TAG_PREFIXES):
                problems.append(Problem(allowed, key))
            if allowed := _tag_problem(text, 256, "a tag value", {"aws:": RESERVED_TAG_PREFIXES["aws:"]}):
                problems.append(Problem(allowed, text, part=f".{key}"))
        if problems:
            raise Invalid(*problems)
        return tags


class CatalogOverrides:
    """Per-entry overrides of the hardware catalog; parses to the catalog they yield."""

    allowed = (
        f"an object keyed by catalog entry ({', '.join(CATALOG)}) whose values set {', '.join(OVERRIDES)}"
    )

    def parse(self, value: Any) -> Mapping[str, InstanceSpec]:
        overrides = _json(value, dict, self.allowed)
        if not isinstance(overrides, dict) or not all(
            isinstance(v, dict) and set(v) <= set(OVERRIDES) for v in overrides.values()
        ):
            raise Invalid(self.allowed)
        unknown = sorted(set(overrides) - set(CATALOG))
        if unknown:
            raise Invalid(*(Problem(f"catalog entries {', '.join(CATALOG)}", key) for key in unknown))
        try:
            catalog = apply_overrides(overrides)
        except CatalogOverrideError as error:
            raise Invalid(Problem(error.allowed, error.value, part=f".{error.key}.{error.field}")) from None
        problems = [
            Problem(
                f"an instance type no other catalog entry has ({', '.join(others)} "
                f"{'has' if len(others) == 1 else 'have'} {spec.instance_type})",
                spec.instance_type,
                part=f".{key}.instanceType",
            )
            for key, spec in catalog.items()
            if "instanceType" in overrides.get(key, {})
            and (others := [k for k, s in catalog.items() if k != key and s.instance_type == spec.instance_type])
        ]
        if problems:
            raise Invalid(*problems)
        return catalog
