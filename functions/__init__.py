"""Blueprints, one module per trigger family. Bodies decode input, call ``shared``, map results."""
