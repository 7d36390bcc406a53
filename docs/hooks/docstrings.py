"""segkit's docstrings are written for reading in the source and in ``help()``: they cross
reference with Sphinx roles (``:class:`segkit.Task```) and end a line with ``::`` before
a literal block. mkdocstrings renders them as Markdown, which keeps the role's name as
text (":class:segkit.Task"). This mkdocs hook drops the role names and the second colon
from the rendered pages, leaving the code-formatted name and the code block.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj):(?=<code>)")
_LITERAL = re.compile(r"::</p>")


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    """mkdocs hook: tidy what mkdocstrings rendered from the docstrings."""
    return _LITERAL.sub(":</p>", _ROLE.sub("", html))
