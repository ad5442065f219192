"""ase-moireh: DFT-quality Hamiltonians of twisted bilayer semiconductors for ASE.

Main entry points: :class:`ase_moireh.calculator.MoireHCalculator`,
:class:`ase_moireh.block_operator.BlockOperator`, :mod:`ase_moireh.build`; conventions in
:mod:`ase_moireh.basis`.
"""

__version__ = "0.1.0"

from ase_moireh.block_operator import BlockOperator

__all__ = ["BlockOperator", "MoireHCalculator", "__version__"]


def __getattr__(name: str):
    if name == "MoireHCalculator":  # imported lazily: it pulls in torch and e3nn
        from ase_moireh.calculator import MoireHCalculator

        return MoireHCalculator
    raise AttributeError(name)
