"""Pure compilation: (intent snapshot, topology view) -> desired state per switch.

No I/O, no clock, no randomness: the same input gives the same output, byte for
byte, which is what lets a restarted controller find nothing to change.
"""

from controller.compiler.core import DesiredSwitch, compile_all, compile_switch

__all__ = ["DesiredSwitch", "compile_all", "compile_switch"]
