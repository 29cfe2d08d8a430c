"""How the datasets look to a person: sample excerpts for previews, and the dataset report.

The report streams every scenario's `cot_<suffix>.jsonl` and `cod_<suffix>.jsonl` once and keeps
only sums and two small integer arrays per scenario (thought and draft tokens per CoD sample,
for the picture), so memory stays flat however large the files grow.
"""

import base64
import io
from array import array
from dataclasses import dataclass, field
from pathlib import Path

from cotgen_assets.quality import tagged_block
from cotgen_assets.samples import samples_path
from cotgen_assets.scenarios import Scenario, load_scenarios
from cotgen_assets.storage import atomic_write, data_dir
from cotgen_assets.submissions import GENERATION, SUMMARIZATION, read_jsonl, total_cost_usd

THOUGHT_COLOR = "#4C72B0"
DRAFT_COLOR = "#DD8452"


# --------------------------------------------------------------------------- previews


def excerpt(text: str | None, head: int = 90, tail: int = 45) -> str:
    """The start and the end of a long text on one line, cut at word boundaries.

    Short enough (at most head + tail + 3 characters) for the UI's preview cells.
    """
    flat = " ".join((text or "").split())
    if len(flat) <= head + tail + 3:
        return flat
    start, end = flat[:head], flat[-tail:]
    if " " in start[head // 2 :]:
        start = start[: start.rindex(" ")]
    if " " in end[: tail // 2]:
        end = end[end.index(" ") + 1 :]
    return f"{start} … {end}"


def thought_excerpt(cot: str) -> str:
    return excerpt(tagged_block(cot or "", "thought") or cot)


def draft_excerpt(cod: str, steps: int = 4) -> str:
    """The first draft steps joined by ` | ` (a draft is a few words per line)."""
    draft = tagged_block(cod or "", "draft") or cod or ""
    lines = [line.strip() for line in draft.split("\n") if line.strip()]
    shown = " | ".join(lines[:steps])
    more = f" | … (+{len(lines) - steps} steps)" if len(lines) > steps else ""
    return excerpt(shown, head=100, tail=25) + more


def preview_rows(records: list[dict], stage: str) -> tuple[list[dict], list[str]]:
    """Rows and columns of a samples preview: excerpts of the thought or draft, never the whole text.

    Few, narrow columns so the UI's table stays readable; `cotgen trace ID` shows the rest.
    """
    rows = []
    for record in records:
        row = {"id": record["id"], "question": excerpt(record["question"], 60, 25)}
        thinking = record["generation"]["usage"]["thinking_tokens"]
        if stage == GENERATION:
            row |= {"thought (excerpt)": thought_excerpt(record["cot"]), "thinking tokens": thinking}
        else:
            draft = record["summarization"]["usage"]["output_tokens"]
            row |= {
                "draft (excerpt)": draft_excerpt(record["cod"]),
                "tokens thought → draft": f"{thinking} → {draft}",
            }
        row |= {
            "predicted / reference": f"{record['predicted_answer']} / {record['answer']}",
            "correct": record["correct"],
        }
        if stage != GENERATION:
            row["agrees with CoT"] = record.get("agrees_with_cot")
        row["cost_usd"] = round(
            record["generation" if stage == GENERATION else "summarization"]["cost_usd"], 6
        )
        rows.append(row)
    columns = list(rows[0]) if rows else ["id", "question", "predicted / reference", "correct"]
    return rows, columns


# --------------------------------------------------------------------------- figures


@dataclass
class ScenarioFigures:
    """One scenario's sums over its two samples files, and what follows from them."""

    scenario: str
    cot_samples: int = 0
    cot_correct: int = 0
    cot_input_tokens: int = 0
    cot_thinking_tokens: int = 0
    cot_output_tokens: int = 0
    cot_cost_usd: float = 0.0
    cod_samples: int = 0
    cod_correct: int = 0
    cod_agreeing: int = 0
    cod_input_tokens: int = 0
    cod_thinking_tokens: int = 0
    cod_output_tokens: int = 0
    cod_cost_usd: float = 0.0
    spent_usd: float = 0.0  # every ingested request of both stages, failed and retried ones included
    thought_tokens: array = field(default_factory=lambda: array("q"))  # per CoD sample, its CoT's
    draft_tokens: array = field(default_factory=lambda: array("q"))  # per CoD sample

    def add_cot(self, record: dict) -> None:
        generation = record["generation"]
        self.cot_samples += 1
        self.cot_correct += bool(record.get("correct"))
        self.cot_input_tokens += generation["usage"]["input_tokens"]
        self.cot_thinking_tokens += generation["usage"]["thinking_tokens"]
        self.cot_output_tokens += generation["usage"]["output_tokens"]
        self.cot_cost_usd += generation["cost_usd"]

    def add_cod(self, record: dict) -> None:
        summarization = record["summarization"]
        self.cod_samples += 1
        self.cod_correct += bool(record.get("correct"))
        self.cod_agreeing += bool(record.get("agrees_with_cot"))
        self.cod_input_tokens += summarization["usage"]["input_tokens"]
        self.cod_thinking_tokens += summarization["usage"]["thinking_tokens"]
        self.cod_output_tokens += summarization["usage"]["output_tokens"]
        self.cod_cost_usd += summarization["cost_usd"]
        self.thought_tokens.append(record["generation"]["usage"]["thinking_tokens"])
        self.draft_tokens.append(summarization["usage"]["output_tokens"])

    def merge(self, other: "ScenarioFigures") -> None:
        """Add another scenario's sums (for the `all` column)."""
        for name, value in vars(other).items():
            if name != "scenario":
                setattr(self, name, getattr(self, name) + value)

    @staticmethod
    def _share(part: float, whole: float) -> float:
        return part / whole if whole else 0.0

    @property
    def cot_accuracy(self) -> float:
        return self._share(self.cot_correct, self.cot_samples)

    @property
    def cod_accuracy(self) -> float:
        return self._share(self.cod_correct, self.cod_samples)

    @property
    def answer_agreement(self) -> float:
        """Share of CoD samples whose answer matches their CoT sample's."""
        return self._share(self.cod_agreeing, self.cod_samples)

    @property
    def draft_to_thought_token_ratio(self) -> float:
        """Draft tokens per thought token over the CoD samples (as the cod_samples asset reports it)."""
        return self._share(sum(self.draft_tokens), sum(self.thought_tokens))

    @property
    def cot_cost_per_1000_usd(self) -> float:
        return 1000 * self._share(self.cot_cost_usd, self.cot_samples)

    @property
    def cod_cost_per_1000_usd(self) -> float:
        return 1000 * self._share(self.cod_cost_usd, self.cod_samples)

    @property
    def cost_usd(self) -> float:
        return self.cot_cost_usd + self.cod_cost_usd


def scenario_figures(scenario: Scenario) -> ScenarioFigures:
    """Stream the scenario's samples files once."""
    figures = ScenarioFigures(scenario.name)
    for record in read_jsonl(samples_path(GENERATION, scenario.suffix)):
        figures.add_cot(record)
    for record in read_jsonl(samples_path(SUMMARIZATION, scenario.suffix)):
        figures.add_cod(record)
    figures.spent_usd = total_cost_usd(scenario.name, GENERATION) + total_cost_usd(
        scenario.name, SUMMARIZATION
    )
    return figures


def all_figures(scenarios: dict[str, Scenario] | None = None) -> list[ScenarioFigures]:
    """Figures of every scenario in the scenarios file, in file order."""
    scenarios = load_scenarios() if scenarios is None else scenarios
    return [scenario_figures(s) for s in scenarios.values()]


def totals(figures: list[ScenarioFigures]) -> ScenarioFigures:
    total = ScenarioFigures("all")
    for item in figures:
        total.merge(item)
    return total


# (label, how to read it off the figures, format); shares of nothing read None, shown as "–"
ROWS = [
    ("CoT samples", lambda f: f.cot_samples, "{:,}"),
    ("CoT accuracy", lambda f: f.cot_accuracy if f.cot_samples else None, "{:.1%}"),
    ("CoT input tokens", lambda f: f.cot_input_tokens, "{:,}"),
    ("CoT thinking tokens", lambda f: f.cot_thinking_tokens, "{:,}"),
    ("CoT output tokens", lambda f: f.cot_output_tokens, "{:,}"),
    ("CoT cost (USD)", lambda f: f.cot_cost_usd, "${:,.4f}"),
    (
        "CoT cost per 1,000 samples (USD)",
        lambda f: f.cot_cost_per_1000_usd if f.cot_samples else None,
        "${:,.4f}",
    ),
    ("CoD samples", lambda f: f.cod_samples, "{:,}"),
    ("CoD accuracy", lambda f: f.cod_accuracy if f.cod_samples else None, "{:.1%}"),
    ("CoD input tokens", lambda f: f.cod_input_tokens, "{:,}"),
    ("CoD thinking tokens", lambda f: f.cod_thinking_tokens, "{:,}"),
    ("CoD output (draft) tokens", lambda f: f.cod_output_tokens, "{:,}"),
    ("CoD cost (USD)", lambda f: f.cod_cost_usd, "${:,.4f}"),
    (
        "CoD cost per 1,000 samples (USD)",
        lambda f: f.cod_cost_per_1000_usd if f.cod_samples else None,
        "${:,.4f}",
    ),
    (
        "CoD-to-CoT token ratio (draft / thought)",
        lambda f: f.draft_to_thought_token_ratio if sum(f.thought_tokens) else None,
        "{:.3f}",
    ),
    ("Answer agreement (CoD vs CoT)", lambda f: f.answer_agreement if f.cod_samples else None, "{:.1%}"),
    ("Spent, failed requests included (USD)", lambda f: f.spent_usd, "${:,.4f}"),
]


def markdown_table(figures: list[ScenarioFigures]) -> str:
    """One column per scenario plus `all`, one row per figure: reads well however many scenarios."""
    columns = [*figures, totals(figures)]
    lines = [
        "| | " + " | ".join(f"**{f.scenario}**" for f in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for label, value, fmt in ROWS:
        cells = (value(f) for f in columns)
        lines.append(f"| {label} | " + " | ".join("–" if v is None else fmt.format(v) for v in cells) + " |")
    return "\n".join(lines)


def numeric_totals(figures: list[ScenarioFigures]) -> dict[str, float | int]:
    """The `all` column under stable metadata keys (plotted over time by the UI)."""
    total = totals(figures)
    return {
        "num_cot_samples": total.cot_samples,
        "num_cod_samples": total.cod_samples,
        "cot_accuracy": total.cot_accuracy,
        "cod_accuracy": total.cod_accuracy,
        "input_tokens": total.cot_input_tokens + total.cod_input_tokens,
        "thinking_tokens": total.cot_thinking_tokens + total.cod_thinking_tokens,
        "output_tokens": total.cot_output_tokens + total.cod_output_tokens,
        "cot_cost_usd": total.cot_cost_usd,
        "cod_cost_usd": total.cod_cost_usd,
        "cost_usd": total.cost_usd,
        "spent_usd": total.spent_usd,
        "cot_cost_per_1000_samples_usd": total.cot_cost_per_1000_usd,
        "cod_cost_per_1000_samples_usd": total.cod_cost_per_1000_usd,
        "draft_to_thought_token_ratio": total.draft_to_thought_token_ratio,
        "answer_agreement": total.answer_agreement,
    }


def by_scenario(figures: list[ScenarioFigures]) -> dict[str, dict]:
    """Per-scenario figures as plain numbers (JSON metadata, and for scripts)."""
    return {f.scenario: {label: value(f) for label, value, _ in ROWS} for f in figures}


# --------------------------------------------------------------------------- picture


def render_picture(figures: list[ScenarioFigures]) -> bytes:
    """PNG: per scenario, thought tokens vs draft tokens per sample; beside it, cost per 1,000 samples."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure = Figure(figsize=(11, 4.6), dpi=100, layout="constrained")
    tokens, costs = figure.subplots(1, 2, width_ratios=[1.7, 1])
    names = [f.scenario for f in figures]
    total = totals(figures)
    figure.suptitle(
        f"{total.cot_samples:,} CoT and {total.cod_samples:,} CoD samples, "
        f"${total.cost_usd:,.4f} for the kept samples, ${total.spent_usd:,.4f} spent in all",
        fontsize=10,
        parse_math=False,
    )

    for index, item in enumerate(figures):
        if not item.draft_tokens:
            tokens.text(
                index,
                0.5,
                "no CoD\nsamples yet",
                ha="center",
                va="center",
                color="grey",
                transform=tokens.get_xaxis_transform(),
            )
            continue
        for offset, values, color in (
            (-0.18, item.thought_tokens, THOUGHT_COLOR),
            (0.18, item.draft_tokens, DRAFT_COLOR),
        ):
            data = [max(v, 1) for v in values]
            parts = tokens.violinplot([data], positions=[index + offset], widths=0.32, showmedians=True)
            for body in parts["bodies"]:
                body.set_facecolor(color)
                body.set_alpha(0.45)
            for key in ("cmedians", "cmins", "cmaxes", "cbars"):
                parts[key].set_color(color)
            if len(data) <= 300:  # few samples: show every one
                spread = [index + offset + 0.06 * (((i * 7919) % 13) / 6 - 1) for i in range(len(data))]
                tokens.scatter(spread, data, s=9, color=color, alpha=0.8, linewidths=0)
        tokens.text(
            index,
            1.01,
            f"n={item.cod_samples:,}, draft/thought {item.draft_to_thought_token_ratio:.2f}",
            ha="center",
            va="bottom",
            fontsize=8,
            transform=tokens.get_xaxis_transform(),
        )
    tokens.set_yscale("log")
    tokens.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    tokens.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    tokens.yaxis.set_minor_formatter(NullFormatter())
    tokens.set_xticks(range(len(names)), names)
    tokens.set_xlim(-0.6, len(names) - 0.4)
    tokens.set_ylabel("tokens per sample (log scale)")
    tokens.set_title("Thought vs draft length, per sample", pad=18)
    tokens.legend(
        handles=[
            Patch(color=THOUGHT_COLOR, alpha=0.6, label="CoT thought (thinking tokens)"),
            Patch(color=DRAFT_COLOR, alpha=0.6, label="CoD draft (output tokens)"),
        ],
        loc="best",
        fontsize=8,
        framealpha=0.85,
    )
    tokens.grid(axis="y", alpha=0.3)

    cot = [f.cot_cost_per_1000_usd for f in figures]
    cod = [f.cod_cost_per_1000_usd for f in figures]
    costs.bar(names, cot, color=THOUGHT_COLOR, alpha=0.8, label="CoT")
    costs.bar(names, cod, bottom=cot, color=DRAFT_COLOR, alpha=0.8, label="CoD")
    for index, item in enumerate(figures):
        if not item.cot_samples:
            label = "no samples"
        else:
            cod_accuracy = f"{item.cod_accuracy:.0%}" if item.cod_samples else "–"
            label = f"${cot[index] + cod[index]:,.2f}\naccuracy {item.cot_accuracy:.0%} / {cod_accuracy}"
        costs.text(
            index, cot[index] + cod[index], label, ha="center", va="bottom", fontsize=8, parse_math=False
        )
    costs.set_ylabel("USD per 1,000 samples")
    costs.set_title("Cost per 1,000 samples (CoT + CoD)", pad=18)
    costs.margins(y=0.3)
    costs.legend(fontsize=8, loc="upper left")
    costs.grid(axis="y", alpha=0.3)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def picture_path() -> Path:
    return data_dir() / "report" / "dataset_report.png"


def markdown_image(png: bytes, alt: str = "dataset report") -> str:
    """Markdown the Dagster UI renders inline (its sanitizer allows `data:` image sources)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


@dataclass
class Report:
    figures: list[ScenarioFigures]
    table: str
    picture: Path
    png: bytes


def build_report(scenarios: dict[str, Scenario] | None = None) -> Report:
    """Figures of every scenario, the markdown table, and the picture written under the data dir."""
    figures = all_figures(scenarios)
    png = render_picture(figures)
    path = picture_path()
    with atomic_write(path) as handle:
        handle.write(png)
    table = markdown_table(figures)
    with atomic_write(path.with_suffix(".md"), "w") as handle:
        handle.write(f"# Dataset report\n\n{table}\n\n![dataset report]({path.name})\n")
    return Report(figures, table, path, png)
