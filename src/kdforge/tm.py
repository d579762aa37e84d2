"""The boolean-rule tools' first home, kept for code that imports them from here
(``from kdforge.tm import PackedTM, load_rules``): they live in :mod:`kdforge.families.tm.rules`."""

from kdforge.families.tm.rules import PackedTM, export_rules, layer_rules, load_rules, model_rules

__all__ = ["PackedTM", "export_rules", "layer_rules", "load_rules", "model_rules"]
