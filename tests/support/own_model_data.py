"""The README's "Add your own model" section as test material: its code blocks, read from README.md, and
a small seeded churn warehouse (`orders` with the label, `customer_stats` as features over time).

The blocks are read from the README at test time, so when the README drifts the test runs what the
README now says, and the structural assertions here fail loudly if the section's shape changes.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

PROJECT_DIR = Path(__file__).resolve().parents[2]
README = PROJECT_DIR / "README.md"
SECTION_TITLE = "## Add your own model"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                    re.MULTILINE | re.DOTALL)
_PATH_IN_TEXT = re.compile(r"`(include/[\w./-]+\.(?:py|ya?ml))`")


@dataclass(frozen=True)
class CodeBlock:
    lang: str
    body: str  # dedented, as a user would copy it
    target: str | None  # the `include/...` file the prose right before the block tells the user to add


def readme_section(title: str = SECTION_TITLE, readme: Path = README) -> str:
    """The section's text up to the next heading of the same or a higher level (subsections excluded too)."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(f"\n{title}\n")
    if start < 0:
        raise AssertionError(f"{readme} has no section {title!r}")
    body = text[start + len(title) + 2:]
    end = re.search(r"^#{2,3} ", body, re.MULTILINE)
    return body[: end.start()] if end else body


def code_blocks(section: str) -> list[CodeBlock]:
    blocks, previous_end = [], 0
    for match in _FENCE.finditer(section):
        prose = section[previous_end:match.start()]
        paths = _PATH_IN_TEXT.findall(prose)
        blocks.append(CodeBlock(match["lang"], textwrap.dedent(match["body"]), paths[-1] if paths else None))
        previous_end = match.end()
    return blocks


@dataclass(frozen=True)
class OwnModelReadme:
    """The four things the section tells a user to do, verbatim."""

    land_commands: str  # bash: mkdir + cp into .local/landing/<dataset>/
    files: dict[str, str]  # "include/feature_repo/customers.py" -> text, "include/models/churn.yaml" -> text
    check_command: str  # bash: .venv/bin/airflow-mlops check


def own_model_readme() -> OwnModelReadme:
    blocks = code_blocks(readme_section())
    bash = [b.body for b in blocks if b.lang == "bash"]
    files = {b.target: b.body for b in blocks if b.lang in ("python", "yaml") and b.target}
    langs = [b.lang for b in blocks]
    assert len(bash) == 2 and len(files) == 2, f"the section's code blocks changed shape: {langs}, files {list(files)}"
    land, check = bash
    assert "landing" in land and "airflow-mlops check" in check, (land, check)
    return OwnModelReadme(land_commands=land, files=files, check_command=check)


# --- a small seeded churn warehouse ------------------------------------------------------------------

START = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ChurnData:
    orders: pd.DataFrame
    customer_stats: pd.DataFrame


def _utc_us(values: pd.Series) -> pd.Series:
    return values.astype("datetime64[us, UTC]")


def churn_tables(customers: int = 150, days: int = 21, orders: int = 2500, seed: int = 13) -> ChurnData:
    """`customer_stats`: one row per customer and day (00:00 UTC); `orders`: times inside a day, after its
    stats row, so the point-in-time join sees that day's stats (TTL 7 days in the README's view).

    `churned` depends on the customer's stats *as of the order* (orders_30d, avg_basket_30d) and on the
    order itself (basket_value, n_items) — a model using the joined features separates it well.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ids = np.arange(10_001, 10_001 + customers, dtype="int64")
    engagement = rng.gamma(2.0, 2.5, size=customers)  # latent orders per month
    spend = rng.lognormal(3.7, 0.35, size=customers)  # latent basket size
    day_index = np.repeat(np.arange(days), customers)
    cust_index = np.tile(np.arange(customers), days)
    trend = 1.0 + 0.4 * np.sin(day_index / 4.0 + cust_index)  # engagement moves over time: as-of matters
    stats = pd.DataFrame({
        "customer_id": ids[cust_index],
        "event_timestamp": _utc_us(pd.Series(pd.Timestamp(START) + pd.to_timedelta(day_index, unit="D"))),
        "orders_30d": rng.poisson(engagement[cust_index] * trend).astype("int64"),
        "avg_basket_30d": np.round(spend[cust_index] * rng.normal(1.0, 0.05, size=len(day_index)), 2),
    })

    who = rng.integers(0, customers, size=orders)
    day = rng.integers(0, days, size=orders)
    offset = rng.integers(60, 86_340, size=orders)  # seconds after the day's stats row
    stamp = pd.Timestamp(START) + pd.to_timedelta(day, unit="D") + pd.to_timedelta(offset, unit="s")
    n_items = rng.integers(1, 9, size=orders).astype("int64")
    basket = np.round(spend[who] * rng.lognormal(0.0, 0.25, size=orders) * (0.6 + 0.1 * n_items), 2)
    asof = stats.set_index(["customer_id", stats["event_timestamp"].dt.floor("D")])
    as_of = asof.loc[list(zip(ids[who], stamp.floor("D"), strict=True))]
    logit = (1.2 - 0.45 * as_of["orders_30d"].to_numpy() - 0.02 * (as_of["avg_basket_30d"].to_numpy() - 40)
             - 0.15 * (n_items - 4) + 0.01 * (basket - 40))
    churned = (rng.random(orders) < 1 / (1 + np.exp(-logit))).astype("int64")
    order_frame = pd.DataFrame({
        "customer_id": ids[who],
        "event_timestamp": _utc_us(pd.Series(stamp)),
        "basket_value": basket.astype("float64"),
        "n_items": n_items,
        "churned": churned,
    }).sort_values("event_timestamp", kind="mergesort").reset_index(drop=True)
    return ChurnData(orders=order_frame, customer_stats=stats)


def write_churn_parquet(directory: Path, data: ChurnData) -> dict[str, Path]:
    """`orders.parquet` and `customer_stats.parquet` in `directory`, the names the README's commands copy."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, frame in (("orders", data.orders), ("customer_stats", data.customer_stats)):
        written[name] = directory / f"{name}.parquet"
        frame.to_parquet(written[name], index=False)
    return written
