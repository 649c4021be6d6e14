"""Hierarchical token data (FSW25): the Random Hierarchy Model and its parser.

``RHM`` draws the rules (compatible with the field's reference generator, see
:mod:`diffmem.grammar.rhm`), samples, enumerates and indexes data and builds a
:class:`diffmem.data.Dataset` of token sequences; ``parse`` measures validity
per level.  Masked (absorbing-state) diffusion on token sequences lives in
:mod:`diffmem.masked_diffusion`.
"""

from .parse import ParseResult, parse
from .rhm import RHM, check_params, load_rhm, parse_rhm_spec

__all__ = ["RHM", "ParseResult", "parse", "check_params", "load_rhm", "parse_rhm_spec"]
