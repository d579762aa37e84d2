"""The built-in families: each subpackage registers its parts and its :class:`kdforge.family.Family`
when imported (see :mod:`kdforge.family`)."""
