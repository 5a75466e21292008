"""The ``lightly-derm-options`` directive: a job's option table, generated from its configuration.

``.. lightly-derm-options:: pretrain`` renders one row per option of the subcommand, from
the rows the ``--help`` text is made of (:func:`lightly_derm.cli.options.option_rows`),
so the docs cannot drift from the code.
"""

from __future__ import annotations

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class OptionsDirective(SphinxDirective):
    """Renders the option table of one ``lightly-derm`` subcommand."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        from lightly_derm.cli import COMMANDS
        from lightly_derm.cli.options import option_rows

        _, config_cls = COMMANDS[self.arguments[0]].load()
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 22 12 12 10 44",
            "",
            "   * - option",
            "     - type",
            "     - default",
            "     - demo preset",
            "     - meaning",
        ]
        for row in option_rows(config_cls):
            cells = [
                f"``{row['option']}``",
                row["type"].replace("|", r"\|"),
                f"``{row['default']}``" if row["default"] else "",
                f"``{row['demo']}``" if row["demo"] else "",
                row["help"],
            ]
            lines.append(f"   * - {cells[0]}")
            lines += [f"     - {cell}" for cell in cells[1:]]
        container = nodes.container()
        self.state.nested_parse(StringList(lines), self.content_offset, container)
        return container.children


def setup(app: Sphinx) -> dict[str, object]:
    """Registers the directive."""
    app.add_directive("lightly-derm-options", OptionsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
