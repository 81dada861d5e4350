"""`diffprompt report`: run folders as one self-contained HTML results page."""

from .page import format_value, json_tables, register, render_report

__all__ = ["format_value", "json_tables", "register", "render_report"]
