"""The Markdown pieces every section of the report builds with: a table, and the figures of a kind."""


def markdown_table(header: list, rows: list) -> list:
    for row in rows:  # a cell too many or too few shifts every value under the wrong heading
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells under {len(header)} headings {header}: {row}")
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def figures_of(figures: dict, kind: str) -> list:
    """The figures whose caption ends in ': <kind>', each with its caption."""
    lines = []
    for caption, path in figures.items():
        if caption.endswith(f": {kind}"):
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    return lines
