"""What each prediction model is and can do, declared as data.

Config validation, the dashboard and the cascades read this table; the model classes point at their entry. It
imports no model implementation, so validating a config never loads torch or a trained artefact.
"""

from __future__ import annotations

from dataclasses import dataclass

from recommender_system.domain import Page, Phase

ALL_PAGES = frozenset(Page)
NON_CATEGORY_PAGES = frozenset({Page.HOMEPAGE, Page.PRODUCT_DETAIL, Page.CART})
ANCHORED_PAGES = frozenset({Page.PRODUCT_DETAIL, Page.CART})


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    description: str
    level: int
    trainable: bool
    retrieval: frozenset[Page]
    scoring: frozenset[Page]

    def can(self, phase: Phase, page: Page) -> bool:
        pages = self.retrieval if phase is Phase.RETRIEVAL else self.scoring
        return page in pages


SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "dummy",
            "Dummy",
            "In-stock variants in a fixed catalogue order. The last resort of every cascade; always ready.",
            0,
            False,
            NON_CATEGORY_PAGES,
            ALL_PAGES,
        ),
        ModelSpec(
            "selection",
            "Selection",
            "A random sample of in-stock variants, each drawn with probability proportional to its "
            "recommendation weight.",
            1,
            False,
            NON_CATEGORY_PAGES,
            ALL_PAGES,
        ),
        ModelSpec(
            "popularity",
            "Popularity",
            "Variants by units ordered, recent orders optionally weighing more. Ready once any order exists.",
            2,
            False,
            NON_CATEGORY_PAGES,
            ALL_PAGES,
        ),
        ModelSpec(
            "latest",
            "Latest",
            "The newest variants first.",
            2,
            False,
            NON_CATEGORY_PAGES,
            ALL_PAGES,
        ),
        ModelSpec(
            "cooccurrence",
            "Co-occurrence",
            "Variants viewed, carted or bought together with the shopper's items in the same sessions.",
            3,
            True,
            NON_CATEGORY_PAGES,
            ALL_PAGES,
        ),
        ModelSpec(
            "similarity",
            "Similarity",
            "Content similarity of attributes and price: the nearest neighbours of the viewed or carted variants.",
            3,
            True,
            ANCHORED_PAGES,
            ANCHORED_PAGES,
        ),
        ModelSpec(
            "gru4rec",
            "GRU4Rec",
            "A session-based recurrent network (Hidasi et al.) scoring variants from the session's views.",
            4,
            True,
            frozenset(),
            ALL_PAGES,
        ),
        ModelSpec(
            "als",
            "ALS",
            "Implicit-feedback matrix factorisation (alternating least squares) of weighted shopper events.",
            5,
            True,
            frozenset({Page.HOMEPAGE}),
            ALL_PAGES,
        ),
        ModelSpec(
            "ease",
            "EASE",
            "A closed-form item-item linear autoencoder (Steck 2019) over weighted shopper events.",
            5,
            True,
            frozenset({Page.HOMEPAGE}),
            ALL_PAGES,
        ),
    )
}

MODEL_NAMES: tuple[str, ...] = tuple(SPECS)
TRAINABLE_MODEL_NAMES: tuple[str, ...] = tuple(name for name, spec in SPECS.items() if spec.trainable)
ECOSELLER_MODEL_NAMES: tuple[str, ...] = ("dummy", "selection", "popularity", "similarity", "gru4rec", "ease")
