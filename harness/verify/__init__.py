"""``texture-nets verify``: a port run through a fixed battery and summarised as a report card.

``battery`` builds the cases (Torch7 runs, and reference-judged cases for what they do not cover),
``card`` runs them through drift and measures each against float32 Torch7's own rounding, and
``views`` / ``html_view`` render the card (text, Markdown, JSON with ``schema.json``, HTML).
"""
